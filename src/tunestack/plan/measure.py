"""Measure a run on this machine: the real `tunestack sft` for a few steps in a subprocess, its step times (from
metrics.jsonl) and its peak memory (as the run logs it: the process's own peak resident memory; on a GPU,
torch.cuda.max_memory_allocated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from tunestack.errors import TunestackError


@dataclass(frozen=True)
class Measured:
    """Training steps timed on this machine with the run's own flags."""

    first_step: float
    """Seconds of the first step: loading the batch pipeline, first touch of the weights, allocator growth."""
    step: float
    """Mean seconds of the steps after it."""
    tokens_per_s: float
    """Real tokens per second over the steps after the first."""
    steps: int
    peak_bytes: int
    """Peak resident memory of the process (on a GPU: the largest torch.cuda.max_memory_allocated logged)."""


def run_measured(groups, steps: int, env: dict | None = None) -> Measured:
    """Run `tunestack sft` with `groups`' flags for `steps` optimizer steps in a temporary run directory; measure it."""
    from tunestack.plan.report import sft_flags

    train = replace(groups.train, output_dir=None, max_steps=steps, logging_steps=1, save_steps=10**9,
                    eval_tasks=[], resume=False, overwrite_output_dir=True)
    with tempfile.TemporaryDirectory(prefix="tunestack-measure-") as folder:
        log = Path(folder) / "stderr.txt"
        command = [sys.executable, "-m", "tunestack", "sft", *sft_flags(replace(groups, train=train)),
                   "--output_dir", str(Path(folder) / "run")]
        with open(log, "w") as errors:
            process = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=errors,
                                     env={**os.environ, **(env or {})})
        if process.returncode:
            tail = "\n".join(log.read_text().strip().splitlines()[-5:])
            raise TunestackError(f"--measure: the training run failed ({process.returncode}):\n{tail}")
        records = [json.loads(line) for line in (Path(folder) / "run" / "metrics.jsonl").read_text().splitlines()
                   if line.strip()]
    return _from_records([r for r in records if "tokens_per_s" in r])


def _from_records(records: list[dict]) -> Measured:
    """Step times from consecutive records: each covers the tokens since the previous one at its tokens/s."""
    seconds, seen = [], 0
    for record in records:
        seconds.append((record["tokens_seen"] - seen) / max(record["tokens_per_s"], 1e-9))
        seen = record["tokens_seen"]
    if len(seconds) < 2:
        raise TunestackError("--measure: the run logged fewer than two steps; raise --measure_steps")
    later = sum(seconds[1:])
    peak = max(r.get("memory_mb", 0) for r in records) * 2**20
    return Measured(seconds[0], later / (len(seconds) - 1), (seen - records[0]["tokens_seen"]) / later,
                    len(seconds), int(peak))
