"""Jobs: the CLI commands the web UI starts, each a `python -m tunestack ...` subprocess recorded on disk.

A job is one JSON file in the state folder (RUNS/.ui-jobs/ID.json) plus its log (ID.log), so a reopened page or a
restarted `tunestack ui` finds the jobs still running. Each job runs in its own process group: Stop sends SIGTERM
to the whole group (torchrun's workers included), which a training run answers by saving a checkpoint and ending
with status `interrupted`; SIGKILL follows only if it does not exit in time.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from tunestack.progress import ENDED, read_events, latest


class Job:
    """One started command. Its record is the JSON file; the live process handle exists only in the UI process
    that started it (a restarted UI checks the pid and its start time instead)."""

    def __init__(self, record: dict, record_path: Path, process: subprocess.Popen | None = None):
        self.record = record
        self.record_path = record_path
        self.process = process

    id = property(lambda self: self.record["id"])
    kind = property(lambda self: self.record["kind"])
    argv = property(lambda self: list(self.record["argv"]))
    pid = property(lambda self: self.record["pid"])
    started = property(lambda self: self.record["started"])
    log_path = property(lambda self: Path(self.record["log_path"]))
    stopped = property(lambda self: bool(self.record.get("stopped")))

    @property
    def directory(self) -> Path | None:
        return Path(self.record["directory"]) if self.record.get("directory") else None

    @property
    def command(self) -> str:
        """The command line to copy into a terminal: `tunestack KIND --flag value ...`, shell-quoted."""
        return shlex.join(["tunestack", *self.argv])

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        if self.record.get("returncode") is not None:
            return False
        return _same_process_alive(self.pid, self.record.get("create_time"))

    def returncode(self) -> int | None:
        """The exit status; None while running. An exit that no UI process saw (the UI was restarted meanwhile)
        reads as 0 when the job's events ended `completed`, else 1."""
        if self.process is not None:
            return self.process.poll()
        if self.record.get("returncode") is not None:
            return self.record["returncode"]
        if self.alive():
            return None
        return 0 if self.status() == "completed" else 1

    def status(self) -> str:
        """running, completed, interrupted or failed: the events' end status where there is one, else
        `interrupted` after Stop, else what the exit status says."""
        if self.alive():
            return "running"
        # Only this job's events: a resumed run's folder also holds the end of the run it continues.
        events = [e for e in read_events(self.directory) if e.get("time", 0) >= self.started - 1] \
            if self.directory else []
        ended = latest(events)["status"]
        if ended in ENDED:
            return ended
        if self.stopped:
            return "interrupted"
        return "completed" if self.returncode() == 0 else "failed"

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM to the job's process group, wait up to `timeout` seconds, then SIGKILL; returns the exit status."""
        if not self.alive():
            return self.returncode()
        self.record["stopped"] = True
        self._save()
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            _signal_group(self.pid, signal.SIGKILL)
            while self.alive() and time.monotonic() < deadline + 10:
                time.sleep(0.1)
        return self.returncode()

    def log_tail(self, n_lines: int = 40) -> str:
        """The last `n_lines` of the job's output (progress-bar redraws collapsed to their latest state)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(os.path.getsize(self.log_path) - 256 * 1024, 0))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = (line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n"))
        return "\n".join(deque((line for line in lines if line.strip()), maxlen=n_lines))

    def _record_exit(self) -> None:
        """Wait for the process (in a thread of the UI that started it) and write its exit status."""
        self.record["returncode"] = self.process.wait()
        self.record["ended"] = round(time.time(), 3)
        self._save()

    def _save(self) -> None:
        # A name per writer: the thread recording the exit and a Stop may save at the same moment.
        tmp = self.record_path.with_name(f".{self.record_path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self.record, indent=2))
        os.replace(tmp, self.record_path)

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.command!r}, pid={self.pid})"


class Jobs:
    """The jobs recorded in `state_dir`, newest first."""

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self._live: dict[str, Job] = {}  # jobs this process started, with their Popen handles
        self._lock = threading.Lock()

    def start(self, kind: str, argv: list[str], directory: str | Path | None = None) -> Job:
        """Run `python -m tunestack ARGV` in a new process group, its output going to STATE_DIR/ID.log."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(2)}"
        log_path = self.state_dir / f"{job_id}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log_path, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "tunestack", *argv], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        record = {"id": job_id, "kind": kind, "argv": list(argv),
                  "directory": str(Path(directory).resolve()) if directory else None, "pid": process.pid,
                  "create_time": _create_time(process.pid), "started": round(time.time(), 3),
                  "log_path": str(log_path), "returncode": None}
        job = Job(record, self.state_dir / f"{job_id}.json", process)
        job._save()
        with self._lock:
            self._live[job_id] = job
        threading.Thread(target=job._record_exit, name=f"job-{job_id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            if job_id in self._live:
                return self._live[job_id]
        path = self.state_dir / f"{job_id}.json"
        return self._load(path) if path.is_file() else None

    def list(self, kind: str | None = None) -> list[Job]:
        """Every recorded job (of `kind`), newest first."""
        jobs = [self.get(path.stem) for path in self.state_dir.glob("*.json")] if self.state_dir.is_dir() else []
        jobs = [job for job in jobs if job is not None and (kind is None or job.kind == kind)]
        return sorted(jobs, key=lambda job: job.started, reverse=True)

    def running(self, kind: str | None = None, directory: str | Path | None = None) -> list[Job]:
        """The jobs still running (of `kind`, writing to `directory`)."""
        wanted = str(Path(directory).resolve()) if directory else None
        return [job for job in self.list(kind) if job.alive()
                and (wanted is None or job.record.get("directory") == wanted)]

    @staticmethod
    def _load(path: Path) -> Job | None:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # being replaced this instant, or not one of ours
        return Job(record, path) if isinstance(record, dict) and "id" in record else None


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same_process_alive(pid: int, create_time: float | None) -> bool:
    """The recorded process still runs (and the pid was not reused by another process since)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (
            create_time is None or abs(process.create_time() - create_time) < 1.0)
    except psutil.Error:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session made the job the leader of a group whose id is its pid
    except ProcessLookupError:
        pass
