"""The output head and loss over long supervised rows: all the targets' logits at once, against chunks.

TunestackTrainer computes logits only at target positions; where those would still pass `chunk_from_bytes` of
fp32 (256 MB by default), it runs the head and the loss CHUNK_ROWS positions at a time, each chunk recomputed in the
backward pass. This measures what that saves and costs on the embedded model: LoRA (rank 8, every linear layer),
`--batch` rows of `--length` tokens, every token a target (as in continued pretraining or long answers), the same
random rows on both sides.

Each side runs in a process of its own, so that its peak resident memory is its own: `--steps` optimizer steps
after one untimed, timed per step (the median counts), and the peak RSS above the RSS just before the first step
(the model and optimizer are the same on both sides, the step's transient memory is what differs).

Usage:
    python benchmarks/output_head.py                          # fp32 and bf16, 4 x 512, a few minutes on 2 cores
    python benchmarks/output_head.py --dtypes fp32 --steps 3  # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

MODEL = "smollm2-135m-instruct"


def side(dtype: str, chunked: bool, batch: int, length: int, steps: int) -> dict:
    """One side, in this process: the median step seconds and the peak RSS above the start of training (MB)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from tunestack.config import ModelArgs
    from tunestack.inference.loading import load_for_inference
    from tunestack.train.trainer import TunestackTrainer

    torch.manual_seed(0)
    loaded = load_for_inference(ModelArgs(model=MODEL, dtype=dtype))
    model = get_peft_model(loaded.model.train(), LoraConfig(r=8, lora_alpha=32, target_modules="all-linear"))
    model.config.use_cache = False
    trainer = TunestackTrainer(model=model, args=TrainingArguments(output_dir="/tmp/output-head-bench", use_cpu=True,
                                                                    report_to="none"))
    trainer.chunk_from_bytes = 1 if chunked else 2**62
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (batch, length))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def step():
        loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    step()  # untimed: first-call allocations and the optimizer's states
    times, losses, start_rss, peak = timed(step, steps)
    return {"dtype": str(loaded.model.dtype).removeprefix("torch."), "chunked": chunked,
            "step_s": statistics.median(times), "tokens_per_s": batch * length / statistics.median(times),
            "peak_above_start_mb": round(peak - start_rss), "peak_mb": round(peak), "losses": losses}


def timed(step, steps: int) -> tuple[list[float], list[float], float, float]:
    """`steps` calls of `step` (which returns the loss): their seconds, their losses, the RSS before the first and
    the process's peak RSS (MB)."""
    import resource
    import time

    start_rss = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    times, losses = [], []
    for _ in range(steps):
        begin = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - begin)
    return times, losses, start_rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare(doc: str, script: str, side_fn, kinds: tuple[str, str], length: int, output: str):
    """The command line of a two-sided comparison on the embedded model: parses it, and in the parent runs each
    dtype's two sides (`kinds`, the second the one `side_fn` is asked for with True) in processes of their own,
    returning (args, rows); in a side's process (`--side DTYPE:KIND`) prints its row and returns None."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=length)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--output", default=output)
    parser.add_argument("--side", help=argparse.SUPPRESS)  # DTYPE:KIND, run by the parent
    args = parser.parse_args()
    if args.side:
        dtype, kind = args.side.split(":")
        print(json.dumps(side_fn(dtype, kind == kinds[1], args.batch, args.length, args.steps)))
        return None
    rows = []
    for side_name in [f"{d}:{kind}" for d in args.dtypes.split(",") for kind in kinds]:
        done = subprocess.run([sys.executable, script, "--side", side_name, "--batch", str(args.batch), "--length",
                               str(args.length), "--steps", str(args.steps)], capture_output=True, text=True,
                              check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return args, rows


def write_results(args, rows: list[dict]) -> None:
    from tunestack.plan.device import cpu_name

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"cpu": cpu_name(), "batch": args.batch, "length": args.length,
                                             "rows": rows}, indent=2))
    print(f"wrote {args.output}")


def main() -> None:
    compared = compare(__doc__, __file__, side, ("whole", "chunked"), 512, "benchmarks/results/output_head.json")
    if compared is None:
        return
    args, rows = compared
    from tunestack.plan.device import cpu_name

    print(f"{cpu_name()}; LoRA on {MODEL}, {args.batch} x {args.length} tokens, every one a target")
    print(f"{'dtype':<9} {'head':<8} {'s/step':>7} {'tokens/s':>9} {'peak above start MB':>20} {'peak MB':>8}")
    for r in rows:
        print(f"{r['dtype']:<9} {'chunked' if r['chunked'] else 'whole':<8} {r['step_s']:>7.2f} "
              f"{r['tokens_per_s']:>9.0f} {r['peak_above_start_mb']:>20} {r['peak_mb']:>8}")
    write_results(args, rows)


if __name__ == "__main__":
    main()
