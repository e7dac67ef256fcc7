"""What the plain `tunestack sft --model smollm2-135m-vision --dataset shapes` teaches the embedded vision default.

Runs the command as a user types it (the data set's recommended settings: the vision tower and projector train in
full, the language model stays frozen), then scores with plain transformers, independently of tunestack's code:
  - held-out colour questions (pictures no training row shows), greedy, exact answer;
  - greedy answers to a fixed set of text prompts before and after: they must not change.
Prints a table and writes JSON. About 9 minutes on an idle 2-core CPU with AMX (bf16); about 20 in fp32 on an
AVX2-only CPU, which is why this is a benchmark and not part of the test suite.

Usage:
    python benchmarks/vision_shapes.py [--output vision_shapes.json] [SFT FLAGS ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TEXT_PROMPTS = ["What is the capital of France?", "Name three fruits.", "Say hello in Spanish."]


def generate(model, processor, messages: list[dict], image=None, max_new_tokens: int = 8) -> str:
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[[image]] if image is not None else None, return_tensors="pt",
                       add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def load(folder):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return (AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval(),
            AutoProcessor.from_pretrained(folder))


def text_answers(folder) -> list[str]:
    model, processor = load(folder)
    return [generate(model, processor, [{"role": "user", "content": [{"type": "text", "text": p}]}])
            for p in TEXT_PROMPTS]


def colour_answers(folder, rows) -> list[tuple[str, str]]:
    from PIL import Image

    model, processor = load(folder)
    out = []
    for row in rows:
        image, question = row["messages"][0]["content"]
        messages = [{"role": "user", "content": [{"type": "image"}, question]}]
        answer = generate(model, processor, messages, Image.open(image["image"]).convert("RGB"), 6)
        out.append((row["messages"][1]["content"], answer))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="vision_shapes.json")
    args, sft_flags = parser.parse_known_args()

    from tunestack.data.builtin.shapes import shapes_held_out_rows, shapes_rows
    from tunestack.hub.vision_default import vision_model_dir
    from tunestack.model.precision import dtype_name, resolve_dtype

    def colour(rows):
        return [r for r in rows if r["messages"][0]["content"][1]["text"].startswith("What colour")]

    before = text_answers(vision_model_dir())
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        started = time.time()
        subprocess.run([sys.executable, "-m", "tunestack", "sft", "--model", "smollm2-135m-vision", "--dataset",
                        "shapes", "--output_dir", str(run), *sft_flags], check=True)
        minutes = (time.time() - started) / 60
        after = text_answers(run / "final")
        scores = {}
        for name, rows in (("held-out colour", colour(shapes_held_out_rows())), ("training colour",
                                                                               colour(shapes_rows())[:60])):
            pairs = colour_answers(run / "final", rows)
            right = sum(want.lower().rstrip(".") == got.lower().rstrip(".") for want, got in pairs)
            scores[name] = {"right": right, "asked": len(pairs), "wrong": [p for p in pairs if
                                                                          p[0].lower() != p[1].lower()][:10]}
    print(f"\n{dtype_name(resolve_dtype('auto'))}, sft {minutes:.1f} min")
    for name, s in scores.items():
        print(f"{name:<18} {s['right']:>3}/{s['asked']:<3} {100 * s['right'] / s['asked']:.0f}%")
    print(f"text answers unchanged: {after == before}")
    Path(args.output).write_text(json.dumps({"precision": dtype_name(resolve_dtype("auto")), "sft_minutes": minutes,
                                             "scores": scores, "text_before": before, "text_after": after},
                                            indent=2))


if __name__ == "__main__":
    main()
