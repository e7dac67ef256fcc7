"""Grounding rows (ms-swift's `objects` with `<ref-object>` / `<bbox>` placeholders): checked against the row when
the data loads, each fault named with its row, and written in the model family's own box convention when encoded."""

from __future__ import annotations

import json

import pytest

from helpers import cli, write_jsonl
from tiny_vlms import image, save_png, save_tiny_llava, save_tiny_qwen2_vl
from tunestack.config import DataArgs
from tunestack.data import load_datasets
from tunestack.data.grounding import convention_of, render_objects
from tunestack.errors import DataError


def grounding_row(objects: dict, user: str = "<image>Where is <ref-object>?", answer: str = "<bbox>") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "images": ["pic.png"], "objects": objects}


@pytest.fixture
def picture(tmp_path):
    return save_png(image((30, 40, 200), (200, 100)), tmp_path / "pic.png")  # 200 wide, 100 high


def loaded(tmp_path, rows) -> list[dict]:
    return list(load_datasets(DataArgs(dataset=[str(write_jsonl(tmp_path / "ground.jsonl", rows))])).train)


def test_boxes_are_written_in_each_family_s_convention(tmp_path, picture):
    row, = loaded(tmp_path, [grounding_row({"ref": ["cat"], "bbox": [[50, 10, 100, 90]]})])  # real pixels
    assert json.loads(row["objects"])["bbox_type"] == "real"

    def rendered(convention, image_processor=None):
        messages = render_objects(row["messages"], row["objects"], row["images"], convention, "here", image_processor)
        return messages[0]["content"], messages[1]["content"]

    assert rendered("qwen2_vl") == ("<image>Where is <|object_ref_start|>cat<|object_ref_end|>?",
                                    "<|box_start|>(250,100),(500,900)<|box_end|>")
    assert rendered("norm1000") == ("<image>Where is cat?", "[250, 100, 500, 900]")

    from transformers import Qwen2VLImageProcessorPil

    # Qwen2.5-VL: pixels of the picture as the processor resizes it (200x100 -> 196x112 at 28 px a merged patch)
    resizer = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=1000 * 1000, patch_size=14, merge_size=2)
    assert rendered("absolute", resizer) == ("<image>Where is cat?", "[49, 11, 98, 101]")


def test_normalised_boxes_and_several_objects_on_several_images(tmp_path, picture):
    save_png(image((200, 30, 40), (50, 50)), tmp_path / "second.png")
    row = {"messages": [{"role": "user", "content": "<image><image>Find <ref-object> and <ref-object>."},
                        {"role": "assistant", "content": "<bbox> and <bbox>"}],
           "images": ["pic.png", "second.png"],
           "objects": {"ref": ["a", "b"], "bbox": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 1, 1]], "bbox_type": "norm1",
                       "image_id": [0, 1]}}
    row, = loaded(tmp_path, [row])
    messages = render_objects(row["messages"], row["objects"], row["images"], "norm1000", "here")
    assert messages[0]["content"] == "<image><image>Find a and b."
    assert messages[1]["content"] == "[100, 200, 300, 400] and [500, 500, 1000, 1000]"


def test_convention_follows_the_processor_s_family(tmp_path):
    from tiny_vlms import save_tiny_qwen2_5_vl
    from tunestack.model.vision import load_processor

    assert convention_of(load_processor(save_tiny_llava(tmp_path / "llava"))) == "norm1000"
    assert convention_of(load_processor(save_tiny_qwen2_vl(tmp_path / "qwen2-vl"))) == "qwen2_vl"
    assert convention_of(load_processor(save_tiny_qwen2_5_vl(tmp_path / "qwen2.5-vl"))) == "absolute"


@pytest.mark.parametrize("objects, user, answer, problem", [
    ({"ref": ["cat", "dog"], "bbox": [[1, 2, 3, 4]]}, None, None,
     r"2 objects.ref value\(s\) but 1 <ref-object> placeholder\(s\)"),
    ({"ref": ["cat"], "bbox": [[1, 2, 3, 4]]}, None, "<bbox> <bbox>", r"1 objects.bbox value\(s\) but 2 <bbox>"),
    ({"ref": ["cat"], "bbox": [[1, 2, 3]]}, None, None, r"objects.bbox\[0\] is .*; expected four numbers"),
    ({"ref": ["cat"], "bbox": [[30, 2, 10, 4]]}, None, None, r"objects.bbox\[0\] is .*; expected x1 <= x2"),
    ({"ref": ["cat"], "bbox": [[0.1, 0.2, 1.5, 0.4]], "bbox_type": "norm1"}, None, None,
     r"objects.bbox\[0\] is .*; norm1 boxes lie within 0 to 1"),
    ({"ref": ["cat"], "bbox": [[1, 2, 3, 4]], "bbox_type": "percent"}, None, None,
     r"objects.bbox_type is 'percent'; expected one of real, norm1, norm1000"),
    ({"ref": ["cat"], "bbox": [[1, 2, 3, 4]], "image_id": [1]}, None, None,
     r"objects.image_id\[0\] is 1; the row has 1 image"),
    ("boxes", None, None, r"objects is .*; expected \{\"ref\""),
])
def test_a_bad_objects_column_is_named_with_its_row(tmp_path, picture, objects, user, answer, problem):
    row = grounding_row(objects, **{k: v for k, v in (("user", user), ("answer", answer)) if v is not None})
    with pytest.raises(DataError, match=r"ground.jsonl, line 1: " + problem):
        loaded(tmp_path, [row])


def test_objects_need_an_image(tmp_path):
    row = {"messages": [{"role": "user", "content": "Where is <ref-object>?"},
                        {"role": "assistant", "content": "<bbox>"}],
           "objects": {"ref": ["cat"], "bbox": [[1, 2, 3, 4]]}}
    with pytest.raises(DataError, match=r"line 1: objects box regions of the row's images, and the row has none"):
        loaded(tmp_path, [row])


def test_sft_on_qwen2_vl_trains_on_its_box_tokens(tmp_path, picture):
    from tunestack.data.tokenize import IGNORE_INDEX
    from tunestack.data.vision import MediaCollator, encode_media_rows
    from tunestack.model.vision import load_processor

    model = save_tiny_qwen2_vl(tmp_path / "qwen2-vl")
    data = write_jsonl(tmp_path / "ground.jsonl", [grounding_row({"ref": ["cat"], "bbox": [[50, 10, 100, 90]]})] * 4)
    processor = load_processor(model)
    rows = encode_media_rows(list(load_datasets(DataArgs(dataset=[str(data)])).train), processor, "data")
    batch = MediaCollator(processor, 512)(rows[:1])
    labels = [t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX]
    assert processor.tokenizer.decode(labels) == "<|box_start|>(250,100),(500,900)<|box_end|><|im_end|>\n"
    assert "<|object_ref_start|>cat<|object_ref_end|>" in rows[0]["text"]
    run = tmp_path / "run"
    cli("sft", "--model", str(model), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--dtype", "fp32")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
