"""Web UI test helpers: `tunestack ui` as a real subprocess on a free port, and the form moves of the browser tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers import cli_env

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chromium_binary() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


class UiServer:
    """A running `tunestack ui`: its URL, working folder, runs folder and output."""

    def __init__(self, workdir: Path, runs: Path, extra: list[str] = ()):
        self.workdir, self.runs, self.port = workdir, runs, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(workdir / "ui-server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunestack", "ui", "--port", str(self.port), "--runs_dir", str(runs), *extra],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=cli_env())

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tunestack ui exited ({self.process.returncode}):\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"tunestack ui did not answer in {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.workdir / "ui-server.log").read_text()[-4000:]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        stop_jobs(self.runs / ".ui-jobs")


def stop_jobs(state_dir: Path) -> None:
    """End the process groups of jobs a test left running (each job leads its own group)."""
    for record in state_dir.glob("*.json"):
        try:
            os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def choose(page, elem_id: str, text: str) -> None:
    """Type `text` into a dropdown that takes values of its own (model, dataset) and confirm it."""
    box = page.locator(f"#{elem_id} input")
    box.fill(text)
    box.press("Enter")
    page.keyboard.press("Escape")


def set_number(page, elem_id: str, value) -> None:
    page.locator(f"#{elem_id} input").fill(str(value))


def open_ui(page, server) -> None:
    page.goto(server.url)
    page.wait_for_selector("#train-start")
