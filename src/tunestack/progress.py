"""Progress is data: long work (training, export, evaluation) appends events to `events.jsonl` in its own directory.

The terminal progress bar, the web UI and the wizard all read these events; none of them scrapes printed text.

One event is one JSON object on one line:

    {"time": 1764700000.1, "phase": "train", "kind": "progress", "step": 12, "total": 70, "eta_s": 41.0,
     "figures": {"loss": 1.93, "learning_rate": 0.0002, "tokens_per_s": 850.2}}

- `phase`: what is going on. Training: "data", "load", "train", "save", "evaluate"; export: "load", "merge",
  "quantize", "write", "perplexity", "gguf", "upload"; evaluation: "evaluate".
- `kind`: "start" (a phase begins; `total` when known, `step` where it resumes), "progress" (`step` of `total`
  done), "message" (`message`: a line for the user), "end" (the work is over; `status` is completed, interrupted
  or failed, and `message` says why).
- `figures`: finite numbers the phase reports beside the step (loss, learning rate, tokens_per_s, margins,
  accuracy, ...); `eta_s` is the time left, estimated from the phase's pace so far.
- A start may name what it counts: `task` (the benchmark an evaluation phase scores) and `unit` ("step", "q").

A resumed run appends to the same file: an event after an "end" begins a new attempt. A fresh run (or an export
over an old one) starts the file over.

Writers: `Progress(directory)`. Readers: `read_events(directory)` for everything so far, `EventTail` to pick up
only what is new (the UI polls it), `follow()` to wait for the end, `latest()` to sum a stream up.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

EVENTS_FILE = "events.jsonl"
ENDED = ("completed", "interrupted", "failed")


def events_path(directory: str | Path) -> Path:
    return Path(directory) / EVENTS_FILE


class Progress:
    """Appends events for one piece of work to DIRECTORY/events.jsonl and shows them on listeners (the terminal bar).

    Only one process of a multi-process run should hold a writer (rank 0); the others pass `enabled=False`.
    With `defer=True` events are kept in memory (the listeners still see them at once) until `open()`: a run's
    directory is checked, or cleared for a fresh run, only after its data is read, and until then it may hold
    another run. A writer never opened writes nothing. `directory=None` writes nothing either: listeners only."""

    def __init__(self, directory: str | Path | None, *, enabled: bool = True,
                 listeners: list[Callable[[dict], None]] = (), defer: bool = False):
        self.path = events_path(directory) if directory is not None else None
        self.enabled = enabled
        self.listeners = list(listeners)
        self.status: str | None = None
        """The status of the end event this writer wrote, None before."""
        self._held: list[dict] | None = [] if defer else None
        self._phase: str | None = None
        self._started = (0.0, 0)
        self._total: int | None = None

    def open(self) -> None:
        """Write the events held so far and every later one as it comes."""
        held, self._held = self._held or [], None
        for event in held:
            self._write(event)

    def emit(self, kind: str, phase: str | None = None, **fields) -> dict:
        event = {"time": round(time.time(), 3), "phase": phase or self._phase or "work", "kind": kind}
        event.update({k: v for k, v in fields.items() if v is not None})
        if not self.enabled:
            return event
        if self._held is not None:
            self._held.append(event)
        else:
            self._write(event)
        for listener in self.listeners:
            listener(event)
        return event

    def _write(self, event: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write() of a whole line: a reader never sees half an event, and a kill loses at most the last one.
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event, default=_plain) + "\n")

    def start(self, phase: str, total: int | None = None, step: int = 0, message: str | None = None,
              **fields) -> dict:
        """Phase `phase` begins, with `total` units to do when known, `step` of them done already (a resumed run);
        `fields` name what it counts (`task`, `unit`)."""
        self._phase, self._total, self._started = phase, total, (time.perf_counter(), step)
        return self.emit("start", phase, step=step, total=total, message=message, **fields)

    def step(self, step: int, total: int | None = None, **figures) -> dict:
        """`step` of `total` units done in the current phase; `figures` are shown beside it (those that are not finite
        numbers, a diverged loss among them, are left out)."""
        total = total if total is not None else self._total
        eta = None
        began, first = self._started
        if total and step > first:
            rate = (step - first) / max(time.perf_counter() - began, 1e-9)
            eta = round(max(total - step, 0) / rate, 1)
        numbers = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in figures.items() if _finite(v)}
        return self.emit("progress", step=step, total=total, eta_s=eta, figures=numbers or None)

    def message(self, text: str) -> dict:
        return self.emit("message", message=text)

    def end(self, status: str, message: str | None = None) -> dict:
        if status not in ENDED:
            raise ValueError(f"status must be one of {', '.join(ENDED)}, not {status!r}")
        self.status = status
        return self.emit("end", status=status, message=message)

    def end_with(self, error: BaseException) -> dict:
        """The end of work that `error` stopped: interrupted for Ctrl-C or SIGTERM (a KeyboardInterrupt), failed with
        the error's own words otherwise."""
        from tunestack.errors import TunestackError

        if isinstance(error, KeyboardInterrupt):
            return self.end("interrupted", str(error) or "interrupted")
        text, kind = str(error).strip(), type(error).__name__
        if isinstance(error, TunestackError) and text:  # written for the user already
            return self.end("failed", text)
        return self.end("failed", f"{kind}: {text}" if text else kind)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """Ends the work unless an end was written already: completed, or as `end_with(error)` says."""
        if self.status is not None:
            return
        if error is None:
            self.end("completed")
        else:
            self.end_with(error)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def read_events(directory: str | Path) -> list[dict]:
    """Every whole event written so far (a line still being written is left for the next read)."""
    events, _ = EventTail(directory).read()
    return events


