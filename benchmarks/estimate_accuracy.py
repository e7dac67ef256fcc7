"""How close `tunestack estimate` comes to real `tunestack sft` runs on this machine: peak memory and time.

What runs. Each configuration is a set of sft flags. Its estimate is made in-process (`build_estimate`, the
function behind `tunestack estimate`), then the real `tunestack sft` runs with the same flags in its own process for
--max_steps steps (`tunestack.plan.measure.run_measured`): the measured peak is that process's peak resident
memory on a CPU (os.wait4's rusage), torch.cuda.max_memory_allocated on a GPU. The configurations vary the tuner
(LoRA, full, QLoRA), sequence length, micro-batch, gradient checkpointing and packing, on three models:
  - tiny: a random 2-layer Llama, hidden 64, built here with the embedded model's tokenizer (vocab 49152);
  - wide: a random 4-layer Llama, hidden 256, same tokenizer: the logits terms dominate, as in small real models;
  - smollm2: the embedded smollm2-135m-instruct (30 layers, hidden 576).
ZeRO stages and FSDP are estimated, not measured: this needs several GPUs and DeepSpeed.

The time check runs --measure's method (a few steps, timed from metrics.jsonl) and a longer real run of the same
configuration, and compares the predicted duration of the longer run with its measured training time.

Usage:
    python benchmarks/estimate_accuracy.py                 # every configuration (about 15 minutes on 2 idle cores)
    python benchmarks/estimate_accuracy.py --only tiny,wide # the quick ones
    python benchmarks/estimate_accuracy.py --output /tmp/estimate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "estimate_accuracy.json"
SELF = ["--model_name", "Nova", "--model_author", "Acme"]
CONFIGS = [  # name, model, flags
    ("tiny lora b4", "tiny", ["--dataset", "self-cognition", *SELF]),
    ("tiny full b4", "tiny", ["--dataset", "self-cognition", *SELF, "--tuner", "full"]),
    ("tiny qlora b4", "tiny", ["--dataset", "self-cognition", *SELF, "--tuner", "qlora"]),
    ("wide lora packed 512 b4", "wide", ["--dataset", "self-cognition,arith#300", *SELF, "--packing",
                                         "--max_length", "512"]),
    ("wide full b8", "wide", ["--dataset", "arith", "--tuner", "full", "--per_device_train_batch_size", "8"]),
    ("wide lora ckpt packed 1024 b2", "wide", ["--dataset", "self-cognition,arith#300", *SELF, "--packing",
                                               "--max_length", "1024", "--per_device_train_batch_size", "2",
                                               "--gradient_checkpointing"]),
    ("smollm2 lora b4", "smollm2", ["--dataset", "self-cognition", *SELF]),
    ("smollm2 full b4", "smollm2", ["--dataset", "self-cognition", *SELF, "--tuner", "full"]),
    ("smollm2 lora ckpt b8", "smollm2", ["--dataset", "self-cognition", *SELF, "--per_device_train_batch_size", "8",
                                         "--gradient_checkpointing"]),
    ("smollm2 lora packed 512 b2", "smollm2", ["--dataset", "self-cognition,arith#200", *SELF, "--packing",
                                               "--max_length", "512", "--per_device_train_batch_size", "2"]),
    ("smollm2 qlora b4 len 64", "smollm2", ["--dataset", "self-cognition", *SELF, "--tuner", "qlora",
                                            "--max_length", "64", "--truncation", "truncate"]),
]
TIME_CONFIG = ("wide lora b8", "wide", ["--dataset", "arith", "--per_device_train_batch_size", "8"])


def build_models(folder: Path) -> dict[str, str]:
    """The random tiny and wide Llamas, with the embedded model's tokenizer; and the embedded model's alias."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tunestack.hub import resolve_model

    embedded = resolve_model("smollm2-135m-instruct").path
    tokenizer = AutoTokenizer.from_pretrained(embedded)
    paths = {"smollm2": "smollm2-135m-instruct"}
    for name, hidden, inter, layers in (("tiny", 64, 128, 2), ("wide", 256, 688, 4)):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=2048, tie_word_embeddings=False,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        LlamaForCausalLM(config).save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        paths[name] = str(folder / name)
    return paths


