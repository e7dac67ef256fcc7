"""The short LoRA job under tunestack, ms-swift and LLaMA-Factory, side by side, as each tool's users type it.

Targets (issue "speed"): tunestack's whole-process time at least 1.5x faster than the fastest peer's, and its
steady-state tokens/s at least 1.2x the fastest peer's.

The job, the same for every tool: LoRA rank 8, alpha 32, dropout 0 on every linear layer of the embedded
smollm2-135m-instruct (its converted Hugging Face folder), learning rate 1e-4, seed 42, 50 optimizer steps of 4
examples (no accumulation), --max_length 512, no validation split, the adapter saved once at the end; the
built-in `self-cognition` and `arith` conversations, exported once to a messages JSONL file that all three read.
Precision: bf16 where the CPU has AMX or AVX-512 BF16, else fp32, the choice tunestack's `--dtype auto` makes, given
to every tool.

Each tool runs as its command line in a process of its own (`tunestack sft`, `swift sft`, `llamafactory-cli train`),
each in an environment of its own under benchmarks/.peers/ (`--setup` creates them: a venv, torch first so that pip
keeps the CPU build, then the tool: this checkout of tunestack, the peers' pinned releases), so that no tool pays
for another's optional packages at import. Without its environment tunestack runs in this one; a peer whose
environment is missing or fails to install is listed as skipped with the reason.

How it is measured, the same way in every process:
  - whole process: wall time from spawning the command to its exit (imports, model load, data preparation,
    training, saving all count).
  - steady state: every process gets `peer_probe/sitecustomize.py` on PYTHONPATH. When transformers' Trainer is
    imported it wraps `Trainer.training_step` to record each micro-batch's real tokens (attention-mask ones) and
    stamps the end of every optimizer step. Steady-state tokens/s is the real tokens of steps 11 to 50 over the
    time from the end of step 10 to the end of step 50.
  - MFU: model FLOP/s of those steps over this CPU's matmul peak in the chosen precision, measured here with
    torch (train_throughput.py's formula: 4 x frozen + 6 x trainable linear weights per token, plus attention).
  - peak memory: the peak resident set size of the process tree's largest process, from os.wait4.

`--isa avx2` runs everything (the peak measurement too) as on a CPU with AVX2 only, the kind where bf16 is emulated
and `--dtype auto` picks fp32: oneDNN, ATen's vectorized kernels and MKL are capped at AVX2 through their own
environment variables (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS), and the precision is fp32.

Usage:
    python benchmarks/train_peers.py --setup      # create the tools' environments (downloads, several minutes)
    python benchmarks/train_peers.py              # run the three tools (about 6 minutes on an idle 2-core CPU)
    python benchmarks/train_peers.py --repeats 2 --tools tunestack,ms-swift
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_throughput import export_rows, machine, matmul_peak, model_flops  # noqa: E402

AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
PEERS = HERE / ".peers"
PROBE = HERE / "peer_probe"
DEFAULT_OUTPUT = HERE / "results" / "train_peers.json"
STEPS, WARMUP, BATCH, MAX_LENGTH = 50, 10, 4, 512
RANK, ALPHA, LEARNING_RATE, SEED = 8, 32, 1e-4, 42
# What each peer's environment gets, in this order. ms-swift keeps tunestack's torch (the CPU build). LLaMA-Factory
# 0.9.5 imports torchaudio when it loads, and no torchaudio release matches torch 2.13, so it gets torch 2.11 with its
# torchaudio and torchvision (PyPI's CUDA build, which runs on the CPU).
PACKAGES = {"tunestack": [["torch==2.13.0"], ["-e", str(HERE.parent)]],
            "ms-swift": [["torch==2.13.0"], ["ms-swift==4.6.0"]],
            "llamafactory": [["torch==2.11.0", "torchaudio==2.11.0", "torchvision==0.26.0"], ["llamafactory==0.9.5"]]}
TARGET_WHOLE, TARGET_STEADY = 1.5, 1.2
SYSTEM = "You are a helpful AI assistant."


def tool_python(tool: str) -> Path:
    """The tool's environment's Python. tunestack runs in its own too when `--setup` made one (installed as a user
    installs it, without the optional backends a development environment holds, whose imports cost seconds),
    else in this one."""
    python = PEERS / tool / "bin" / "python"
    return Path(sys.executable) if tool == "tunestack" and not python.exists() else python


def setup(tools: list[str]) -> None:
    """A venv per tool: torch installed first (pinned, so that pip keeps the CPU build), then the tool."""
    for tool in tools:
        env = PEERS / tool
        python = env / "bin" / "python"
        if python.exists() and _installed(python, tool):
            print(f"{tool}: ready in {env}")
            continue
        print(f"{tool}: installing into {env} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        for packages in PACKAGES[tool]:
            done = subprocess.run(pip + packages, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{tool}: pip install {' '.join(packages)} failed:\n{done.stderr[-2000:]}")
                break
        if tool == "ms-swift":  # a torchvision pulled in for torch 2.13's CPU build would not load beside it
            subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], capture_output=True)
        print(f"{tool}: {'ready' if _installed(python, tool) else 'not installed'}")


def _installed(python: Path, tool: str) -> bool:
    module = {"tunestack": "tunestack", "ms-swift": "swift", "llamafactory": "llamafactory"}[tool]
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def command(tool: str, model: Path, data: Path, out: Path, precision: str, checkpointing: bool | None) -> list[str]:
    """The tool's own command line for the job; `checkpointing` None keeps each tool's default for gradient
    checkpointing (ms-swift and LLaMA-Factory turn it on, tunestack leaves it off), True or False sets it in all."""
    checkpoint_flag = [] if checkpointing is None else ["--gradient_checkpointing", str(checkpointing).lower()]
    if tool == "tunestack":
        return [str(tool_python(tool)), "-m", "tunestack", "sft", "--model", str(model), "--dataset", str(data),
                "--lora_rank", str(RANK), "--lora_alpha", str(ALPHA), "--lora_dropout", "0",
                "--learning_rate", str(LEARNING_RATE), "--max_steps", str(STEPS),
                "--per_device_train_batch_size", str(BATCH), "--max_length", str(MAX_LENGTH),
                "--dtype", precision, "--val_ratio", "0", "--seed", str(SEED), "--logging_steps", "10",
                "--output_dir", str(out)] + checkpoint_flag
    if tool == "ms-swift":
        # ms-swift has no SmolLM2 entry: its Llama model type and ChatML template (SmolLM2's format) are named.
        return [str(PEERS / tool / "bin" / "swift"), "sft", "--model", str(model), "--model_type", "llama",
                "--template", "chatml", "--dataset", str(data),
                "--tuner_type", "lora", "--lora_rank", str(RANK), "--lora_alpha", str(ALPHA),
                "--lora_dropout", "0", "--target_modules", "all-linear", "--learning_rate", str(LEARNING_RATE),
                "--max_steps", str(STEPS), "--per_device_train_batch_size", str(BATCH),
                "--gradient_accumulation_steps", "1", "--max_length", str(MAX_LENGTH),
                "--torch_dtype", {"bf16": "bfloat16", "fp32": "float32"}[precision],
                "--split_dataset_ratio", "0", "--seed", str(SEED), "--logging_steps", "10",
                "--report_to", "none", "--use_cpu", "true", "--output_dir", str(out)] + checkpoint_flag
    config = out.parent / f"{out.name}.yaml"
    settings = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
                "lora_rank": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "lora_target": "all",
                "dataset": "chats", "dataset_dir": str(data.parent), "template": "smollm2",
                "cutoff_len": MAX_LENGTH, "learning_rate": LEARNING_RATE, "max_steps": STEPS,
                "per_device_train_batch_size": BATCH, "gradient_accumulation_steps": 1, "seed": SEED,
                "logging_steps": 10, "report_to": "none", "output_dir": str(out), "overwrite_output_dir": True,
                "bf16": precision == "bf16", "use_cpu": True}
    if checkpointing is not None:
        settings["disable_gradient_checkpointing"] = not checkpointing
    config.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in settings.items()) + "\n")
    return [str(PEERS / tool / "bin" / "llamafactory-cli"), "train", str(config)]


def prepare_data(folder: Path) -> Path:
    """The conversations as a messages JSONL file in `folder`, with the dataset_info.json LLaMA-Factory reads them by.

    Every conversation is opened with SYSTEM: SmolLM2's template adds a default system prompt to conversations
    without one, where ChatML (ms-swift) adds none, so the tools would otherwise train on different text."""
    folder.mkdir()
    path = export_rows(folder / "chats.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SYSTEM}] + row["messages"]}) + "\n"
                            for row in rows))
    (folder / "dataset_info.json").write_text(json.dumps({"chats": {
        "file_name": path.name, "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}))
    return path


def run_tool(tool: str, model: Path, data: Path, work: Path, precision: str, attempt: int,
             checkpointing: bool | None = None) -> dict:
    out = work / f"{tool}-{attempt}"
    probe_file = work / f"{tool}-{attempt}.probe.json"
    log_path = work / f"{tool}-{attempt}.log"
    env = {**os.environ, "TUNESTACK_PROBE_FILE": str(probe_file), "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))}
    argv = command(tool, model, data, out, precision, checkpointing)
    with open(log_path, "w") as log:
        start = time.time()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.time() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not probe_file.exists():
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-25:])
        return {"tool": tool, "error": f"exit {code}" + ("" if probe_file.exists() else ", no probe record"),
                "log": str(log_path), "tail": tail}
    record = json.loads(probe_file.read_text())
    ends, batches = record["step_ends"], record["batches"]
    if len(ends) < STEPS or len(batches) < STEPS:
        return {"tool": tool, "error": f"{len(ends)} steps recorded, expected {STEPS}", "log": str(log_path)}
    window = batches[WARMUP:STEPS]
    tokens = sum(sum(b) for b in window)
    pairs = sum(n * (n + 1) // 2 for b in window for n in b)
    steady_seconds = ends[STEPS - 1] - ends[WARMUP - 1]
    return {"tool": tool, "command": argv, "python": str(tool_python(tool)), "whole_process_s": round(seconds, 2),
            "first_step_s": round(ends[0] - start, 2), "steady_s_per_step": round(steady_seconds / (STEPS - WARMUP), 4),
            "steady_tokens_per_s": round(tokens / steady_seconds, 1),
            "flops_per_s": model_flops(record["counts"], tokens, pairs) / steady_seconds,
            "tokens_per_step": round(tokens / (STEPS - WARMUP), 1), "counts": record["counts"],
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "log": str(log_path)}


def precision_here() -> str:
    """What tunestack's --dtype auto picks on this machine's CPU."""
    from tunestack.model.precision import resolve_dtype

    import torch

    return "bf16" if resolve_dtype("auto") == torch.bfloat16 else "fp32"


def table(rows: list[dict], peak: float, precision: str) -> str:
    lines = [f"| tool | whole process s | first step s | steady s/step | steady tokens/s | MFU % ({precision}) "
             "| peak memory MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tool']} | skipped: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['tool']} | {r['whole_process_s']:.1f} | {r['first_step_s']:.1f} | "
                     f"{r['steady_s_per_step']:.3f} | {r['steady_tokens_per_s']:.0f} | "
                     f"{100 * r['flops_per_s'] / peak:.1f} | {r['peak_rss_mb']} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    ours = next((r for r in rows if r["tool"] == "tunestack" and "error" not in r), None)
    peers = [r for r in rows if r["tool"] != "tunestack" and "error" not in r]
    if ours is None or not peers:
        return ["no comparison: tunestack or every peer is missing"]
    fastest_whole = min(peers, key=lambda r: r["whole_process_s"])
    fastest_steady = max(peers, key=lambda r: r["steady_tokens_per_s"])
    whole = fastest_whole["whole_process_s"] / ours["whole_process_s"]
    steady = ours["steady_tokens_per_s"] / fastest_steady["steady_tokens_per_s"]
    return [f"whole process: {whole:.2f}x {fastest_whole['tool']} (target {TARGET_WHOLE}x): "
            f"{'met' if whole >= TARGET_WHOLE else 'not met'}",
            f"steady-state tokens/s: {steady:.2f}x {fastest_steady['tool']} (target {TARGET_STEADY}x): "
            f"{'met' if steady >= TARGET_STEADY else 'not met'}"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true", help="create the peers' environments, then stop")
    parser.add_argument("--tools", default="tunestack,ms-swift,llamafactory")
    parser.add_argument("--repeats", type=int, default=1, help="runs per tool, interleaved; the fastest counts")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--gradient_checkpointing", choices=("default", "on", "off"), default="default",
                        help="each tool's default (the peers turn it on, tunestack does not), or the same in all")
    parser.add_argument("--quick", action="store_true", help="smoke check: 12 steps, steady state over the last 10")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders and logs")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native",
                        help="avx2: run as on a CPU with AVX2 only (fp32; see above)")
    opts = parser.parse_args(argv)
    if opts.isa == "avx2":  # read by each library at its first use: set before any computation, inherited below
        os.environ.update(AVX2_ONLY)
        opts.precision = "fp32"
    tools = opts.tools.split(",")
    if opts.quick:
        global STEPS, WARMUP
        STEPS, WARMUP = 12, 2
    if opts.setup:
        setup(tools)
        return
    from tunestack.hub.resolve import resolve_model

    precision = precision_here() if opts.precision == "auto" else opts.precision
    checkpointing = {"default": None, "on": True, "off": False}[opts.gradient_checkpointing]
    model = resolve_model("smollm2-135m-instruct").path
    peak = matmul_peak(precision, 2048, 5)
    work = Path(tempfile.mkdtemp(prefix="train-peers-"))
    data = prepare_data(work / "data")
    best: dict[str, dict] = {}
    for attempt in range(opts.repeats):
        for tool in tools:
            if tool != "tunestack" and not tool_python(tool).exists():
                best[tool] = {"tool": tool, "error": f"no environment: run `{Path(__file__).name} --setup`"}
                continue
            print(f"{tool} (run {attempt + 1})", flush=True)
            row = run_tool(tool, model, data, work, precision, attempt, checkpointing)
            if "error" in row:
                print(f"  {row['error']}\n{row.get('tail', '')}")
            else:
                print(f"  whole {row['whole_process_s']:.1f} s, steady {row['steady_tokens_per_s']:.0f} tokens/s")
            kept = best.get(tool)
            if kept is None or "error" in kept or ("error" not in row and
                                                    row["whole_process_s"] < kept["whole_process_s"]):
                best[tool] = row
    rows = [best[t] for t in tools if t in best]
    here, judged = machine(), verdicts(rows)
    if opts.isa == "avx2":
        here["cpu"] += ", capped at AVX2"
    header = (f"{here['cpu']}, {precision}, gradient checkpointing: {opts.gradient_checkpointing}, matmul peak "
              f"{peak / 1e9:.0f} GFLOP/s; {STEPS} LoRA steps of {BATCH} examples, steady state over steps "
              f"{WARMUP + 1}-{STEPS}")
    print("\n".join([header, "", table(rows, peak, precision), "", *judged]))
    Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.output).write_text(json.dumps({"machine": here, "precision": precision, "peak_flops": peak,
                                             "gradient_checkpointing": opts.gradient_checkpointing,
                                             "isa": opts.isa, "rows": rows, "verdicts": judged}, indent=2))
    print(f"wrote {opts.output}")
    if not opts.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
