"""Grounding rows: objects named in the text and boxed in the row's images, written the way each model family was
trained to read and write boxes.

A row carries its objects as ms-swift does: `<ref-object>` and `<bbox>` placeholders in the messages, and an
`objects` column `{"ref": [...], "bbox": [[x1, y1, x2, y2], ...], "bbox_type": "real" | "norm1" | "norm1000",
"image_id": [...]}`. The i-th `<ref-object>` is `ref[i]`, the i-th `<bbox>` is `bbox[i]` on image `image_id[i]`
(default 0). `real` boxes are pixels of the image as stored, `norm1` fractions of its width and height, `norm1000`
thousandths. Loading checks the column against the row (`parse_objects`); encoding, once the model is known, writes
every placeholder in the family's convention (`render_objects`):

- Qwen2-VL: `<|object_ref_start|>cat<|object_ref_end|>` and `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` in
  thousandths of the image.
- Qwen2.5-VL: the name as it is and `[x1, y1, x2, y2]` in pixels of the image as its processor resizes it.
- Every other family (Qwen3-VL among them): the name as it is and `[x1, y1, x2, y2]` in thousandths.
"""

from __future__ import annotations

import json

from tunestack.data.readers import describe
from tunestack.errors import DataError

REF_PLACEHOLDER, BOX_PLACEHOLDER = "<ref-object>", "<bbox>"
BBOX_TYPES = {"real": None, "norm1": 1.0, "norm1000": 1000.0}
"""How a box's numbers are given, and the scale of the normalised ones."""


def parse_objects(value, messages: list[dict], images: list[str], where: str) -> str | None:
    """The row's `objects` checked against its placeholders and images, as JSON text for the canonical row (None
    when the row has none)."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise DataError(f'{where}: objects is {describe(value)}; expected {{"ref": [...], "bbox": [[x1, y1, x2, y2], '
                        '...], "bbox_type": "real"}}')
    refs, boxes = value.get("ref") or [], value.get("bbox") or []
    kind = value.get("bbox_type") or "real"
    if kind not in BBOX_TYPES:
        raise DataError(f"{where}: objects.bbox_type is {kind!r}; expected one of {', '.join(BBOX_TYPES)}")
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise DataError(f"{where}: objects.ref is {describe(refs)}; expected a list of names")
    if not isinstance(boxes, list):
        raise DataError(f"{where}: objects.bbox is {describe(boxes)}; expected a list of [x1, y1, x2, y2] boxes")
    image_ids = value.get("image_id")
    image_ids = [0] * len(boxes) if image_ids in (None, []) else image_ids
    if not images:
        raise DataError(f"{where}: objects box regions of the row's images, and the row has none")
    if not isinstance(image_ids, list) or len(image_ids) != len(boxes):
        raise DataError(f"{where}: objects.image_id is {describe(image_ids)}; expected one image index per box")
    scale = BBOX_TYPES[kind]
    for i, (box, image) in enumerate(zip(boxes, image_ids)):
        at = f"{where}: objects.bbox[{i}]"
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            raise DataError(f"{at} is {describe(box)}; expected four numbers [x1, y1, x2, y2]")
        if not (box[0] <= box[2] and box[1] <= box[3] and min(box) >= 0):
            raise DataError(f"{at} is {box}; expected x1 <= x2 and y1 <= y2, none negative")
        if scale is not None and max(box) > scale:
            raise DataError(f"{at} is {box}; {kind} boxes lie within 0 to {scale:g}")
        if not (isinstance(image, int) and 0 <= image < len(images)):
            raise DataError(f"{where}: objects.image_id[{i}] is {image!r}; the row has {len(images)} image(s)")
    for placeholder, items, name in ((REF_PLACEHOLDER, refs, "ref"), (BOX_PLACEHOLDER, boxes, "bbox")):
        placed = sum(m["content"].count(placeholder) for m in messages)
        if placed != len(items):
            raise DataError(f"{where}: {len(items)} objects.{name} value(s) but {placed} {placeholder} "
                            "placeholder(s) in the messages; each needs one placeholder where it appears")
    return json.dumps({"ref": refs, "bbox": boxes, "bbox_type": kind, "image_id": image_ids})


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def convention_of(processor) -> str:
    """The box convention of the model family whose processor this is (see the module's docstring)."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    if "Qwen2_5_VLProcessor" in names:
        return "absolute"
    if "Qwen2VLProcessor" in names:
        return "qwen2_vl"
    return "norm1000"


def render_objects(messages: list[dict], objects: str | None, images: list[str], convention: str, where: str,
                   image_processor=None) -> list[dict]:
    """`messages` with every `<ref-object>` and `<bbox>` written out in `convention`; `image_processor` (for the
    absolute convention) gives the size the model sees each image at."""
    if not objects:
        return messages
    from tunestack.media import load_image

    found = json.loads(objects)
    sizes: dict[int, tuple[int, int]] = {}

    def size(index: int) -> tuple[int, int]:
        if index not in sizes:
            sizes[index] = load_image(images[index], where).size
        return sizes[index]

    def fractions(i: int) -> list[float]:
        box, scale = found["bbox"][i], BBOX_TYPES[found["bbox_type"]]
        if scale is not None:
            return [v / scale for v in box]
        width, height = size(found["image_id"][i])
        return [min(box[0] / width, 1.0), min(box[1] / height, 1.0), min(box[2] / width, 1.0),
                min(box[3] / height, 1.0)]

    def box_text(i: int) -> str:
        x1, y1, x2, y2 = fractions(i)
        if convention == "absolute":
            height, width = _resized(size(found["image_id"][i]), image_processor)
            x1, y1, x2, y2 = (round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))
            return f"[{x1}, {y1}, {x2}, {y2}]"
        x1, y1, x2, y2 = (round(v * 1000) for v in (x1, y1, x2, y2))
        if convention == "qwen2_vl":
            return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
        return f"[{x1}, {y1}, {x2}, {y2}]"

    def ref_text(i: int) -> str:
        name = found["ref"][i]
        return f"<|object_ref_start|>{name}<|object_ref_end|>" if convention == "qwen2_vl" else name

    counters = {REF_PLACEHOLDER: 0, BOX_PLACEHOLDER: 0}
    writers = {REF_PLACEHOLDER: ref_text, BOX_PLACEHOLDER: box_text}
    out = []
    for message in messages:
        content = message["content"]
        for placeholder, write in writers.items():
            pieces = content.split(placeholder)
            content = pieces[0]
            for piece in pieces[1:]:
                content += write(counters[placeholder]) + piece
                counters[placeholder] += 1
        out.append({**message, "content": content})
    return out


def _resized(size: tuple[int, int], image_processor) -> tuple[int, int]:
    """(height, width) of a (width, height) picture as a Qwen2-VL-family image processor resizes it: to multiples of
    its patch times merge size, within its pixel budget."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    width, height = size
    budget = image_processor.size
    factor = image_processor.patch_size * image_processor.merge_size
    return smart_resize(height, width, factor=factor, min_pixels=budget["shortest_edge"],
                        max_pixels=budget["longest_edge"])
