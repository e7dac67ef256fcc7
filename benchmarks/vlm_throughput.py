"""Images per second of the embedded vision-language default, training and serving, beside plain transformers.

What runs, on smollm2-135m-vision and the built-in `shapes` pictures (64 px, 65 image tokens each), in the precision
`--dtype auto` picks here (bf16 on CPUs with AMX or AVX-512 BF16, fp32 otherwise):
  - training: `tunestack sft --model smollm2-135m-vision --dataset shapes --tuner full --freeze_language
    --freeze_vision false` (the vision tower and projector train, the language model is frozen) for `--steps` steps
    of `--batch` rows, in a subprocess; beside it, a plain transformers loop doing the same in this process
    (AutoProcessor batches, the same trainable parameters, AdamW at the same rate, autocast in the same
    precision). Steady-state images/s counts the steps after the first `--skip` ones: for tunestack from the
    step times in its events.jsonl, for the loop from its own clock.
  - serving: `tunestack serve` in a subprocess, clients sending held-out shapes questions with the picture as a
    base64 data URL through the official openai client (`--max_tokens` greedy tokens each), 1 and 8 clients at
    once for `--window` seconds; beside it, `model.generate` on the same questions one after another.

Usage:
    python benchmarks/vlm_throughput.py                 # a few minutes on an idle 2-core CPU
    python benchmarks/vlm_throughput.py --steps 6 --window 10 --output /tmp/vlm.json
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODEL = "smollm2-135m-vision"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip", type=int, default=3, help="warm-up steps left out of the steady state")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--max_tokens", type=int, default=8)
    parser.add_argument("--output", default="vlm_throughput.json")
    args = parser.parse_args()

    from tunestack.model.precision import dtype_name, resolve_dtype
    from tunestack.plan.device import cpu_name

    dtype = resolve_dtype("auto")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        rows.append(("training", "tunestack sft", tunestack_training(args, Path(scratch) / "run")))
    rows.append(("training", "transformers loop", transformers_training(args, dtype)))
    for clients in (1, 8):
        rows.append((f"serving, {clients} client{'s' * (clients > 1)}", "tunestack serve",
                     serving(args, clients)))
    rows.append(("serving, sequential", "model.generate", sequential_generate(args, dtype)))

    print(f"\n{cpu_name()}, {dtype_name(dtype)}")
    print(f"{'what':<22} {'who':<20} {'images/s':>9}")
    for what, who, value in rows:
        print(f"{what:<22} {who:<20} {value:>9.2f}")
    Path(args.output).write_text(json.dumps({"precision": dtype_name(dtype), "cpu": cpu_name(),
                                             "rows": [{"what": w, "who": who, "images_per_s": v}
                                                      for w, who, v in rows]}, indent=2))
    print(f"written: {args.output}")


def tunestack_training(args, run: Path) -> float:
    subprocess.run([sys.executable, "-m", "tunestack", "sft", "--model", MODEL, "--dataset", "shapes",
                    "--tuner", "full", "--freeze_language", "--freeze_vision", "false", "--max_steps",
                    str(args.steps), "--per_device_train_batch_size", str(args.batch), "--learning_rate", "1e-3",
                    "--save_steps", "100000", "--output_dir", str(run)], check=True, stderr=subprocess.DEVNULL)
    times = {e["step"]: e["time"] for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
             if e.get("phase") == "train" and e.get("kind") == "progress"}
    steps = sorted(s for s in times if s >= args.skip)
    return (steps[-1] - steps[0]) * args.batch / (times[steps[-1]] - times[steps[0]])


def _model(dtype):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tunestack.hub.vision_default import vision_model_dir

    folder = vision_model_dir()
    weights = torch.float32 if dtype == torch.bfloat16 else dtype
    return AutoModelForImageTextToText.from_pretrained(folder, dtype=weights), AutoProcessor.from_pretrained(folder)


def transformers_training(args, dtype) -> float:
    import torch
    from PIL import Image

    from tunestack.data.builtin.shapes import shapes_rows

    model, processor = _model(dtype)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("vision_tower" in name or "multi_modal_projector" in name)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = shapes_rows()
    processor.tokenizer.padding_side = "right"
    started = None
    for step in range(args.steps):
        if step == args.skip:
            started = time.perf_counter()
        batch = data[step * args.batch:(step + 1) * args.batch]
        texts, images = [], []
        for row in batch:
            user, answer = row["messages"]
            messages = [{"role": "user", "content": [{"type": "image"}, user["content"][1]]},
                        {"role": "assistant", "content": [{"type": "text", "text": answer["content"]}]}]
            texts.append(processor.apply_chat_template(messages, tokenize=False))
            images.append([Image.open(user["content"][0]["image"]).convert("RGB")])
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (args.steps - args.skip) * args.batch / (time.perf_counter() - started)


def _questions(n: int) -> list[tuple[str, str]]:
    from tunestack.data.builtin.shapes import shapes_held_out_rows

    out = []
    for row in shapes_held_out_rows()[:n]:
        image, text = row["messages"][0]["content"]
        out.append((image["image"], text["text"]))
    return out


def serving(args, clients: int) -> float:
    import socket

    from openai import OpenAI

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tunestack", "serve", "--model", MODEL, "--port", str(port)],
                              stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
    questions = _questions(64)
    encoded = [(f"data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}", q) for p, q in questions]
    try:
        deadline = time.time() + 300
        while True:
            try:
                client.models.list()
                break
            except Exception:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("tunestack serve did not come up") from None
                time.sleep(1)
        ask(client, *encoded[0], args.max_tokens)  # warm-up
        done = [0] * clients
        end = time.time() + args.window

        def drive(index: int) -> None:
            k = index
            while time.time() < end:
                ask(client, *encoded[k % len(encoded)], args.max_tokens)
                done[index] += 1
                k += clients

        started = time.time()
        threads = [threading.Thread(target=drive, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) / (time.time() - started)
    finally:
        server.terminate()
        server.wait(timeout=60)


def ask(client, url: str, question: str, max_tokens: int) -> str:
    response = client.chat.completions.create(
        model=MODEL, max_tokens=max_tokens, temperature=0.0,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                               {"type": "text", "text": question}]}])
    return response.choices[0].message.content


def sequential_generate(args, dtype) -> float:
    import torch
    from PIL import Image

    model, processor = _model(dtype)
    model.to(dtype).eval()
    questions = _questions(16)
    started = time.perf_counter()
    for path, question in questions:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[[Image.open(path).convert("RGB")]], return_tensors="pt",
                           add_special_tokens=False)
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=args.max_tokens, do_sample=False)
    return len(questions) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
