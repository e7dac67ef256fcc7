"""Time to the first training step, split where it goes: starting Python and importing the libraries, reading and
tokenizing the data, loading the model and setting up training. Marked as each phase begins; recorded in run.json
(`startup_seconds`) and said once training begins, so a short job's fixed costs are in plain sight."""

from __future__ import annotations

import time

_marks: dict[str, float] = {}
_runs = 0  # training runs this process has begun (the Python API can run several)


def mark(phase: str) -> None:
    """Note when `phase` began in this process: "data" begins a run, "model" follows it. Between them, "resolve" and
    "resolved" bracket finding the model (a download, the embedded model's one-time conversion), which counts as
    model time though it happens before the data is encoded (encoding needs the model's tokenizer)."""
    global _runs
    if phase == "data":
        _runs += 1
        _marks.clear()
    _marks[phase] = time.time()


def process_start() -> float:
    """When this process started (seconds since the epoch), from the kernel's record of it."""
    import psutil

    return psutil.Process().create_time()


def startup_seconds(now: float | None = None) -> dict[str, float]:
    """{imports, data, model, total}: seconds from the process's start (for a later run in the same process, from
    that run's start: its imports are done) to `now` (default: this moment)."""
    now = now or time.time()
    data = _marks.get("data", now)
    began = process_start() if _runs <= 1 else data
    model = _marks.get("model", data)
    resolving = _marks["resolved"] - _marks["resolve"] if {"resolve", "resolved"} <= _marks.keys() else 0.0
    parts = {"imports": data - began, "data": model - data - resolving, "model": now - model + resolving,
             "total": now - began}
    return {name: round(max(seconds, 0.0), 2) for name, seconds in parts.items()}


def describe(parts: dict[str, float]) -> str:
    return (f"first step after {parts['total']:.1f} s: imports {parts['imports']:.1f} s, data {parts['data']:.1f} s, "
            f"model and training setup {parts['model']:.1f} s")
