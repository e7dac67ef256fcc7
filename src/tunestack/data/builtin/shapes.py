"""The `shapes` built-in: short questions about generated pictures of coloured circles, squares and triangles, for
vision-language fine-tuning, with images written once into the cache as PNG files that rows name by path.

Every picture is a plain background with one to three shapes, and every answer is short and exact ("Red.",
"A circle.", "Two.", "Left.", "A red circle on a white background."), so replies can be scored by exact match.
The background is white, black or grey and no shape has the background's colour. Shapes never touch.

Held-out pictures never coincide with training pictures: every shape is drawn inside a square centred on its
(x, y), so the pixels give away each centre; training pictures put every centre where x + y is even, held-out
pictures where it is odd. Any seed of `shapes_held_out_rows` is therefore safe to evaluate on.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROWS = 1000
HELD_OUT_ROWS = 200
SEED = 20240611
HELD_OUT_SEED = 20240612
SIZE = 64
"""Width and height of every picture, in pixels: what the vision tower of `smollm2-135m-vision` sees."""
VERSION = "v1"
"""The cache folder's name under `datasets/shapes/`; a change to the drawing needs a new one."""

COLOURS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (245, 210, 20),
    "orange": (245, 130, 20), "purple": (130, 50, 170), "black": (0, 0, 0), "white": (255, 255, 255),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}
