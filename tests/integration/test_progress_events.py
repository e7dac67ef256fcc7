"""Training writes its progress as events into the run directory, through the real CLI; SIGTERM stops a run cleanly
at a step's end with a sealed checkpoint, and --resume continues from it."""

import json
import signal
import subprocess
import sys
import time

from helpers import CHAT_ROWS, cli, cli_env, write_jsonl
from tunestack.progress import latest, read_events
from tunestack.train.stopping import EXIT_CODE

FLAGS = ["--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--seed", "7"]


def test_a_run_writes_its_phases_steps_and_end(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)),
        "--output_dir", str(run), "--max_steps", "4", "--logging_steps", "2", "--save_steps", "2",
        "--eval_tasks", "arith", "--eval_limit", "2", *FLAGS)
    events = read_events(run)
    starts = [e["phase"] for e in events if e["kind"] == "start"]
    assert starts[:4] == ["data", "load", "train", "save"] and set(starts[4:]) == {"evaluate"}, starts
    assert any(e.get("task") == "arith" and e.get("total") == 2 for e in events if e["kind"] == "start")
    train = next(e for e in events if e["kind"] == "start" and e["phase"] == "train")
    assert (train["step"], train["total"]) == (0, 4)
    steps = [e for e in events if e["kind"] == "progress" and e["phase"] == "train"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and all(e["total"] == 4 for e in steps)
    assert all(e["figures"]["learning_rate"] >= 0 and e["figures"]["tokens_per_s"] > 0 for e in steps)
    assert [e["step"] for e in steps if "loss" in e["figures"]] == [1, 2, 4]  # logged steps: the first, every 2nd
    assert any(e.get("message") == "saved checkpoint-2" for e in events)
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "completed"
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_sigterm_stops_at_a_step_end_with_a_checkpoint_and_resume_continues(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tunestack", "sft", "--model", str(tiny_model_dir), "--dataset",
            str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)), "--output_dir", str(run), "--max_steps", "200",
            "--save_steps", "1000", "--logging_steps", "1", *FLAGS]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        state = latest(read_events(run)) if run.exists() else {}
        if state.get("phase") == "train" and (state.get("step") or 0) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CODE, stderr[-3000:]
    assert f"continue with: tunestack sft --output_dir {run} --resume" in stderr
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    end = read_events(run)[-1]
    assert end["kind"] == "end" and end["status"] == "interrupted" and "--resume" in end["message"]
    sealed = sorted(run.glob("checkpoints/checkpoint-*/tunestack_complete.json"))
    assert len(sealed) == 1, sealed  # the one the stop saved: --save_steps 1000 would save none before step 200
    stopped = json.loads(sealed[0].read_text())["step"]
    last = max(e["step"] for e in read_events(run) if e["kind"] == "progress")
    assert 2 <= stopped == last < 200 and not (run / "final").exists()

    offset = (run / "events.jsonl").stat().st_size
    cli("sft", "--output_dir", str(run), "--resume", "--max_steps", str(stopped + 2))
    resumed = [json.loads(line) for line in (run / "events.jsonl").read_bytes()[offset:].splitlines()]
    train = next(e for e in resumed if e["kind"] == "start" and e["phase"] == "train")
    assert (train["step"], train["total"]) == (stopped, stopped + 2)
    steps = [e["step"] for e in resumed if e["kind"] == "progress" and e["phase"] == "train"]
    assert steps == [stopped + 1, stopped + 2]
    assert resumed[-1]["status"] == "completed" and latest(read_events(run))["status"] == "completed"
    assert json.loads((run / "run.json").read_text())["status"] == "completed" and (run / "final").is_dir()
