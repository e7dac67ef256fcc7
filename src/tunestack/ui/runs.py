"""What the web UI shows of run directories: the list of runs, their loss curves and a run's progress line.

Progress comes from the run's events (events.jsonl) where the run writes them, and from metrics.jsonl otherwise;
nothing is read from printed text."""

from __future__ import annotations

import json
from pathlib import Path

from tunestack.progress import latest, read_events
from tunestack.run import RunDir

RUN_COLUMNS = ["run", "status", "method", "model", "steps", "final loss", "created"]


def find_runs(root: Path, max_depth: int = 2) -> list[Path]:
    """Run directories (those with a run.json) under `root`, newest first; hidden folders and checkpoints skipped."""
    found = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = [e for e in folder.iterdir() if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            return
        for entry in entries:
            if RunDir(entry).exists():
                found.append(entry)
            elif depth < max_depth and entry.name not in ("checkpoints", "final", "tensorboard"):
                walk(entry, depth + 1)

    walk(Path(root), 1)
    return sorted(found, key=lambda p: RunDir(p).manifest_path.stat().st_mtime, reverse=True)


def run_name(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def read_manifest(path: Path) -> dict:
    """run.json, or {} while it is being written or when it is unreadable."""
    try:
        return json.loads(RunDir(path).manifest_path.read_text())
    except (OSError, ValueError):
        return {}


def run_row(path: Path, root: Path) -> list:
    """One row of the Runs table (RUN_COLUMNS)."""
    manifest = read_manifest(path)
    losses = loss_points(path)
    steps = manifest.get("final_step") or (losses[-1]["step"] if losses else None)
    final_loss = manifest.get("final_loss") or (losses[-1]["loss"] if losses else None)
    return [run_name(path, root), manifest.get("status", "?"), manifest.get("command", "?"),
            manifest.get("base_model", "?"), steps if steps is not None else "",
            round(final_loss, 4) if isinstance(final_loss, (int, float)) else "", manifest.get("created", "")]


def loss_points(path: Path) -> list[dict]:
    """(step, loss) of each logged training step in metrics.jsonl."""
    try:
        records = RunDir(path).read_metrics()
    except (OSError, ValueError):  # a line being written this instant
        return []
    return [{"step": r["step"], "loss": r["loss"]} for r in records
            if isinstance(r.get("loss"), (int, float)) and "step" in r]


def progress(path: Path | None) -> dict:
    """Where a run is: `phase`, `step`, `total`, `eta_s`, `tokens_per_s`, `loss`, `status` (from the events,
    filled in from metrics.jsonl and run.json where the run writes no events), and `messages`."""
    events = read_events(path) if path is not None else []
    state = latest(events)
    if state["phase"] != "train" and any(e.get("phase") == "train" for e in events):
        # Saving or evaluating after training: the numbers worth showing are still the training's.
        trained = latest([e for e in events if e.get("phase") == "train"])
        state.update({key: trained[key] for key in ("step", "total", "eta_s", "figures")})
    figures = state.pop("figures")
    state["tokens_per_s"] = figures.get("tokens_per_s")
    state["loss"] = figures.get("loss")
    if path is None:
        return state
    metrics = [r for r in _safe_metrics(path) if "loss" in r]
    if metrics:
        last = metrics[-1]
        if state["step"] is None:
            state["step"] = last.get("step")
        state["tokens_per_s"] = state["tokens_per_s"] or last.get("tokens_per_s")
        state["loss"] = state["loss"] if state["loss"] is not None else last.get("loss")
    state["status"] = state["status"] or read_manifest(path).get("status")
    return state


def _safe_metrics(path: Path) -> list[dict]:
    try:
        return RunDir(path).read_metrics()
    except (OSError, ValueError):
        return []


def progress_text(state: dict, status: str | None = None) -> str:
    """One line of Markdown: status, phase, step/total, tokens/s, ETA, loss."""
    status = status or state.get("status") or "starting"
    parts = [f"**{status}**"]
    if state.get("phase") and status in ("running", "starting"):
        parts.append(state["phase"])
    if state.get("step") is not None:
        parts.append(f"step {state['step']}" + (f"/{state['total']}" if state.get("total") else ""))
    if state.get("tokens_per_s"):
        parts.append(f"{state['tokens_per_s']:,.0f} tokens/s")
    if state.get("eta_s") is not None and status == "running":
        parts.append(f"ETA {_duration(state['eta_s'])}")
    if isinstance(state.get("loss"), (int, float)):
        parts.append(f"loss {state['loss']:.4f}")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
