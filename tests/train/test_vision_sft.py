"""`tunestack sft` on tiny vision-language models (LLaVA, LLaVA-NeXT, Idefics3, Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
Gemma 3) through the real CLI: the mask is the processor's own tokens with loss on the answer only, the loss falls, the
adapter covers the language model and the aligner but not the vision tower, freezing flags hold, a text model given
images says so before loading, and --packing packs the text-only rows without changing what any row computes."""

import json

import pytest
import torch

from helpers import cli, write_jsonl
from tiny_idefics3 import save_tiny_idefics3
from tiny_vlms import (image, qwen2_vl_inputs, save_png, save_tiny_gemma3, save_tiny_llava, save_tiny_llava_next,
                       save_tiny_qwen2_5_vl, save_tiny_qwen2_vl, save_tiny_qwen3_vl)

BUILDERS = {"llava": save_tiny_llava, "idefics3": save_tiny_idefics3, "qwen2-vl": save_tiny_qwen2_vl,
            "qwen2.5-vl": save_tiny_qwen2_5_vl, "qwen3-vl": save_tiny_qwen3_vl, "llava-next": save_tiny_llava_next,
            "gemma3": save_tiny_gemma3}

COLOURS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 230), "yellow": (240, 230, 20)}


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    rows = []
    for name, rgb in COLOURS.items():
        save_png(image(rgb, (40, 32)), root / f"{name}.png")
        rows.append({"messages": [{"role": "user", "content": [{"type": "image", "image": f"{name}.png"},
                                                               {"type": "text", "text": "What colour is it?"}]},
                                  {"role": "assistant", "content": f"{name.capitalize()}."}]})
    rows.append({"messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}]})
    return write_jsonl(root / "colours.jsonl", rows * 2)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request, tmp_path_factory):
    return request.param, BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


def test_the_batch_is_the_processors_own_tokens_with_loss_on_the_answer_only(vlm, colour_data):
    from transformers import AutoProcessor

    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.data.tokenize import IGNORE_INDEX
    from tunestack.data.vision import MediaCollator, encode_media_rows, part_messages
    from tunestack.media import load_image
    from tunestack.model.vision import load_processor

    name, path = vlm
    processor = load_processor(path)
    rows = list(load_datasets(DataArgs(dataset=[str(colour_data)])).train)[:5]
    batch = MediaCollator(processor, max_length=512)(encode_media_rows(rows, processor, "data"))
    if name.startswith("qwen"):  # no AutoProcessor without torchvision: image tokens expanded by hand
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        tokenizer, image_processor = AutoTokenizer.from_pretrained(path), Qwen2VLImageProcessorPil.from_pretrained(path)

        def reference_ids(messages, images, prompt):
            return qwen2_vl_inputs(tokenizer, image_processor, messages, images or [],
                                   add_generation_prompt=prompt)["input_ids"][0].tolist()
    else:
        reference = AutoProcessor.from_pretrained(path)
        tokenizer = reference.tokenizer

        def reference_ids(messages, images, prompt):
            text = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            return list(reference(text=[text], images=[images] if images else None,
                                  add_special_tokens=False)["input_ids"][0])
    for i, row in enumerate(rows):
        messages = part_messages(row["messages"])
        images = [load_image(ref, "here") for ref in row["images"]] or None
        ids = reference_ids(messages, images, False)
        prompt_ids = reference_ids(messages[:-1], images, True)
        kept = batch["attention_mask"][i].bool()
        assert batch["input_ids"][i][kept].tolist() == ids
        labels = batch["labels"][i][kept].tolist()
        assert labels[:len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)  # prompt and image tokens
        answer = tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
        assert answer == row["messages"][-1]["content"] + "<|im_end|>\n"
    assert "pixel_values" in batch


def test_lora_trains_the_language_model_and_aligner_and_leaves_the_tower(vlm, colour_data, tmp_path):
    from safetensors.torch import load_file

    name, path = vlm
    run = tmp_path / "run"
    cli("sft", "--model", str(path), "--dataset", str(colour_data), "--output_dir", str(run), "--max_steps", "8",
        "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--logging_steps", "1", "--dtype", "fp32")
    losses = [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])
    adapter = load_file(run / "final" / "adapter_model.safetensors")
    aligner = {"llava": "multi_modal_projector", "idefics3": "connector", "qwen2-vl": "visual.merger",
               "qwen2.5-vl": "visual.merger", "qwen3-vl": "visual.merger", "llava-next": "multi_modal_projector",
               "gemma3": "multi_modal_projector"}[name]
    assert any(".lora_A." in k and "language_model" in k or "text_model" in k for k in adapter)
    assert any(aligner in k for k in adapter)  # trained in full, saved with the adapter
    tower = ("vision_tower", "vision_model", "visual.blocks", "visual.patch_embed")
    assert not any(t in k for k in adapter for t in tower)
    if name == "qwen3-vl":  # the DeepStack mergers feed the language model's middle layers: aligner too
        assert any("deepstack_merger_list" in k for k in adapter)
    assert (run / "final" / "processor_config.json").is_file()