KINDS = ("circle", "square", "triangle")
TOPICS = ("colour", "shape", "count", "position", "caption")
"""Row i asks about TOPICS[i % 5], so every topic has a fifth of the rows."""
NUMBERS = ("One", "Two", "Three")
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND\xaeB`\x82"
_STALE_SECONDS = 60  # a partial file this old belongs to a killed writer


@dataclass(frozen=True)
class Shape:
    """One shape, drawn inside the square of half-width `r` centred on (`x`, `y`)."""

    kind: str
    colour: str
    x: int
    y: int
    r: int


@dataclass(frozen=True)
class Scene:
    """What one picture shows."""

    background: str
    shapes: tuple[Shape, ...]

    @property
    def file_name(self) -> str:
        """The picture's file name, which spells out the scene: `white_red-circle-30-34-12.png`."""
        return "_".join([self.background] + [f"{s.colour}-{s.kind}-{s.x}-{s.y}-{s.r}" for s in self.shapes]) + ".png"


@dataclass(frozen=True)
class Question:
    """A question about a scene, with its exact answer and the topic it belongs to."""

    scene: Scene
    topic: str
    question: str
    answer: str


def shapes_rows(n: int = ROWS, seed: int = SEED) -> list[dict]:
    """The training rows: `n` questions from `seed`, as messages naming their picture by absolute path."""
    return _rows(shapes_questions(n, seed))


def shapes_held_out_rows(n: int = HELD_OUT_ROWS, seed: int = HELD_OUT_SEED) -> list[dict]:
    """Rows for evaluation, in the same shape, on pictures that no training row shows (for any seed)."""
    return _rows(shapes_questions(n, seed, held_out=True))


def shapes_questions(n: int, seed: int, held_out: bool = False) -> list[Question]:
    """`n` questions with their scenes, the same for the same arguments; held out or training pictures."""
    rng = random.Random(seed)
    return [_question(TOPICS[i % len(TOPICS)], rng, int(held_out)) for i in range(n)]


def _question(topic: str, rng: random.Random, parity: int) -> Question:
    """A question on `topic` about a new scene; the shapes' colours are drawn first, then a background unlike them."""
    if topic == "count":
        half = SIZE // 2  # one shape in each of one to three quarters of the picture
        cells = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], rng.randint(1, 3))
        shapes = tuple(_shape(rng.choice(KINDS), cx * half, cy * half, half, half, rng.randint(5, 9), rng, parity)
                       for cx, cy in cells)
        question, answer = "How many shapes are there?", f"{NUMBERS[len(shapes) - 1]}."
    elif topic == "position":
        shapes, question, answer = _position(rng, parity)
    else:
        shapes = (_shape(rng.choice(KINDS), 0, 0, SIZE, SIZE, rng.randint(9, 14), rng, parity),)
    background = rng.choice([name for name in BACKGROUNDS if name not in {s.colour for s in shapes}])
    if topic in ("colour", "shape", "caption"):
        question, answer = _about(topic, shapes[0], background)
    return Question(Scene(background, shapes), topic, question, answer)


def _about(topic: str, shape: Shape, background: str) -> tuple[str, str]:
    """The question and answer on `topic` about a picture of one shape."""
    if topic == "colour":
        return "What colour is the shape?", f"{shape.colour.capitalize()}."
    if topic == "shape":
        return "What shape is this?", f"A {shape.kind}."
    article = "An" if shape.colour[0] in "aeiou" else "A"
    return "Describe the image.", f"{article} {shape.colour} {shape.kind} on a {background} background."


def _position(rng: random.Random, parity: int) -> tuple[tuple[Shape, ...], str, str]:
    """Two different shapes in opposite halves (left and right, or top and bottom); the question names one."""
    kinds, across, half = rng.sample(KINDS, 2), rng.random() < 0.5, SIZE // 2
    boxes = [(0, 0, half, SIZE), (half, 0, half, SIZE)] if across else [(0, 0, SIZE, half), (0, half, SIZE, half)]
    shapes = tuple(_shape(kind, *box, rng.randint(6, 10), rng, parity) for kind, box in zip(kinds, boxes))
    asked = rng.randrange(2)
    if across:
        return shapes, f"Is the {kinds[asked]} on the left or the right?", ("Left.", "Right.")[asked]
    return shapes, f"Is the {kinds[asked]} at the top or the bottom?", ("Top.", "Bottom.")[asked]


def _shape(kind: str, left: int, top: int, width: int, height: int, r: int, rng: random.Random, parity: int) -> Shape:
    """A shape of any colour and half-width `r`, at least 2 pixels inside the box (left, top, width, height), its
    centre's x + y of the given parity."""
    x = rng.randint(left + r + 2, left + width - r - 3)
    y = rng.randint(top + r + 2, top + height - r - 3)
    if (x + y) % 2 != parity:
        y += 1 if y < top + height - r - 3 else -1
    return Shape(kind, rng.choice(sorted(COLOURS)), x, y, r)


def draw(scene: Scene):
    """The picture of `scene` as a PIL image (RGB, SIZE x SIZE, no anti-aliasing: every pixel has a named colour)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[scene.background])
    pen = ImageDraw.Draw(image)
    for s in scene.shapes:
        fill, box = COLOURS[s.colour], (s.x - s.r, s.y - s.r, s.x + s.r, s.y + s.r)
        if s.kind == "circle":
            pen.ellipse(box, fill=fill)
        elif s.kind == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(s.x, s.y - s.r), (s.x + s.r, s.y + s.r), (s.x - s.r, s.y + s.r)], fill=fill)
    return image


def image_dir() -> Path:
    """Where the pictures are cached: `$HF_HOME/tunestack/datasets/shapes/<VERSION>/`."""
    from tunestack.hub.cache import cache_dir

    return cache_dir() / "datasets" / "shapes" / VERSION


def write_image(scene: Scene, folder: Path | None = None) -> Path:
    """The cached picture of `scene`, drawn on first use. A complete file is reused as it is; anything else under
    its name (there should be nothing: files are written whole, then renamed) is drawn again."""
    path = (folder or image_dir()) / scene.file_name
    if _complete_png(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        draw(scene).save(partial, format="PNG")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _complete_png(path: Path) -> bool:
    """Whether `path` holds a whole PNG file: the signature first and the IEND chunk last."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return data.startswith(_PNG_START) and data.endswith(_PNG_END)


def _rows(questions: list[Question]) -> list[dict]:
    """Message rows for `questions`, writing the pictures that are not cached yet."""
    folder = image_dir()
    _clear_stale_partials(folder)
    rows = []
    for q in questions:
        image = {"type": "image", "image": str(write_image(q.scene, folder).absolute())}
        user = {"role": "user", "content": [image, {"type": "text", "text": q.question}]}
        rows.append({"messages": [user, {"role": "assistant", "content": q.answer}]})
    return rows


def _clear_stale_partials(folder: Path) -> None:
    """Remove the partial files of writers killed before their rename (never those of a writer still at work)."""
    for partial in folder.glob(".*.partial-*") if folder.is_dir() else []:
        try:
            if time.time() - partial.stat().st_mtime > _STALE_SECONDS:
                partial.unlink()
        except OSError:  # another process removed or renamed it first
            pass