def events_size(directory: str | Path) -> int:
    """The size of the events file now (0 when there is none): the offset from which `EventTail` or `follow()`
    read only what a command started from now on (a --resume appends to its run's file) writes."""
    try:
        return os.path.getsize(events_path(directory))
    except OSError:
        return 0


class EventTail:
    """Reads the events appended since the last call, from `offset` on at first; survives the file appearing late,
    and starts over from the beginning when the file is started over (a new run or export in the same folder)."""

    def __init__(self, directory: str | Path, offset: int = 0):
        self.path = events_path(directory)
        self.offset = offset
        self._file: tuple[int, bytes] | None = None  # the file read so far: its inode and its first event

    def read(self) -> tuple[list[dict], int]:
        try:
            fh = open(self.path, "rb")
        except OSError:
            return [], self.offset
        with fh:
            # A file started over has another first event (each carries its time), even where the new file reuses
            # the old one's inode or has grown past the old size; a file moved into place keeps both.
            stat, first = os.fstat(fh.fileno()), fh.readline(4096)
            file = (stat.st_ino, first) if first.endswith(b"\n") else None
            if stat.st_size < self.offset or None not in (file, self._file) and file != self._file:
                self.offset = 0
            self._file = file or self._file
            fh.seek(self.offset)
            chunk = fh.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(whole)
        events = []
        for line in whole.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events, self.offset


def follow(directory: str | Path, poll_s: float = 0.5, alive: Callable[[], bool] | None = None,
           offset: int = 0) -> Iterator[dict]:
    """Yield events as they are written, from `offset` on.

    Without `alive`, it returns after an "end" event that nothing follows yet. With `alive` (whether the writing
    process still runs), it returns once `alive()` is false and everything the process wrote has been read, so
    the end of an earlier attempt of a resumed run does not stop it, nor does a process that died without an end.
    To follow only a command started now, pass `offset=events_size(directory)` taken before starting it."""
    tail = EventTail(directory, offset)
    while True:
        running = alive is None or alive()  # asked before reading: what it wrote before it ended is read now
        events, _ = tail.read()
        yield from events
        if alive is None and events and events[-1].get("kind") == "end":
            return
        if not running:
            return
        time.sleep(poll_s)


def latest(events: list[dict]) -> dict:
    """A summary of a stream of events: the phase (and `task`), the last step/total/ETA, the last figures, the
    status, the messages and the time of the last event. An event after an "end" begins a new attempt
    (a resumed run), and the summary is of the newest attempt only."""
    state = _fresh()
    for event in events:
        kind = event.get("kind")
        if state["status"] is not None and kind != "end":
            state = _fresh()
        state["phase"] = event.get("phase", state["phase"])
        state["time"] = event.get("time", state["time"])
        if kind == "start":
            state.update(step=event.get("step", 0), total=event.get("total"), eta_s=None, task=event.get("task"))
        elif kind == "progress":
            state.update(step=event.get("step"), total=event.get("total", state["total"]), eta_s=event.get("eta_s"))
            state["figures"].update(event.get("figures") or {})
        elif kind == "message":
            state["messages"].append(event.get("message", ""))
        elif kind == "end":
            state["status"] = event.get("status")
            if event.get("message"):
                state["messages"].append(event["message"])
    return state


def _fresh() -> dict:
    return {"phase": None, "task": None, "step": None, "total": None, "eta_s": None, "figures": {}, "status": None,
            "messages": [], "time": None}


class TerminalBar:
    """The terminal's progress bar, drawn from events only: a listener for `Progress`. A phase with a `total` gets a
    bar (named after its `task`, else the phase), closed when the total is reached, the next phase starts or the
    work ends."""

    SHOWN = ("loss", "rewards/margins", "rewards/accuracies", "accuracy", "reward", "kl")

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None

    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "start":
            self.close()
            if event.get("total"):
                from tqdm.auto import tqdm

                self.bar = tqdm(total=event["total"], initial=event.get("step", 0),
                                desc=event.get("task") or event.get("phase"), unit=event.get("unit", "it"),
                                file=self.stream, dynamic_ncols=True)
        elif kind == "progress" and self.bar is not None:
            if event.get("total") and event["total"] != self.bar.total:
                self.bar.total = event["total"]
            figures = event.get("figures") or {}
            shown = {key.rsplit("/", 1)[-1]: _short(figures[key]) for key in self.SHOWN if key in figures}
            if figures.get("tokens_per_s"):
                shown["tok/s"] = _short(figures["tokens_per_s"])
            if shown:
                self.bar.set_postfix(shown, refresh=False)
            self.bar.update(event.get("step", self.bar.n) - self.bar.n)
            if self.bar.total and self.bar.n >= self.bar.total:
                self.close()
        elif kind == "end":
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