def test_full_fine_tuning_with_the_language_model_frozen_leaves_it_exactly(colour_data, tmp_path):
    from transformers import AutoModelForImageTextToText

    path = BUILDERS["llava"](tmp_path / "llava")
    run = tmp_path / "run"
    cli("sft", "--model", str(path), "--dataset", str(colour_data), "--output_dir", str(run), "--max_steps", "3",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--tuner", "full", "--freeze_language",
        "--freeze_vision", "false", "--dtype", "fp32")
    before = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(run / "final", dtype=torch.float32).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("vision_tower" in k or "multi_modal_projector" in k for k in changed), sorted(changed)
    assert any("vision_tower" in k for k in changed) and any("multi_modal_projector" in k for k in changed)


def test_a_text_model_given_images_says_so_before_loading(tiny_model_dir, colour_data, tmp_path):
    result = cli("sft", "--model", str(tiny_model_dir), "--dataset", str(colour_data), "--output_dir",
                 str(tmp_path / "run"), "--max_steps", "1", check=False)
    assert result.returncode != 0
    assert "has images, but --model" in result.stderr and "is a text-only model" in result.stderr
    assert "Loading weights" not in result.stderr and not (tmp_path / "run").exists()


def test_unreadable_images_stop_the_run_or_are_skipped_and_counted(tmp_path, colour_data):
    path = BUILDERS["llava"](tmp_path / "llava")
    rows = [json.loads(line) for line in colour_data.read_text().splitlines()]
    rows[1]["messages"][0]["content"][0]["image"] = str(tmp_path / "gone.png")
    data = write_jsonl(colour_data.parent / "one_gone.jsonl", rows)
    args = ["sft", "--model", str(path), "--dataset", str(data), "--max_steps", "1", "--dtype", "fp32"]
    failed = cli(*args, "--output_dir", str(tmp_path / "a"), check=False)
    assert failed.returncode != 0 and f"{data}, line 2: image file" in failed.stderr
    assert "Loading weights" not in failed.stderr
    assert "gone.png not found" in failed.stderr and "--on_bad_media skip" in failed.stderr
    skipped = cli(*args, "--output_dir", str(tmp_path / "b"), "--on_bad_media", "skip")
    assert "1 rows skipped for unreadable media" in skipped.stderr
    assert json.loads((tmp_path / "b" / "run.json").read_text())["status"] == "completed"


