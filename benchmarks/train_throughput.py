"""Training throughput of tunestack's LoRA SFT against a plain transformers + peft script, on this CPU.

Target: tunestack at least 1.5x the plain script's tokens/s with bf16 on this CPU, at no more peak memory.

What runs. LoRA SFT (rank 8, alpha 32, no dropout, all linear layers, learning rate 1e-4, seed 42, batch 8 examples
unpacked or 1 packed row)
of the embedded smollm2-135m-instruct on the built-in `self-cognition` and `arith` data (short conversations),
with --max_length 512, in fp32 and in bf16:
  - tunestack, packing off and on: the Trainer `tunestack sft` builds (`tunestack.train.lifecycle.build_trainer` with `SFT`).
  - plain: what a user writes by hand with no tunestack import: `AutoModelForCausalLM.from_pretrained` (fp32
    weights), `get_peft_model`, `apply_chat_template` with the prompt masked out of the labels,
    `DataCollatorForSeq2Seq` padding to the longest in the batch, `Trainer(args=TrainingArguments(bf16=...))`
    (bf16 there is autocast over fp32 weights). It does not pack; both packing rows compare against it.
Every configuration runs in its own subprocess (`--worker CONFIG_JSON`): a few untimed warm-up steps, then
`--steps` timed optimizer steps.

How it is measured, the same way on both sides:
  - tokens/s: real (non-padding) tokens of the timed steps over their wall time. A wrapper around each side's
    collator counts the tokens of the examples (or packed rows) each batch is built from, before padding; a
    callback stamps the end of every optimizer step; the timed window runs from the end of the last warm-up
    step to the end of the last step.
  - MFU: achieved model FLOP/s over the peak of the dtype, where the peak is measured here: the best of a few
    timed square matmuls in fp32 and in bf16 with torch on this CPU. Model FLOPs of the timed steps:
        FLOPs = (4 * N_frozen + 6 * N_lora) * tokens + 12 * n_layers * d_attn * pairs
    N_frozen: weights of the frozen linear layers, output head included (forward 2N, backward input-gradients
    2N; no weight-gradients for a frozen base). N_lora: weights of the LoRA A and B matrices (forward 2N,
    backward input- and weight-gradients 4N). Attention: QK^T and AV cost 4 * d_attn FLOPs per query-key pair
    and layer forward, twice that backward; pairs = sum over examples of L * (L + 1) / 2 under the causal mask,
    each packed example counted on its own (d_attn = heads * head_dim). Embedding lookups, norms, activations
    and the optimizer are not counted.
  - peak memory: the peak resident set size of the worker process, from os.wait4's resource usage once it
    has exited (what getrusage(RUSAGE_CHILDREN) reports for a single child); model loading included.

Usage:
    python benchmarks/train_throughput.py                # full run (about 5 minutes on an idle 2-core CPU)
    python benchmarks/train_throughput.py --quick        # smoke check: 1 warm-up and 2 timed steps, ~2 minutes
    python benchmarks/train_throughput.py --steps 20 --repeats 3 --output /tmp/throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

MODEL = "smollm2-135m-instruct"
DATASETS = ["self-cognition", "arith"]
IDENTITY = {"model_name": "Nova", "model_author": "Acme"}
LORA = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.0}  # peft's and tunestack's default dropout
LEARNING_RATE = 1e-4
SEED = 42
LOGGING_STEPS = 5
IGNORE_INDEX = -100
TARGET_SPEEDUP = 1.5
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "train_throughput.json"
TARGET = "tunestack at least 1.5x the plain script's tokens/s with bf16 on this CPU, at no more peak memory"


# ---- measuring inside a worker, identical for both sides ----

class BatchLedger:
    """Wraps a collator and records, per batch, its real tokens and causal query-key pairs (before padding)."""

    def __init__(self, collator):
        self.collator = collator
        self.batches: list[tuple[int, int]] = []

    def __call__(self, features: list[dict]) -> dict:
        tokens = pairs = 0
        for feature in features:
            for length in _segment_lengths(feature):
                tokens += length
                pairs += length * (length + 1) // 2
        self.batches.append((tokens, pairs))
        return self.collator(features)


def _segment_lengths(feature: dict) -> list[int]:
    """Lengths of the examples in a row: one, or several in a packed row (positions restart at 0 in each)."""
    positions = feature.get("position_ids")
    if positions is None:
        return [len(feature["input_ids"])]
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return [end - start for start, end in zip(starts, starts[1:])]


class StepClock(TrainerCallback):
    """Stamps the end of every optimizer step."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def flop_counts(model) -> dict:
    """The weights the FLOPs formula needs: frozen and trainable (LoRA) linear weights, attention shape."""
    import torch

    frozen = lora = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            if module.weight.requires_grad:
                lora += module.weight.numel()
            else:
                frozen += module.weight.numel()
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {"n_frozen": frozen, "n_lora": lora, "n_layers": config.num_hidden_layers,
            "d_attn": config.num_attention_heads * head_dim}


