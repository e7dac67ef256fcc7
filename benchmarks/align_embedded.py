"""Alignment on the embedded model through the real CLI, each in minutes on a CPU: DPO on arith-pref raises the
held-out preference accuracy and the chosen-minus-rejected log-probability margin, and GRPO with the arithmetic
reward raises the mean reward on held-out prompts.

The held-out questions are generated with another seed than the built-in data and never appear in it. What is
measured is computed here with plain transformers and peft, independently of TRL and of tunestack's training code:
summed log-probabilities of each answer after the chat-templated question, and greedy answers checked against the
gold result. Prints a table, writes JSON, and exits 1 when a figure did not improve. About 8 minutes for both on an
idle 2-core CPU with AMX (bf16); several times that in fp32 on an AVX2-only CPU, which is why this is a benchmark
and not part of the test suite (the tiny-model tests in tests/train/test_align.py and tests/integration/test_grpo.py
cover every method's mechanics).

Usage:
    python benchmarks/align_embedded.py [--only dpo|grpo] [--output align_embedded.json]
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

HELD_OUT = 128


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tunestack", *args], check=True, stdout=subprocess.DEVNULL)


def held_out_problems(count: int):
    from tunestack.data.builtin.arith import arith_problems

    seen = {p.question for p in arith_problems()}
    return [p for p in arith_problems(4 * count, seed=7) if p.question not in seen][:count]


def load(run_or_model):
    """A run directory (its adapter over the base it names) or a model directory, with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run_or_model / "final" / "adapter_config.json"
    base = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.exists() else str(run_or_model)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter.exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, run_or_model / "final")
    return model.eval(), AutoTokenizer.from_pretrained(base)


def prompt_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def answer_log_probs(model, tokenizer, pairs: list[tuple[str, str]], batch: int = 32) -> list[float]:
    """Sum of log p(answer token | question, earlier answer tokens) for each (question, answer)."""
    scores = []
    for start in range(0, len(pairs), batch):
        rows = [(prompt_ids(tokenizer, q), tokenizer(a, add_special_tokens=False)["input_ids"])
                for q, a in pairs[start:start + batch]]
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, (p, a) in enumerate(rows):  # right padding: positions stay those of an unpadded sequence
            ids[i, :len(p) + len(a)] = torch.tensor(p + a)
            mask[i, :len(p) + len(a)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        for i, (p, a) in enumerate(rows):
            targets = torch.tensor(a)
            scores.append(logits[i, len(p) - 1:len(p) - 1 + len(a)].gather(1, targets[:, None]).sum().item())
    return scores


def preference(model, tokenizer, problems) -> tuple[float, float]:
    """Held-out pairwise accuracy (chosen scored above rejected) and mean log-probability margin."""
    chosen = answer_log_probs(model, tokenizer, [(p.question, p.reply(p.answer)) for p in problems])
    rejected = answer_log_probs(model, tokenizer, [(p.question, p.reply(p.wrong)) for p in problems])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return sum(m > 0 for m in margins) / len(margins), sum(margins) / len(margins)


@torch.no_grad()
def mean_reward(model, tokenizer, problems, max_new_tokens: int, batch: int = 32) -> float:
    """The share of held-out questions whose greedy answer ends with the right number (the accuracy reward)."""
    import re

    tokenizer.padding_side = "left"
    right = 0
    for start in range(0, len(problems), batch):
        chunk = problems[start:start + batch]
        rows = [prompt_ids(tokenizer, p.question) for p in chunk]
        width = max(map(len, rows))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad)
        for problem, tokens in zip(chunk, out[:, width:], strict=True):
            numbers = re.findall(r"-?\d[\d,]*", tokenizer.decode(tokens, skip_special_tokens=True))
            right += bool(numbers) and numbers[-1].replace(",", "") == str(problem.answer)
    return right / len(problems)


def dpo(base: Path, folder: Path) -> dict:
    problems = held_out_problems(HELD_OUT)
    before = preference(*load(base), problems)
    run = folder / "dpo"
    cli("dpo", "--dataset", "arith-pref#256", "--max_steps", "24", "--per_device_train_batch_size", "8",
        "--logging_steps", "4", "--output_dir", str(run))
    after = preference(*load(run), problems)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"figures": {"held-out preference accuracy": (before[0], after[0]),
                        "held-out log-prob margin": (before[1], after[1])},
            "trl_margin_last_batch": logged[-1].get("rewards/margins")}


def grpo(base: Path, folder: Path) -> dict:
    """Single-digit sums, which the model often gets right when it answers at once but talks past within 16 tokens:
    the accuracy reward alone has to teach it to answer."""
    from tunestack.data.builtin.arith import Problem

    sums = [Problem(a, "+", b, f"What is {a} + {b}?", a + b, a + b + 1) for a in range(1, 10) for b in range(1, 10)]
    held_out, train = sums[::3], [p for i, p in enumerate(sums) if i % 3]
    data = folder / "sums.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.question, "answer": p.answer}) + "\n" for p in train))
    before = mean_reward(*load(base), held_out, max_new_tokens=16)
    run = folder / "grpo"
    cli("grpo", "--dataset", str(data), "--reward_funcs", "accuracy", "--max_steps", "16",
        "--per_device_train_batch_size", "16", "--num_generations", "4", "--max_completion_length", "16",
        "--learning_rate", "1e-4", "--logging_steps", "2", "--output_dir", str(run))
    after = mean_reward(*load(run), held_out, max_new_tokens=16)
    return {"figures": {"held-out mean accuracy reward": (before, after)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("dpo", "grpo"))
    parser.add_argument("--output", default="benchmarks/results/align_embedded.json")
    args = parser.parse_args()
    from tunestack.hub import resolve_model
    from tunestack.plan.device import cpu_name

    base = Path(resolve_model("smollm2-135m-instruct").path)
    results, ok = {}, True
    with tempfile.TemporaryDirectory(prefix="align-embedded-") as folder:
        for name, run in (("dpo", dpo), ("grpo", grpo)):
            if args.only in (None, name):
                start = time.perf_counter()
                results[name] = {**run(base, Path(folder)), "seconds": round(time.perf_counter() - start, 1)}
    print(cpu_name())
    print(f"{'method':<6} {'figure':<32} {'before':>8} {'after':>8}  improved")
    for name, result in results.items():
        for figure, (before, after) in result["figures"].items():
            ok &= after > before
            print(f"{name:<6} {figure:<32} {before:>8.3f} {after:>8.3f}  {after > before}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=2))
    print(f"wrote {args.output}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