def test_max_pixels_sets_the_budget_a_run_keeps_and_fixed_size_processors_refuse_it(colour_data, tmp_path):
    from tunestack.model.vision import load_processor

    path = save_tiny_qwen2_vl(tmp_path / "qwen2-vl")
    picture = image((20, 160, 40), (60, 56))

    def image_tokens(processor):
        return int(processor.image_processor(images=[picture], return_tensors="pt")["image_grid_thw"].prod()) // 4

    assert image_tokens(load_processor(path)) == 4 and image_tokens(load_processor(path, max_pixels=28 * 28)) == 1
    run = tmp_path / "run"
    cli("sft", "--model", str(path), "--dataset", str(colour_data), "--output_dir", str(run), "--max_steps", "1",
        "--max_pixels", "784")
    saved = json.loads((run / "final" / "preprocessor_config.json").read_text())
    assert saved["size"]["longest_edge"] == 784 and image_tokens(load_processor(run / "final")) == 1  # infer: here
    llava = BUILDERS["llava"](tmp_path / "llava")
    refused = cli("sft", "--model", str(llava), "--dataset", str(colour_data), "--output_dir", str(tmp_path / "no"),
                  "--max_pixels", "784", check=False)
    assert refused.returncode != 0 and "resizes images to its own sizes, not to a pixel budget" in refused.stderr


@pytest.mark.parametrize("name", ["llava", "idefics3", "llava-next", "gemma3"])
def test_packed_text_rows_beside_image_rows_compute_what_each_row_computes_alone(name, tmp_path):
    """--packing on a vision-language model: text-only rows share packed rows, image rows stay one per row, and a
    batch mixing both gives every target the log-probability it has when its row is batched alone."""
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.data.tokenize import IGNORE_INDEX
    from tunestack.data.vision import MediaCollator, encode_media_rows, pack_text_rows
    from tunestack.model.tuners import set_use_cache
    from tunestack.model.vision import load_processor
    from transformers import AutoModelForImageTextToText

    path = BUILDERS[name](tmp_path / name)
    processor = load_processor(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    set_use_cache(model, False)  # as training has it: with a cache, restarting positions are not read as seams
    save_png(image((230, 20, 20), (40, 32)), tmp_path / "red.png")
    with_image = {"messages": [{"role": "user", "content": [{"type": "image", "image": "red.png"},
                                                            {"type": "text", "text": "What colour is it?"}]},
                               {"role": "assistant", "content": "Red."}]}
    texts = [{"messages": [{"role": "user", "content": "Say " + "hello " * n}, {"role": "assistant",
                                                                               "content": "Hello. " * n}]}
             for n in (1, 2, 3, 5, 8)]
    data = write_jsonl(tmp_path / "mixed.jsonl", [with_image, *texts])
    rows = encode_media_rows(list(load_datasets(DataArgs(dataset=[str(data)])).train), processor, "data")
    packed, report = pack_text_rows(rows, 96, "data")
    assert report == {"text_rows": 5, "packed_rows": sum("position_ids" in r for r in packed)}
    assert report["packed_rows"] < 5 and sum(r["images"] != [] for r in packed if "images" in r) == 1

    def target_logprobs(batch):
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits.float()
        picked = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
        return sorted(round(v, 4) for v in picked[labels[:, 1:] != IGNORE_INDEX].tolist())

    collate = MediaCollator(processor, max_length=96)
    batch = collate(packed)
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape
    alone = [v for row in rows for v in target_logprobs(collate([row]))]
    assert target_logprobs(batch) == pytest.approx(sorted(alone), abs=2e-3)
    # the same rows unpacked in one padded batch would not match if packing leaked attention across examples
    assert len(alone) == sum(1 for row in rows for t in row["labels"][1:] if t != IGNORE_INDEX)


def test_sft_packs_text_rows_on_a_vlm_and_a_3d_position_model_refuses_packing(colour_data, tmp_path):
    run = tmp_path / "run"
    result = cli("sft", "--model", str(save_tiny_llava(tmp_path / "llava")), "--dataset", str(colour_data),
                 "--output_dir", str(run), "--max_steps", "2", "--per_device_train_batch_size", "4", "--packing",
                 "--max_length", "128", "--dtype", "fp32")
    assert "text-only examples packed into" in result.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["data"]["media"]["packing"] == {"text_rows": 2, "packed_rows": 1}
    refused = cli("sft", "--model", str(save_tiny_qwen2_vl(tmp_path / "qwen2-vl")), "--dataset", str(colour_data),
                  "--output_dir", str(tmp_path / "q"), "--max_steps", "2", "--packing", check=False)
    assert refused.returncode != 0 and "3-D rotary positions (M-RoPE)" in refused.stderr
