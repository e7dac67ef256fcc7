"""Videos for the Qwen2-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) without torchvision: frames sampled through PyAV
at --fps (at most --max_frames), patches built by the image processor and grouped in time (two identical frames give
exactly a picture's patches), video rows in every shape, the batch masked to the answer with the video tokens marked,
LoRA training through the real CLI, and `tunestack infer --video` and `serve` with `video_url` parts answering as
`generate` does."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from helpers import cli, write_jsonl
from server_helpers import multimodal_client
from tiny_vlms import (greedy_tokens, save_mp4, save_tiny_llava, save_tiny_qwen2_5_vl, save_tiny_qwen2_vl,
                       save_tiny_qwen3_vl)

pytest.importorskip("av", reason="videos are decoded through PyAV: pip install 'tunestack[media]'")

RAINBOW = [(230, 20, 20), (20, 200, 40), (30, 40, 230), (240, 230, 20), (230, 20, 230), (20, 230, 230),
           (120, 120, 120), (10, 10, 10)]
"""Eight frames, one colour each: 2 seconds at 4 frames per second."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {"rainbow": save_mp4(root / "rainbow.mp4", RAINBOW), "red": save_mp4(root / "red.mp4", [RAINBOW[0]] * 4),
            "blue": save_mp4(root / "blue.mp4", [RAINBOW[2]] * 4)}


def colour_index(frame) -> int:
    """Which RAINBOW colour the frame's centre shows (MPEG-4 moves colours a little)."""
    return int(np.argmin([np.abs(frame[16, 16].astype(int) - colour).sum() for colour in RAINBOW]))


def test_frames_are_sampled_evenly_at_the_asked_rate(clips, tmp_path):
    from tunestack.media import MediaError, load_video

    two = load_video(str(clips["rainbow"]), "row 1", fps=2.0)
    assert two.frames.shape == (4, 32, 32, 3) and two.fps == pytest.approx(2.0)
    assert [colour_index(f) for f in two.frames] == [0, 2, 4, 6]
    capped = load_video(str(clips["rainbow"]), "row 1", fps=4.0, max_frames=3)
    assert len(capped) == 3 and capped.fps == pytest.approx(1.5)
    assert len(load_video(str(clips["rainbow"]), "row 1", fps=100.0)) == 8  # never more than the video has
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(MediaError, match=r"^row 2: .*broken.mp4 is not a readable video"):
        load_video(str(tmp_path / "broken.mp4"), "row 2")


@pytest.mark.parametrize("version", ["2", "2.5", "3"])
def test_a_videos_patches_are_its_frames_patches_grouped_in_time(version, tmp_path):
    """Two identical frames are the picture (an image repeats its frame in time); a third frame is padded with
    itself, so the video's second time step is that frame's picture."""
    from PIL import Image

    from tunestack.media import VideoFrames
    from tunestack.model.vision import load_processor, video_inputs

    processor = load_processor(save_tiny_qwen2_vl(tmp_path / "model", version=version))
    first, third = np.full((40, 40, 3), RAINBOW[0], np.uint8), np.full((40, 40, 3), RAINBOW[2], np.uint8)
    first[:10, :10] = third[:10, :10] = 255
    video = VideoFrames(np.stack([first, first, third]), fps=2.0)
    out = processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], return_tensors="pt",
                    **video_inputs(processor, [video]))
    pictures = processor(text=["<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|>"
                               "<|vision_end|>"], images=[[Image.fromarray(first), Image.fromarray(third)]],
                         return_tensors="pt")
    assert out["video_grid_thw"].tolist() == [[2, 2, 2]] and pictures["image_grid_thw"].tolist() == [[1, 2, 2]] * 2
    assert torch.equal(out["pixel_values_videos"], pictures["pixel_values"])
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (out["input_ids"] == video_token).sum() == 2  # 2 x 2 x 2 patches, merged 2 x 2
    assert out["mm_token_type_ids"][out["input_ids"] == video_token].tolist() == [2, 2]
    if version == "2.5":  # its positions read the seconds each time step spans
        assert out["second_per_grid_ts"].tolist() == [1.0]
    if version == "3":  # each time step stamped with the mean time of its frames (0 and 0.5 s; 1 s and its pad)
        assert processor.tokenizer.decode(out["input_ids"][0]) == (
            "<0.2 seconds><|vision_start|><|video_pad|><|vision_end|>"
            "<1.0 seconds><|vision_start|><|video_pad|><|vision_end|>")


@pytest.fixture(scope="module")
def video_data(clips):
    root = clips["red"].parent
    rows = []
    for name in ("red", "blue"):
        rows.append({"messages": [{"role": "user", "content": [{"type": "video", "video": f"{name}.mp4"},
                                                               {"type": "text", "text": "What colour?"}]},
                                  {"role": "assistant", "content": f"{name.capitalize()}."}]})
        rows.append({"messages": [{"role": "user", "content": "<video>Which colour is it?"},
                                  {"role": "assistant", "content": f"It is {name}."}], "videos": [f"{name}.mp4"]})
    rows.append({"messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}]})
    return write_jsonl(root / "videos.jsonl", rows * 2)


def test_video_rows_and_their_errors(clips, tmp_path):
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.errors import DataError

    answer = {"role": "assistant", "content": "Red."}
    for i, row in enumerate([
            {"messages": [{"role": "user", "content": [{"type": "video", "video": str(clips["red"])},
                                                       {"type": "text", "text": "Colour?"}]}, answer]},
            {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clips["red"])}},
                                                       {"type": "text", "text": "Colour?"}]}, answer]},
            {"messages": [{"role": "user", "content": "<video>Colour?"}, answer], "videos": [str(clips["red"])]}]):
        got = list(load_datasets(DataArgs(dataset=[str(write_jsonl(tmp_path / f"v{i}.jsonl", [row]))])).train)
        assert got == [{"messages": [{"role": "user", "content": "<video>Colour?"}, answer], "images": [],
                        "audios": [], "videos": [str(clips["red"])], "objects": None}]
    missing = {"messages": [{"role": "user", "content": "Colour?"}, answer], "videos": [str(clips["red"])]}
    with pytest.raises(DataError, match=r"missing.jsonl, line 1: 1 video\(s\) but 0 <video> placeholder\(s\)"):
        load_datasets(DataArgs(dataset=[str(write_jsonl(tmp_path / "missing.jsonl", [missing]))]))


