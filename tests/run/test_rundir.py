"""The run directory never takes a half-written checkpoint as the latest, and never clobbers a run."""

import pytest

from tunestack.errors import TunestackError
from tunestack.run import RunDir
from tunestack.run.rundir import COMPLETE_MARKER


def make_checkpoint(run: RunDir, step: int, sealed: bool):
    path = run.checkpoints / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x" * 10)
    if sealed:
        run.mark_checkpoint_complete(path, step, keep=10)
    return path


def test_unsealed_checkpoint_is_never_the_latest(tmp_path):
    run = RunDir(tmp_path / "run")
    make_checkpoint(run, 3, sealed=True)
    make_checkpoint(run, 6, sealed=True)
    half = make_checkpoint(run, 9, sealed=False)  # what a kill -9 mid-save leaves
    assert run.latest_checkpoint().name == "checkpoint-6"
    assert run.discard_incomplete_checkpoints() == [half]
    assert not half.exists() and run.latest_checkpoint().name == "checkpoint-6"


def test_rotation_keeps_the_newest_sealed_checkpoints(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in (2, 4, 6):
        path = make_checkpoint(run, step, sealed=False)
        run.mark_checkpoint_complete(path, step, keep=2)
    assert [p.name for p in run.complete_checkpoints()] == ["checkpoint-4", "checkpoint-6"]
    assert (run.checkpoints / "checkpoint-6" / COMPLETE_MARKER).is_file()


def test_existing_run_is_not_clobbered(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    run.write_manifest({"status": "completed"})
    with pytest.raises(TunestackError, match="not empty \\(status: completed\\).*--resume.*--overwrite_output_dir"):
        RunDir(run.path).prepare(resume=False, overwrite=False)
    with pytest.raises(TunestackError, match="no run to resume"):
        RunDir(tmp_path / "elsewhere").prepare(resume=True, overwrite=False)
    RunDir(run.path).prepare(resume=False, overwrite=True)
    assert not run.exists()


def test_metrics_after_a_resumed_step_are_forgotten(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    for step in range(1, 8):
        run.append_metrics({"step": step, "loss": 1.0 / step})
    run.truncate_metrics(4)
    assert [m["step"] for m in run.read_metrics()] == [1, 2, 3, 4]
