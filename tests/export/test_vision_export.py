"""`tunestack export` of a vision-language LoRA run: the merged folder loads with AutoModelForImageTextToText and
AutoProcessor, and gives the logits of the base with the adapter (projector trained in full) on an image prompt;
quantizing one is refused in one line."""

import json

import torch

from helpers import cli, write_jsonl
from tiny_vlms import image, save_png, save_tiny_llava


def train_and_export(tmp_path, base, picture, answer: str, *flags: str):
    """(run, export) folders: `base` fine-tuned for 2 steps on `picture` answered with `answer`, then exported; the
    export's perplexity is the run's."""
    save_png(picture, tmp_path / "picture.png")
    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "image": "picture.png"},
                                                       {"type": "text", "text": "Colour?"}]},
                          {"role": "assistant", "content": answer}]}] * 4
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    run, out = tmp_path / "run", tmp_path / "export"
    cli("sft", "--model", str(base), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--dtype", "fp32", *flags)
    cli("export", "--model", str(run), "--output_dir", str(out))
    assert json.loads((out / "export.json").read_text())["perplexity"]["change_pct"] < 1e-3
    return run, out

def assert_export_is_the_run(out, base, run, inputs) -> None:
    """The merged export's logits on `inputs` equal the base with the run's adapter (and its fully trained
    projector), which differ from the untrained base's."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    merged = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    reference = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32),
                                          str(run / "final")).eval()
    with torch.no_grad():
        got, want = merged(**inputs).logits, reference(**inputs).logits
        untrained = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)(**inputs).logits
    assert (got - want).abs().max() < 1e-4
    assert (want - untrained).abs().max() > 1e-3  # the adapter and projector changed the answer


def test_a_merged_vision_export_loads_and_matches_base_plus_adapter(tmp_path):
    from transformers import AutoProcessor

    base = save_tiny_llava(tmp_path / "llava")
    run, out = train_and_export(tmp_path, base, image((200, 30, 40), (20, 20)), "Red.")

    processor = AutoProcessor.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[[image((200, 30, 40), (20, 20))]], return_tensors="pt",
                       add_special_tokens=False)
    assert_export_is_the_run(out, base, run, inputs)

    refused = cli("export", "--model", str(run), "--output_dir", str(tmp_path / "q"), "--quant", "int8", check=False)
    assert refused.returncode != 0 and "is a vision-language model" in refused.stderr


def test_a_qwen2_vl_export_loads_with_its_class_and_image_processor_and_matches_the_run(tmp_path):
    """Qwen2-VL's processor needs torchvision for its video half; the export still holds everything an image
    prompt needs (tokenizer, image processor with the run's pixel budget, chat template), and its logits on a
    hand-built image prompt (3-D positions, merged patches) are the run's."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from tiny_vlms import qwen2_vl_inputs, save_tiny_qwen2_vl
    from tunestack.model.vision import load_processor

    base = save_tiny_qwen2_vl(tmp_path / "qwen2-vl")
    picture = image((30, 40, 200), (56, 56))
    run, out = train_and_export(tmp_path, base, picture, "Blue.", "--max_pixels", "784")

    tokenizer, image_processor = AutoTokenizer.from_pretrained(out), AutoImageProcessor.from_pretrained(out)
    assert image_processor.size["longest_edge"] == 784  # the run's budget travels with the export
    assert load_processor(out, False).image_processor.size["longest_edge"] == 784
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    inputs = qwen2_vl_inputs(tokenizer, image_processor, messages, [picture])
    assert int((inputs["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == 1
    assert_export_is_the_run(out, base, run, inputs)