def model_flops(counts: dict, tokens: int, pairs: int) -> float:
    per_token = 4 * counts["n_frozen"] + 6 * counts["n_lora"]
    return per_token * tokens + 12 * counts["n_layers"] * counts["d_attn"] * pairs


# ---- the two sides, each building a ready-to-train Trainer ----

def tunestack_trainer(cfg: dict):
    """The trainer `tunestack sft` builds for these settings (its own build_trainer)."""
    from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs
    from tunestack.run import RunDir
    from tunestack.train.lifecycle import build_trainer
    from tunestack.train.sft import SFT

    model_args = ModelArgs(model=cfg["model"], dtype=cfg["precision"])
    data_args = DataArgs(dataset=DATASETS, max_length=cfg["max_length"], packing=cfg["packing"], **IDENTITY)
    tuner_args = TunerArgs(lora_rank=LORA["r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"])
    train_args = TrainArgs(output_dir=cfg["work_dir"], learning_rate=LEARNING_RATE, max_steps=cfg["total_steps"],
                           per_device_train_batch_size=cfg["batch_size"], logging_steps=LOGGING_STEPS,
                           save_steps=10**6, seed=SEED, overwrite_output_dir=True)
    return build_trainer(SFT, model_args, data_args, tuner_args, train_args, RunDir(train_args.output_dir))


def plain_trainer(cfg: dict):
    """A hand-written transformers + peft LoRA script: no packing, dynamic padding, autocast for bf16."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments, set_seed)

    tokenizer = AutoTokenizer.from_pretrained(cfg["model_path"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = cfg["max_length"]

    def tokenize(example):
        messages = example["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)
        full = tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"][:max_length]
        n_prompt = len(prompt["input_ids"])
        labels = [IGNORE_INDEX] * n_prompt + full[n_prompt:]
        return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels[:len(full)]}

    with open(cfg["data_file"]) as fh:
        rows = [json.loads(line) for line in fh]
    dataset = Dataset.from_list(rows).map(tokenize, remove_columns=["messages"])
    model = AutoModelForCausalLM.from_pretrained(cfg["model_path"])
    set_seed(SEED)
    model = get_peft_model(model, LoraConfig(**LORA, target_modules="all-linear", task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=cfg["work_dir"], per_device_train_batch_size=cfg["batch_size"], learning_rate=LEARNING_RATE,
        max_steps=cfg["total_steps"], lr_scheduler_type="cosine", warmup_steps=0.03, seed=SEED,
        bf16=cfg["precision"] == "bf16", use_cpu=True, logging_steps=LOGGING_STEPS, save_strategy="no",
        report_to="none",
    )
    return Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                   data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))


def run_worker(cfg: dict) -> None:
    """Train one configuration and write what the timed steps did to cfg['result_file']."""
    import resource

    import torch

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    trainer = (tunestack_trainer if cfg["side"] == "tunestack" else plain_trainer)(cfg)
    ledger = BatchLedger(trainer.data_collator)
    trainer.data_collator = ledger
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()

    warmup, steps = cfg["warmup_steps"], cfg["steps"]
    if len(clock.ends) != warmup + steps or len(ledger.batches) < warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} steps, saw {len(clock.ends)} steps "
                           f"and {len(ledger.batches)} batches")
    timed = ledger.batches[warmup:warmup + steps]
    tokens, pairs = sum(t for t, _ in timed), sum(p for _, p in timed)
    counts = flop_counts(trainer.model)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "seconds": clock.ends[-1] - clock.ends[warmup - 1],
        "tokens": tokens,
        "tokens_per_step": [t for t, _ in timed],
        "seconds_per_step": [end - start for start, end in zip(clock.ends[warmup - 1:], clock.ends[warmup:])],
        "attention_pairs": pairs,
        "model_flops": model_flops(counts, tokens, pairs),
        **counts,
        "weights_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "last_loss": losses[-1] if losses else None,
        "worker_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(cfg["result_file"]).write_text(json.dumps(result, indent=2))


# ---- the driver: peak matmul, one subprocess per configuration, table and JSON ----

def matmul_peak(dtype_name: str, size: int, repeats: int) -> float:
    """Best FLOP/s of `repeats` timed size x size matmuls in the given dtype (after one untimed)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def spawn_worker(cfg: dict, log_path: Path) -> tuple[dict, float]:
    """Run one worker to completion; its result and its peak RSS in MB (from the kernel, once it has exited)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a CPU benchmark, on both sides, even where a GPU exists
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"{cfg['side']} {cfg['precision']} worker failed (exit {process.returncode}):\n{tail}")
    return json.loads(Path(cfg["result_file"]).read_text()), usage.ru_maxrss / 1024


def export_rows(path: Path) -> Path:
    """The training conversations, as tunestack's loader reads them, in a JSONL file the plain script reads."""
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets

    splits = load_datasets(DataArgs(dataset=DATASETS, **IDENTITY), task="sft", seed=SEED)
    with open(path, "w") as fh:
        for row in splits.train:
            fh.write(json.dumps({"messages": row["messages"]}) + "\n")
    return path


