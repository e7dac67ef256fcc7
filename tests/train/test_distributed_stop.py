"""SIGTERM to a multi-process run's launcher group (what the web UI's Stop sends): the launcher passes it on to its
workers, which stop together at one step's end with a sealed checkpoint, and the run ends `interrupted`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import CHAT_ROWS, cli, cli_env, write_jsonl
from tunestack.progress import latest, read_events
from tunestack.train.stopping import EXIT_CODE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank_cleanly(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tunestack", "sft", "--model", str(tiny_model_dir), "--dataset",
            str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)), "--output_dir", str(run), "--nproc", "2",
            "--per_device_train_batch_size", "2", "--max_steps", "200", "--save_steps", "1000", "--logging_steps", "1",
            "--master_port", str(free_port())]
    launcher = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(),
                                start_new_session=True)
    deadline = time.time() + 400
    while launcher.poll() is None and time.time() < deadline:
        state = latest(read_events(run)) if run.exists() else {}
        if state.get("phase") == "train" and (state.get("step") or 0) >= 2:
            break
        time.sleep(0.05)
    os.killpg(launcher.pid, signal.SIGTERM)  # the workers run in sessions of their own: only the launcher gets it
    _, stderr = launcher.communicate(timeout=400)
    assert launcher.returncode == EXIT_CODE, stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert read_events(run)[-1]["status"] == "interrupted"
    (sealed,) = run.glob("checkpoints/checkpoint-*/tunestack_complete.json")
    stopped = json.loads(sealed.read_text())["step"]
    assert {p.name for p in sealed.parent.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert 2 <= stopped < 200 and not (run / "final").exists()

    cli("sft", "--output_dir", str(run), "--resume", "--max_steps", str(stopped + 1), "--nproc", "1")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
