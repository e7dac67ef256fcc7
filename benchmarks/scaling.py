"""Training throughput of 1 and 2 processes under each engine tunestack offers (DDP, FSDP2, DeepSpeed ZeRO-2 and
ZeRO-3), with the scaling efficiency and the peak memory of each rank.

What runs. The same LoRA `tunestack sft` job through the real CLI: --steps optimizer steps of a global batch of
--global_batch examples of the built-in `arith` data at --max_length tokens. One process takes the whole batch;
two processes take half each, so every row trains on the same examples. tokens/s is the run's own figure over the
steps after the first (metrics.jsonl, counting every rank's tokens); the peak memory of each rank is the largest
resident set size its process reached, sampled from /proc every 0.1 s. Scaling efficiency = tokens/s of 2 processes
/ (2 x tokens/s of the single process). On a 2-core CPU two processes share the two cores that one process used
with two threads, so the ideal here is about 1.0x, not 2x: the table shows the engines' overhead.

Usage:
    python benchmarks/scaling.py                                  # every engine on the embedded model
    python benchmarks/scaling.py --engines ddp,fsdp2 --steps 10   # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = {"single": [], "ddp": [], "fsdp2": ["--fsdp"], "zero2": ["--deepspeed", "zero2"],
           "zero3": ["--deepspeed", "zero3"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_of(pid: int) -> int | None:
    try:
        for item in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
            if item.startswith(b"RANK="):
                return int(item[5:])
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def run_one(engine: str, args, work: Path) -> dict:
    procs = 1 if engine == "single" else 2
    run = work / engine
    cmd = [sys.executable, "-m", "tunestack", "sft", "--model", args.model, "--dataset", f"arith#{args.rows}",
           "--max_length", str(args.max_length), "--max_steps", str(args.steps), "--logging_steps", "1",
           "--save_steps", "100000", "--per_device_train_batch_size", str(args.global_batch // procs),
           "--output_dir", str(run), *ENGINES[engine]]
    if procs > 1:
        cmd += ["--nproc", "2", "--master_port", str(free_port())]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    while proc.poll() is None:
        for pid in [proc.pid] if procs == 1 else descendants(proc.pid):
            rank = 0 if procs == 1 else rank_of(pid)
            if rank is not None:
                peaks[rank] = max(peaks.get(rank, 0.0), rss_mb(pid))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"engine": engine, "error": proc.stderr.read()[-400:]}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    return {"engine": engine, "processes": procs, "tokens_per_s": round(sum(speeds) / len(speeds), 1),
            "peak_rss_mb_per_rank": {str(k): round(v) for k, v in sorted(peaks.items())},
            "final_loss": rows[-1]["loss"], "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--engines", default="single,ddp,fsdp2,zero2,zero3")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--global_batch", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--output", default="benchmarks/results/scaling.json")
    args = parser.parse_args()
    engines = args.engines.split(",")
    if "single" not in engines:
        engines.insert(0, "single")
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_one(engine, args, Path(tmp)) for engine in engines]
    single = next(r for r in results if r["engine"] == "single").get("tokens_per_s")
    print(f"{'engine':8} {'procs':>5} {'tokens/s':>9} {'efficiency':>10} {'peak RSS per rank (MB)':>24} {'loss':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['engine']:8} failed: {r['error']}")
            continue
        r["scaling_efficiency"] = round(r["tokens_per_s"] / (r["processes"] * single), 3) if single else None
        peaks = ", ".join(map(str, r["peak_rss_mb_per_rank"].values()))
        print(f"{r['engine']:8} {r['processes']:>5} {r['tokens_per_s']:>9} {r['scaling_efficiency']:>10} "
              f"{peaks:>24} {r['final_loss']:>8.4f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                               "settings": vars(args), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