def test_the_batch_masks_video_tokens_and_trains_on_the_answer(video_data, tmp_path):
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.data.tokenize import IGNORE_INDEX
    from tunestack.data.vision import MediaCollator, encode_media_rows
    from tunestack.model.vision import load_processor

    processor = load_processor(save_tiny_qwen2_vl(tmp_path / "model"))
    rows = list(load_datasets(DataArgs(dataset=[str(video_data)])).train)[:5]
    batch = MediaCollator(processor, max_length=512)(encode_media_rows(rows, processor, "data"))
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    # 4 frames of 32 px at 2 fps over 1 s: 2 frames, one time step of 2 x 2 patches, one merged token per video
    assert batch["video_grid_thw"].tolist() == [[1, 2, 2]] * 4
    for i, row in enumerate(rows):
        kept = batch["attention_mask"][i].bool()
        ids, labels = batch["input_ids"][i][kept], batch["labels"][i][kept]
        assert int((ids == video_token).sum()) == len(row["videos"])
        assert (labels[ids == video_token] == IGNORE_INDEX).all()
        assert (batch["mm_token_type_ids"][i][kept][ids == video_token] == 2).all()
        answer = processor.tokenizer.decode([t for t in labels.tolist() if t != IGNORE_INDEX])
        assert answer == row["messages"][-1]["content"] + "<|im_end|>\n"


@pytest.mark.parametrize("builder", [save_tiny_qwen2_vl, save_tiny_qwen2_5_vl, save_tiny_qwen3_vl],
                         ids=["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
def test_sft_on_videos_then_the_run_answers_a_video_as_generate_does(builder, video_data, clips, tmp_path):
    import json

    from peft import PeftModel
    from transformers import AutoModelForMultimodalLM

    from tunestack.media import load_video
    from tunestack.model.vision import load_processor, video_inputs

    base = builder(tmp_path / "model")
    run = tmp_path / "run"
    result = cli("sft", "--model", str(base), "--dataset", str(video_data), "--output_dir", str(run), "--max_steps",
                 "6", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--logging_steps", "1",
                 "--dtype", "fp32", "--fps", "4")
    assert "examples with 0 images, 8 videos" in result.stderr
    losses = [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2])
    saved = json.loads((run / "final" / "video_preprocessor_config.json").read_text())
    assert saved["fps"] == 4.0  # the run's sampling, which infer and serve of the run use

    answer = cli("infer", "--model", str(run), "--video", str(clips["rainbow"]), "--prompt", "What colour?",
                 "--max_new_tokens", "6", "--dtype", "fp32").stdout.strip()
    model = PeftModel.from_pretrained(AutoModelForMultimodalLM.from_pretrained(base, dtype=torch.float32),
                                      run / "final").eval()
    processor = load_processor(run / "final")
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                       {"type": "text", "text": "What colour?"}]}],
                                         add_generation_prompt=True, tokenize=False)
    video = load_video(str(clips["rainbow"]), "here", fps=4.0)
    assert len(video) == 8
    inputs = processor(text=[text], return_tensors="pt", add_special_tokens=False, **video_inputs(processor, [video]))
    tokens = greedy_tokens(model, inputs, processor.tokenizer.eos_token_id, 6)
    assert answer == processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def test_the_server_answers_video_url_parts_as_generate_does(clips, tmp_path):
    from transformers import AutoModelForMultimodalLM

    from tunestack.media import load_video
    from tunestack.model.vision import load_processor, video_inputs

    path = save_tiny_qwen2_vl(tmp_path / "model", seed=5)
    url = "data:video/mp4;base64," + base64.b64encode(clips["rainbow"].read_bytes()).decode()
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "Colours?"}]
    with multimodal_client(path) as client:
        reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                               max_tokens=8, temperature=0)
        text_only = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                   max_tokens=4, temperature=0)
    processor = load_processor(path)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                         {"type": "text", "text": "Colours?"}]}],
                                           add_generation_prompt=True, tokenize=False)
    video = load_video(str(clips["rainbow"]), "here")  # 2 frames a second, the default: 4 frames
    inputs = processor(text=[prompt], return_tensors="pt", add_special_tokens=False,
                       **video_inputs(processor, [video]))
    model = AutoModelForMultimodalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokens = greedy_tokens(model, inputs, processor.tokenizer.eos_token_id, 8)
    assert reply.choices[0].message.content == processor.tokenizer.decode(tokens, skip_special_tokens=True)
    assert reply.usage.prompt_tokens == inputs["input_ids"].shape[1]
    assert text_only.choices[0].finish_reason in ("stop", "length")


def test_a_model_without_a_video_path_refuses_video_data(video_data, tmp_path):
    result = cli("sft", "--model", str(save_tiny_llava(tmp_path / "llava")), "--dataset", str(video_data),
                 "--output_dir", str(tmp_path / "run"), "--max_steps", "1", check=False)
    assert result.returncode != 0 and "LlavaProcessor cannot read videos" in result.stderr