CONFIGS = [("fp32", "plain", False), ("fp32", "tunestack", False), ("fp32", "tunestack", True),
           ("bf16", "plain", False), ("bf16", "tunestack", False), ("bf16", "tunestack", True)]


def run_all(opts, peaks: dict) -> list[dict]:
    from tunestack.hub import resolve_model

    resolved = resolve_model(MODEL)
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        tmp = Path(tmp)
        data_file = export_rows(tmp / "data.jsonl")
        for precision, side, packing in CONFIGS:
            if precision not in peaks:
                continue
            name = f"{side}-{precision}-{'packed' if packing else 'unpacked'}"
            runs = []
            for attempt in range(opts.repeats):
                cfg = {"side": side, "precision": precision, "packing": packing, "model": MODEL,
                       "model_path": str(resolved.path), "data_file": str(data_file),
                       "max_length": opts.max_length, "threads": opts.threads,
                       "batch_size": opts.packed_batch_size if packing else opts.batch_size,
                       "warmup_steps": opts.warmup, "steps": opts.steps, "total_steps": opts.warmup + opts.steps,
                       "work_dir": str(tmp / f"{name}-{attempt}"), "result_file": str(tmp / f"{name}-{attempt}.json")}
                started = time.perf_counter()
                result, peak_mb = spawn_worker(cfg, tmp / f"{name}-{attempt}.log")
                print(f"{name}: {result['tokens'] / result['seconds']:,.0f} tokens/s, {peak_mb:,.0f} MB peak "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
                runs.append({**result, "peak_memory_mb": peak_mb})
            rows.append(summarize(precision, side, packing, runs, peaks[precision]))
    compare_with_plain(rows)
    return rows


def summarize(precision: str, side: str, packing: bool, runs: list[dict], peak: float) -> dict:
    """One table row: the fastest run's throughput and MFU, the highest peak memory of all runs."""
    best = max(runs, key=lambda r: r["tokens"] / r["seconds"])
    return {
        "precision": precision, "side": side, "packing": packing,
        "tokens_per_s": best["tokens"] / best["seconds"],
        "model_flops_per_s": best["model_flops"] / best["seconds"],
        "mfu": best["model_flops"] / best["seconds"] / peak,
        "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
        "runs": runs,
    }


def compare_with_plain(rows: list[dict]) -> None:
    plain = {r["precision"]: r for r in rows if r["side"] == "plain"}
    for row in rows:
        base = plain[row["precision"]]
        row["speedup_vs_plain"] = row["tokens_per_s"] / base["tokens_per_s"]
        row["memory_vs_plain"] = row["peak_memory_mb"] / base["peak_memory_mb"]
        row["same_batches_as_plain"] = row["runs"][0]["tokens_per_step"] == base["runs"][0]["tokens_per_step"]


def target_checks(rows: list[dict]) -> list[dict]:
    checks = []
    for row in rows:
        if row["side"] != "tunestack" or row["precision"] != "bf16":
            continue
        fast = row["speedup_vs_plain"] >= TARGET_SPEEDUP
        lean = row["memory_vs_plain"] <= 1.0
        checks.append({"config": _config_name(row), "speedup": row["speedup_vs_plain"],
                       "memory_ratio": row["memory_vs_plain"], "meets_target": fast and lean})
    return checks


def _config_name(row: dict) -> str:
    return f"{row['precision']}, packing {'on' if row['packing'] else 'off'}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| config | side | tokens/s | speedup vs plain | MFU % | peak memory MB | memory vs plain |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {_config_name(r)} | {r['side']} | {r['tokens_per_s']:,.0f} | {r['speedup_vs_plain']:.2f}x "
                     f"| {100 * r['mfu']:.1f} | {r['peak_memory_mb']:,.0f} | {r['memory_vs_plain']:.2f}x |")
    return "\n".join(lines)


