"""Several processes through the real CLI: DDP, FSDP2 and DeepSpeed ZeRO give the losses of one process with the
same global batch; a killed rank stops the run, run.json names it, and --resume continues exactly."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import CHAT_ROWS, cli, cli_env, write_jsonl

# fp32: the engines must agree to 1e-4, closer than bf16 rounding (the default on CPUs with AMX) allows.
STEPS = ["--max_steps", "4", "--logging_steps", "1", "--learning_rate", "1e-3", "--seed", "3", "--dtype", "fp32"]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(run) if "loss" in m}


@pytest.fixture(scope="module")
def single(tiny_model_dir, tmp_path_factory):
    """One process, batch 4: the reference every engine must reproduce with 2 processes of batch 2."""
    root = tmp_path_factory.mktemp("dist")
    data = write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    run = root / "single"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run),
        "--per_device_train_batch_size", "4", *STEPS)
    return tiny_model_dir, data, losses(run)


def two_processes(single, run, *engine):
    model, data, _ = single
    return cli("sft", "--model", str(model), "--dataset", str(data), "--output_dir", str(run), "--nproc", "2",
               "--per_device_train_batch_size", "2", "--master_port", str(free_port()), *STEPS, *engine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("engine", [[], ["--fsdp"]], ids=["ddp", "fsdp2"])
def test_two_processes_match_one(single, tmp_path, engine):
    run = tmp_path / "run"
    two_processes(single, run, *engine)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["processes"] == 2
    assert manifest["engine"] == ("fsdp2" if engine else "ddp")
    got, want = losses(run), single[2]
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-4), f"step {step}"
    assert (run / "final" / "adapter_model.safetensors").is_file()
    assert all(m.get("tokens_per_s", 1) > 0 for m in metrics(run))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3_offload"])
def test_deepspeed_matches_one_process(single, tmp_path, stage):
    pytest.importorskip("deepspeed")
    run = tmp_path / "run"
    two_processes(single, run, "--deepspeed", stage)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["engine"] == {"zero2": "deepspeed-zero2", "zero3_offload": "deepspeed-zero3-offload"}[stage]
    got, want = losses(run), single[2]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-4), f"step {step}"


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the workers the launcher started (read from their environment)."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = open(f"/proc/{pid}/status").read()
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        ranks = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RANK=")]
        if parent == launcher_pid and ranks:
            found[int(ranks[0])] = int(pid)
    return found


def test_killed_rank_stops_the_run_and_resume_continues_exactly(single, tmp_path):
    model, data, _ = single
    flags = ["--model", str(model), "--dataset", str(data), "--nproc", "2", "--per_device_train_batch_size", "2",
             "--max_steps", "8", "--save_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3",
             "--seed", "3", "--master_port", str(free_port())]
    reference = tmp_path / "reference"
    cli("sft", *flags, "--output_dir", str(reference))
    run = tmp_path / "run"
    launcher = subprocess.Popen([sys.executable, "-m", "tunestack", "sft", *flags, "--output_dir", str(run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=cli_env())
    sealed = run / "checkpoints" / "checkpoint-2" / "tunestack_complete.json"
    deadline = time.time() + 300
    while not sealed.exists() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victims = _rank_pids(launcher.pid)
    os.kill(victims[1], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)  # the other rank is stopped too: the launcher returns
    manifest = json.loads((run / "run.json").read_text())
    assert launcher.returncode != 0, "the kill must land before training ends"
    assert not (run / "final").exists()
    assert manifest["status"] == "failed" and manifest["failed_rank"] == 1 and manifest["failed_exitcode"] == -9
    assert "rank 1 failed" in stderr and "--resume" in stderr
    assert max(losses(run)) < 8

    cli("sft", "--output_dir", str(run), "--resume", "--master_port", str(free_port()))
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    got, want = losses(run), losses(reference)
    assert sorted(got) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-6), f"step {step}"


def test_bad_parallel_flags_are_reported_together(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 3}}))
    result = cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--nproc", "999", "--fsdp",
                 "--deepspeed", str(ds), "--tuner", "qlora", "--per_device_train_batch_size", "4", check=False)
    assert result.returncode == 2
    err = result.stderr
    assert "--nproc 999: this machine has" in err
    assert "--fsdp and --deepspeed" in err
    assert "train_micro_batch_size_per_gpu=8 but --per_device_train_batch_size is 4" in err
    assert "ZeRO-3) with --tuner qlora" in err


def test_port_in_use_is_refused_before_launching(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--nproc", "2",
                     "--master_port", str(port), "--output_dir", str(tmp_path / "run"), check=False)
    assert result.returncode == 2
    assert f"--master_port {port}: already in use" in result.stderr
    assert not (tmp_path / "run").exists()
