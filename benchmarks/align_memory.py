"""DPO with LoRA: peak memory and step time of tunestack's reference (the policy with its adapter disabled) against
a separate reference copy, and against TRL's own DPOTrainer used as its documentation shows, in one run.

What runs. Three DPO jobs on the same model and the same built-in `arith-pref` pairs, each in its own process, one
after the other, with the same LoRA (rank 8, alpha 16, all linear layers), batch, learning rate, beta, precision
(--dtype: fp32, or bf16, where tunestack keeps the frozen base in bf16 and TRL autocasts over fp32 weights), no
gradient checkpointing, and number of steps (TRL's DPOConfig
defaults to bf16 and checkpointing; they are set to match):

- `tunestack`: `tunestack.dpo(...)`; the reference log-probabilities come from the same weights with the adapter
  disabled.
- `tunestack --ref_model`: the same, with `ref_model` naming the base model, so the reference is a second copy in
  memory (what a user gets from a trainer that always loads one).
- `trl`: `trl.DPOTrainer` with a `peft_config`, on the same prompt/chosen/rejected rows rendered with the model's
  chat template, written the way TRL's DPO example is.

Peak memory is the peak resident set of each process (VmHWM: model loading included). Step time is the median
wall time between consecutive optimizer steps, after --warmup steps, taken by the same TrainerCallback in all
three. With --rounds above 1 the three run again in reverse order (ABC CBA ABC ...), so a machine that slows down
or speeds up during the benchmark weighs on each side alike; each side's step time is the median over all its
rounds' steps, and its peak memory the largest. Targets: `tunestack` uses less memory than `tunestack --ref_model`
at no loss of speed, and is at least as fast as `trl`.

Usage:
    python benchmarks/align_memory.py                      # the embedded smollm2-135m-instruct, 12 steps of 8 pairs
    python benchmarks/align_memory.py --model DIR --steps 6 --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SIDES = ("tunestack", "tunestack --ref_model", "trl")

WORKER = r'''
import json, sys, time
from pathlib import Path

from transformers import TrainerCallback

config = json.loads(sys.argv[1])


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def peak_rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


timer = StepTimes()
if config["side"] == "trl":
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(config["seed"])
    tokenizer = AutoTokenizer.from_pretrained(config["model"])
    model = AutoModelForCausalLM.from_pretrained(config["model"], dtype=torch.float32)  # autocast does bf16
    args = DPOConfig(output_dir=config["output_dir"], per_device_train_batch_size=config["batch"],
                     max_steps=config["steps"], learning_rate=config["learning_rate"], beta=0.1,
                     logging_steps=1, save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
                     max_length=config["max_length"], seed=config["seed"], dataloader_num_workers=0,
                     bf16=config["dtype"] == "bf16", gradient_checkpointing=False)  # not TRL's defaults: as ours
    peft = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(config["rows"]),
                         processing_class=tokenizer, peft_config=peft, callbacks=[timer])
    trainer.train()
else:
    import tunestack

    extra = {"ref_model": config["model"]} if config["side"] == "tunestack --ref_model" else {}
    tunestack.dpo(model=config["model"], dataset=config["rows"], output_dir=config["output_dir"],
                  per_device_train_batch_size=config["batch"], max_steps=config["steps"],
                  learning_rate=config["learning_rate"], beta=0.1, lora_rank=8, lora_alpha=16, lora_dropout=0.0,
                  bf16=config["dtype"] == "bf16", dtype="fp32", logging_steps=1, save_steps=10**6, val_ratio=0.0,
                  max_length=config["max_length"],
                  seed=config["seed"], callbacks=[timer], **extra)
print(json.dumps({"peak_rss": peak_rss(), "step_times": [b - a for a, b in zip(timer.times, timer.times[1:])]}))
'''


def pairs(count: int) -> tuple[list[dict], list[dict]]:
    """`arith-pref` pairs as tunestack reads them (prompt/chosen/rejected text; it applies the chat template) and as
    conversational rows, which TRL renders with the same template."""
    from tunestack.data.builtin.arith import arith_preference_rows

    plain = arith_preference_rows()[:count]
    chat = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in plain]
    return plain, chat


def run_side(side: str, args, rows: tuple[list[dict], list[dict]], folder: Path) -> dict:
    """One process training `side`: its peak memory and the wall times between its steps after --warmup."""
    config = {"side": side, "model": args.model, "rows": rows[1] if side == "trl" else rows[0], "batch": args.batch,
              "steps": args.steps, "learning_rate": args.learning_rate, "max_length": args.max_length, "seed": 0,
              "dtype": args.dtype,
              "output_dir": str(folder / side.replace(" ", "_").replace("-", ""))}
    result = subprocess.run([sys.executable, "-c", WORKER, json.dumps(config)], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if result.returncode:
        raise SystemExit(f"{side} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    steady = measured["step_times"][args.warmup - 1:] or measured["step_times"]
    return {"peak_mb": measured["peak_rss"] / 2**20, "steady": steady}


def run_rounds(args, rows, folder: Path) -> list[dict]:
    """Every side --rounds times, in forward then reverse order; per side the median step over all its rounds."""
    runs = {side: [] for side in SIDES}
    for round_ in range(args.rounds):
        for side in SIDES if round_ % 2 == 0 else reversed(SIDES):
            runs[side].append(run_side(side, args, rows, folder / str(round_)))
    return [{"side": side, "peak_mb": max(r["peak_mb"] for r in measured),
             "step_s": statistics.median(t for r in measured for t in r["steady"]),
             "round_step_s": [statistics.median(r["steady"]) for r in measured]}
            for side, measured in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a model directory (default: the embedded smollm2-135m-instruct)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--rounds", type=int, default=2, help="times each side runs (alternating order)")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="compute precision of all three")
    parser.add_argument("--output", default="benchmarks/results/align_memory.json")
    args = parser.parse_args()
    if args.model is None:
        from tunestack.hub import resolve_model

        args.model = str(resolve_model("smollm2-135m-instruct").path)
    from tunestack.plan.device import cpu_name

    rows = pairs(args.batch * args.steps)
    with tempfile.TemporaryDirectory(prefix="align-memory-") as folder:
        results = run_rounds(args, rows, Path(folder))
    ours, copy, trl = results
    print(f"DPO with LoRA, {args.steps} steps of {args.batch} pairs, {args.dtype}, {Path(args.model).name}, "
          f"{args.rounds} rounds; "
          f"{cpu_name()}\n")
    print("| reference | peak memory MB | step s (median) | memory vs tunestack | step time vs tunestack |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['side']} | {r['peak_mb']:.0f} | {r['step_s']:.3f} | {r['peak_mb'] / ours['peak_mb']:.2f}x "
              f"| {r['step_s'] / ours['step_s']:.2f}x |")
    checks = {
        "less memory than a separate reference copy": ours["peak_mb"] < copy["peak_mb"],
        "no slower than a separate reference copy (within 5%)": ours["step_s"] <= copy["step_s"] * 1.05,
        "at least TRL's speed (within 5%)": ours["step_s"] <= trl["step_s"] * 1.05,
    }
    print()
    for name, met in checks.items():
        print(f"- {name}: {'met' if met else 'NOT met'}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items()}, "results": results,
                                  "checks": checks, "cpu": cpu_name()}, indent=2))
    print(f"\nwritten: {output}")


if __name__ == "__main__":
    main()
