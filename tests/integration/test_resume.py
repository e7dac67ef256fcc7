"""kill -9 at any moment, then --resume: the losses equal an uninterrupted run's, step for step."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from helpers import CHAT_ROWS, cli, cli_env, write_jsonl

FLAGS = ["--max_steps", "12", "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "4",
         "--lora_dropout", "0.1", "--learning_rate", "5e-3", "--seed", "7"]


def losses(run) -> dict[int, tuple]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    reference = root / "reference"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(reference), *FLAGS)
    return tiny_model_dir, data, losses(reference)


def last_step(run) -> int:
    """The last step metrics.jsonl logs so far; a line still being written is ignored."""
    steps = [0]
    for line in (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []:
        try:
            steps.append(json.loads(line).get("step", 0))
        except json.JSONDecodeError:
            pass
    return max(steps)


def kill_when(run, data, model, condition, timeout=240):
    args = [sys.executable, "-m", "tunestack", "sft", "--model", str(model), "--dataset", str(data),
            "--output_dir", str(run), *FLAGS]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=cli_env())
    deadline = time.time() + timeout
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("moment", ["after-first-checkpoint", "while-saving", "random"])
def test_resume_after_kill_matches_uninterrupted_run(setup, tmp_path, moment):
    model, data, reference = setup
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    if moment == "after-first-checkpoint":
        condition = lambda: (ckpt / "checkpoint-3" / "tunestack_complete.json").exists()  # noqa: E731
    elif moment == "while-saving":
        condition = lambda: (ckpt / "checkpoint-6").exists()  # noqa: E731  (checkpoint-6 is being written)
    else:  # a random moment once training has begun, at the latest once step 9 of 12 is logged
        delay, seen = random.Random().uniform(0, 3), []

        def condition():
            if not seen and (run / "run.json").exists():
                seen.append(time.time())
            return bool(seen) and (time.time() - seen[0] > delay or last_step(run) >= 9)
    kill_when(run, data, model, condition)
    assert json.loads((run / "run.json").read_text())["status"] == "running", "the kill must land mid-training"
    assert not (run / "final").exists() and last_step(run) < 12
    result = cli("sft", "--output_dir", str(run), "--resume")
    assert json.loads((run / "run.json").read_text())["status"] == "completed", result.stderr
    resumed = losses(run)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_killed_after_the_last_checkpoint_resumes_by_writing_final(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "6",
        "--save_steps", "3", "--logging_steps", "1")
    adapter = (run / "final" / "adapter_model.safetensors").read_bytes()
    # What a kill -9 between sealing the last checkpoint and writing final/ leaves behind.
    import shutil

    shutil.rmtree(run / "final")
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "status": "running"}))
    cli("sft", "--output_dir", str(run), "--resume")
    assert (run / "final" / "adapter_model.safetensors").read_bytes() == adapter
    assert max(losses(run)) == 6
    assert "already complete" in cli("sft", "--output_dir", str(run), "--resume").stderr
