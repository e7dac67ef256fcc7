"""Runs `tunestack ...` commands in the foreground of this terminal for the wizard: the command line first, then a
progress bar drawn from the command's events; its stderr is kept in a log and shown only when it fails."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tunestack.progress import TerminalBar, follow

LOG = "wizard.log"


def shown(argv: list[str]) -> str:
    """`argv` as a line to paste into a shell."""
    return shlex.join(argv)


def run(argv: list[str], events: str | None = None, log_dir: str | None = None, show: bool = True) -> tuple[int, str]:
    """Run `argv` (which starts with "tunestack") and wait for it, drawing the events written to `events` meanwhile.
    Its stderr is appended to LOG_DIR/wizard.log when that folder exists. Returns the exit status and stdout
    (printed when `show`)."""
    print(f"$ {shown(argv)}", flush=True)
    started = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen([sys.executable, "-m", "tunestack", *argv[1:]], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err)
        try:
            _watch(process, events, started)
        except KeyboardInterrupt:
            process.wait()  # the command got the same Ctrl-C and ends in its own way
        out.seek(0), err.seek(0)
        stdout, stderr = (f.read().decode(errors="replace") for f in (out, err))
    log = _keep(argv, stderr, process.returncode, log_dir)
    if show and stdout.strip():
        print(stdout.rstrip())
    if process.returncode == 0:
        print(f"done in {time.time() - started:.0f} s", flush=True)
    else:
        print("\n".join([line for line in re.split(r"[\r\n]+", stderr) if line.strip()][-12:]))
        print(f"failed (exit {process.returncode})" + (f"; log: {log}" if log else ""), flush=True)
    return process.returncode, stdout


def attached(argv: list[str]) -> int:
    """Run `argv` on this terminal (an interactive chat, a server) until it ends or Ctrl-C stops it."""
    print(f"$ {shown(argv)}", flush=True)
    process = subprocess.Popen([sys.executable, "-m", "tunestack", *argv[1:]])
    try:
        return process.wait()
    except KeyboardInterrupt:
        return process.wait()


def _watch(process: subprocess.Popen, events: str | None, started: float) -> None:
    """Draw the command's progress events until it exits; without events, just wait."""
    bar = TerminalBar(sys.stdout)
    try:
        if events is not None:
            for event in follow(events, 0.5, alive=lambda: process.poll() is None):
                if event.get("time", started) >= started - 1:  # not the events of an earlier command in that folder
                    bar(event)
        process.wait()
    finally:
        bar.close()


def _keep(argv: list[str], stderr: str, code: int, log_dir: str | None) -> Path | None:
    """Append the command's stderr to the log; only into a folder that exists (an empty one created here would make
    a retried run refuse its --output_dir)."""
    if log_dir is None or not Path(log_dir).is_dir():
        return None
    log = Path(log_dir) / LOG
    with open(log, "a") as fh:
        fh.write(f"$ {shown(argv)}\n{stderr}\n(exit {code})\n")
    return log