def groups_of(model: str, flags: list[str], steps: int):
    from tunestack.config import DataArgs, ModelArgs, ParallelArgs, PlanArgs, TrainArgs, TunerArgs, parse_groups
    from tunestack.plan import TrainingGroups

    argv = ["--model", model, *flags, "--max_steps", str(steps)]
    m, d, t, tr, p, plan = parse_groups([ModelArgs, DataArgs, TunerArgs, TrainArgs, ParallelArgs, PlanArgs], argv)
    return TrainingGroups(m, d, t, tr, p), plan


def memory_row(name: str, model: str, flags: list[str], steps: int) -> dict:
    from tunestack.plan.estimate import build_estimate
    from tunestack.plan.measure import run_measured

    groups, plan = groups_of(model, flags, steps)
    estimate = build_estimate(groups.model, groups.data, groups.tuner, groups.train, groups.parallel, plan)
    start = time.perf_counter()
    measured = run_measured(groups, steps)
    return {"config": name, "flags": flags, "steps": steps, "estimate_bytes": estimate.memory.peak,
            "measured_bytes": measured.peak_bytes, "error": estimate.memory.peak / measured.peak_bytes - 1,
            "seconds": round(time.perf_counter() - start, 1),
            "parts": {"weights": estimate.memory.weights, "activations": estimate.memory.activation_bytes,
                      "process": estimate.memory.process, "heap_kept": estimate.memory.heap_kept}}


def time_row(model: str, flags: list[str], measure_steps: int, run_steps: int) -> dict:
    from dataclasses import replace

    from tunestack.plan.estimate import build_estimate
    from tunestack.plan.measure import run_measured

    groups, plan = groups_of(model, flags, run_steps)
    estimate = build_estimate(groups.model, groups.data, groups.tuner, groups.train, groups.parallel,
                              replace(plan, measure=True, measure_steps=measure_steps))
    real = run_measured(groups, run_steps)
    actual = real.first_step + real.step * (real.steps - 1)
    return {"config": TIME_CONFIG[0], "measure_steps": measure_steps, "run_steps": run_steps,
            "estimate_seconds": estimate.time.seconds, "measured_seconds": actual,
            "error": estimate.time.seconds / actual - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated models to run: tiny, wide, smollm2")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps of each measured run")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory() as folder:
        models = build_models(Path(folder))
        rows = []
        for name, model, flags in CONFIGS:
            if only is None or model in only:
                rows.append(memory_row(name, models[model], flags, args.steps))
                print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        timing = time_row(models[TIME_CONFIG[1]], TIME_CONFIG[2], 3, 20)
    print_table(rows, timing)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                       "python": platform.python_version(), "memory": rows, "time": timing},
                                      indent=2) + "\n")
    print(f"\nwritten to {args.output}")


def print_table(rows: list[dict], timing: dict) -> None:
    mib = 2**20
    print("| configuration | estimate MiB | measured MiB | error |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['config']} | {row['estimate_bytes'] / mib:,.0f} | {row['measured_bytes'] / mib:,.0f} | "
              f"{row['error']:+.1%} |")
    worst = max(abs(r["error"]) for r in rows) if rows else 0
    print(f"\nlargest error {worst:.1%} (target: within 15%)")
    print(f"time: {timing['config']}, {timing['run_steps']} steps: estimated {timing['estimate_seconds']:.1f} s from "
          f"{timing['measure_steps']} measured steps, measured {timing['measured_seconds']:.1f} s "
          f"({timing['error']:+.1%}; target: within 20%)")


if __name__ == "__main__":
    main()
