"""The `shapes` built-in: the same rows every time, every colour, shape and topic, answers that match the pixels,
held-out pictures unlike any training picture, and a picture cache that is reused and never holds a half file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import cli_env
from tunestack.data.builtin import BUILTIN_TASKS, builtin_rows, list_datasets
from tunestack.data.builtin import shapes
from tunestack.data.builtin.shapes import (
    BACKGROUNDS, COLOURS, KINDS, NUMBERS, ROWS, SIZE, Scene, Shape, image_dir, shapes_held_out_rows, shapes_questions,
    shapes_rows, write_image,
)

NAMED = {rgb: name for name, rgb in {**BACKGROUNDS, **COLOURS}.items()}


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """The training rows, generated once into a cache of their own, and that cache's HF_HOME."""
    home = tmp_path_factory.mktemp("shapes_hf_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(home))
        start = time.perf_counter()
        rows = shapes_rows()
        seconds = time.perf_counter() - start
    return rows, home, seconds


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """An empty HF_HOME for one test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "hf_home"


def picture(row: dict) -> Path:
    return Path(row["messages"][0]["content"][0]["image"])


def question(row: dict) -> str:
    return row["messages"][0]["content"][1]["text"]


def answer(row: dict) -> str:
    return row["messages"][1]["content"]


def blobs(path: Path) -> tuple[str, list[dict]]:
    """What a picture shows, read from its pixels alone: the background's name (the corner pixel) and each
    connected region of another colour, with its colour's name, bounding box, centre and kind."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    assert image.size == (SIZE, SIZE)
    pixels = image.load()
    background = pixels[0, 0]
    todo = {(x, y) for x in range(SIZE) for y in range(SIZE) if pixels[x, y] != background}
    found = []
    while todo:
        stack, region = [todo.pop()], []
        while stack:
            x, y = stack.pop()
            region.append((x, y))
            for near in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if near in todo:
                    todo.remove(near)
                    stack.append(near)
        xs, ys = [x for x, _ in region], [y for _, y in region]
        box = (min(xs), min(ys), max(xs), max(ys))
        fill = len(region) / ((box[2] - box[0] + 1) * (box[3] - box[1] + 1))
        kind = "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle"
        assert len({pixels[p] for p in region}) == 1, f"{path}: a region of more than one colour"
        found.append({"colour": NAMED[pixels[region[0]]], "box": box, "kind": kind,
                      "centre": ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)})
    return NAMED[background], found


def test_rows_are_the_same_every_time_in_the_canonical_message_shape(training, monkeypatch):
    rows, home, seconds = training
    assert len(rows) == ROWS and seconds < 30
    monkeypatch.setenv("HF_HOME", str(home))
    assert shapes_rows() == rows
    for row in rows[:5]:
        assert row["messages"][0]["role"] == "user" and row["messages"][1]["role"] == "assistant"
        assert [part["type"] for part in row["messages"][0]["content"]] == ["image", "text"]
        assert isinstance(answer(row), str)
        assert picture(row).is_absolute() and picture(row).parent == image_dir()
    assert image_dir() == home / "tunestack" / "datasets" / "shapes" / "v1"