def report(rows: list[dict], peaks: dict, opts) -> str:
    capped = ", capped at AVX2" if opts.isa == "avx2" else ""
    lines = [f"Matmul peak measured on this CPU{capped} ({torch_threads()} threads, best of {opts.matmul_repeats} "
             f"{opts.matmul_size}x{opts.matmul_size} matmuls): "
             + ", ".join(f"{name} {flops / 1e9:,.1f} GFLOP/s" for name, flops in peaks.items()),
             f"{opts.warmup} warm-up + {opts.steps} timed steps per configuration, batch {opts.batch_size} examples or {opts.packed_batch_size} packed row(s), "
             f"max_length {opts.max_length}, best of {opts.repeats} run(s)", "", markdown_table(rows), "",
             f"Target: {TARGET}."]
    for check in target_checks(rows):
        verdict = "meets it" if check["meets_target"] else "misses it"
        lines.append(f"- tunestack {check['config']}: {check['speedup']:.2f}x tokens/s, "
                     f"{check['memory_ratio']:.2f}x peak memory: {verdict}")
    for row in rows:
        if row["side"] == "tunestack" and not row["packing"] and not row["same_batches_as_plain"]:
            lines.append(f"- note: tunestack {_config_name(row)} trained on different batches than plain "
                         "(token counts per step differ)")
    return "\n".join(lines)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def machine() -> dict:
    from importlib.metadata import version

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch_threads(), "python": platform.python_version(),
            **{name: version(name) for name in ("torch", "transformers", "peft", "tunestack")}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 1 warm-up step, 2 timed steps, smaller matmuls for the peak")
    parser.add_argument("--steps", type=int,
                        help="timed optimizer steps per configuration (default 10; 2 with --quick)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest counts")
    parser.add_argument("--max_length", type=int, default=512, help="maximum tokens per example and packed row")
    parser.add_argument("--batch_size", type=int, default=8, help="examples per step without packing")
    parser.add_argument("--packed_batch_size", type=int, default=1,
                        help="packed rows per step (default 1: one row of max_length tokens holds about as many "
                             "tokens as --batch_size short examples, so both do the same work per step)")
    parser.add_argument("--threads", type=int, help="torch threads in every process (default: torch's choice)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON results file "
                        "(default: benchmarks/results/train_throughput.json)")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native",
                        help="avx2: fp32 only, with oneDNN, ATen and MKL capped at AVX2 in every process, as on a "
                             "CPU with AVX2 only (train_peers.py's --isa)")
    parser.add_argument("--worker", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    opts.steps = opts.steps or (2 if opts.quick else 10)
    opts.warmup = 1 if opts.quick else 2
    opts.matmul_size, opts.matmul_repeats = (2048, 3) if opts.quick else (4096, 5)
    if opts.steps < 1 or opts.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    return opts


def main(argv=None) -> None:
    opts = parse_args(argv)
    if opts.worker:
        run_worker(json.loads(opts.worker))
        return
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    if opts.isa == "avx2":  # read by each library at its first use: set before any computation, inherited below
        from train_peers import AVX2_ONLY

        os.environ.update(AVX2_ONLY)
    precisions = ("fp32",) if opts.isa == "avx2" else ("fp32", "bf16")
    peaks = {name: matmul_peak(name, opts.matmul_size, opts.matmul_repeats) for name in precisions}
    rows = run_all(opts, peaks)
    print(report(rows, peaks, opts))
    output = Path(opts.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(opts, k) for k in ("steps", "warmup", "repeats", "max_length", "batch_size", "packed_batch_size", "threads",
                                              "quick", "isa")}
    output.write_text(json.dumps({
        "target": TARGET, "machine": machine(), "settings": {**settings, "model": MODEL, "datasets": DATASETS,
                                                              "lora": LORA, "learning_rate": LEARNING_RATE},
        "matmul_peak_flops": peaks, "matmul": {"size": opts.matmul_size, "repeats": opts.matmul_repeats},
        "rows": rows, "target_checks": target_checks(rows),
    }, indent=2))
    print(f"\nwrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