def test_every_colour_shape_number_position_and_background_appears(training):
    rows = training[0]
    answers = Counter(answer(row) for row in rows)
    assert {f"{c.capitalize()}." for c in COLOURS} <= set(answers)
    assert {f"A {kind}." for kind in KINDS} <= set(answers)
    assert {f"{n}." for n in NUMBERS} | {"Left.", "Right.", "Top.", "Bottom."} <= set(answers)
    questions = shapes_questions(ROWS, shapes.SEED)
    assert {q.scene.background for q in questions} == set(BACKGROUNDS)
    assert Counter(q.topic for q in questions) == {topic: ROWS // 5 for topic in shapes.TOPICS}
    assert all(len(a) <= 45 for a in answers)


def test_answers_match_what_the_pixels_show(training):
    """Each answer checked against the picture alone; and the generator's record of each shape against its pixels."""
    rows = training[0]
    for row, q in zip(rows, shapes_questions(ROWS, shapes.SEED)):
        background, found = blobs(picture(row))
        assert background == q.scene.background and all(b["colour"] != background for b in found), row
        kinds = [b["kind"] for b in found]
        if q.topic == "colour":
            assert [f"{b['colour'].capitalize()}." for b in found] == [answer(row)], row
        elif q.topic == "shape":
            assert [f"A {kind}." for kind in kinds] == [answer(row)], row
        elif q.topic == "count":
            assert f"{NUMBERS[len(found) - 1]}." == answer(row), row
        elif q.topic == "position":
            named = next(kind for kind in KINDS if f" {kind} " in question(row))
            (x, y), = [b["centre"] for b in found if b["kind"] == named]
            side = ("Left." if x < SIZE / 2 else "Right.") if "left" in question(row) else \
                ("Top." if y < SIZE / 2 else "Bottom.")
            assert len(found) == 2 and side == answer(row), row
        else:
            (b,) = found
            article = "An" if b["colour"][0] in "aeiou" else "A"
            assert answer(row) == f"{article} {b['colour']} {b['kind']} on a {background} background.", row
        boxes = sorted((s.x - s.r, s.y - s.r, s.x + s.r, s.y + s.r) for s in q.scene.shapes)
        assert sorted(b["box"] for b in found) == boxes, row  # each shape's pixels are centred on its record


def test_held_out_pictures_are_never_training_pictures(training, monkeypatch):
    rows, home, _ = training
    monkeypatch.setenv("HF_HOME", str(home))
    trained = {hashlib.sha256(picture(row).read_bytes()).digest() for row in rows}
    for seed in (shapes.HELD_OUT_SEED, shapes.SEED):  # even the training seed, held out, gives new pictures
        held_out = shapes_held_out_rows(300, seed)
        assert held_out == shapes_held_out_rows(300, seed) and len(held_out) == 300
        pictures = {hashlib.sha256(picture(row).read_bytes()).digest() for row in held_out}
        assert len(pictures) > 250 and not pictures & trained
    parities = {(s.x + s.y) % 2 for q in shapes_questions(300, 5, held_out=True) for s in q.scene.shapes}
    assert parities == {1}


def test_the_built_in_is_listed_and_loads_as_sft_rows(training, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(training[1]))
    listed = {d["name"]: d for d in list_datasets()}
    assert (listed["shapes"]["task"], listed["shapes"]["rows"]) == ("sft", ROWS) and BUILTIN_TASKS["shapes"] == ("sft",)
    assert [name for name, d in listed.items() if d["images"]] == ["shapes"]
    located = builtin_rows("shapes", "sft")
    assert located[0] == ("shapes, row 1", training[0][0]) and len(located) == ROWS


def test_cached_pictures_are_reused(own_cache, monkeypatch):
    first = shapes_rows(40, seed=7)
    stamps = {picture(row): picture(row).stat().st_mtime_ns for row in first}
    monkeypatch.setattr(shapes, "draw", lambda scene: pytest.fail("a cached picture was drawn again"))
    assert shapes_rows(40, seed=7) == first
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_a_damaged_picture_is_drawn_again(own_cache):
    rows = shapes_rows(10, seed=3)
    whole = {picture(row): picture(row).read_bytes() for row in rows}
    truncated, empty = picture(rows[0]), picture(rows[1])
    truncated.write_bytes(whole[truncated][: len(whole[truncated]) // 2])
    empty.write_bytes(b"")
    assert shapes_rows(10, seed=3) == rows
    assert {path: path.read_bytes() for path in whole} == whole


def test_a_writer_killed_midway_leaves_no_picture(own_cache, monkeypatch):
    scene = Scene("white", (Shape("circle", "red", 30, 30, 10),))

    class Interrupted:
        def save(self, path, format):
            Path(path).write_bytes(b"\x89PNG\r\n\x1a\n half")
            raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "draw", lambda scene: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        write_image(scene)
    assert list(image_dir().iterdir()) == []


def test_partial_files_of_killed_writers_are_never_read_and_cleared_later(own_cache):
    """A writer killed outright (kill -9) leaves its hidden partial file; it is never taken for the picture, and the
    next run removes it once it is clearly abandoned, leaving a writer that may still be at work alone."""
    rows = shapes_rows(5, seed=11)
    folder = image_dir()
    name = picture(rows[0]).name
    picture(rows[0]).unlink()
    stale, fresh = folder / f".{name}.partial-999-dead", folder / f".{name}.partial-998-busy"
    for partial in (stale, fresh):
        partial.write_bytes(b"\x89PNG\r\n\x1a\n half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert shapes_rows(5, seed=11) == rows
    assert not stale.exists() and fresh.exists()
    assert picture(rows[0]).read_bytes() != fresh.read_bytes()


def test_listing_the_built_ins_imports_no_imaging_code():
    code = "import sys, tunestack.data; tunestack.data.list_datasets(); print('PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env())
    assert result.stdout.strip() == "False"
