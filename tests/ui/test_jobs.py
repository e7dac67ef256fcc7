"""The UI's jobs and path checks without a browser: a job outlives the UI object that started it, Stop ends its
whole process group, and paths outside the allowed folders are refused with a message."""

from __future__ import annotations

import time

import pytest

from tunestack.ui.context import UiContext
from tunestack.ui.jobs import Jobs
from tunestack.ui.paths import PathNotAllowedError
from ui_helpers import free_port


@pytest.fixture()
def job_env(monkeypatch):
    """Jobs inherit the environment: the test session's HF_HOME and offline hub (helpers.cli_env)."""
    from helpers import cli_env

    for key, value in cli_env().items():
        monkeypatch.setenv(key, value)


def test_a_job_is_found_again_and_stopped_by_a_restarted_ui(tmp_path, job_env):
    jobs = Jobs(tmp_path / ".ui-jobs")
    job = jobs.start("ui", ["ui", "--port", str(free_port()), "--runs_dir", str(tmp_path / "runs")])
    assert job.command.startswith("tunestack ui --port ") and job.alive() and job.returncode() is None

    again = Jobs(tmp_path / ".ui-jobs")  # a restarted UI: no process handle, only the record
    [found] = again.list(kind="ui")
    assert found.id == job.id and found.process is None and found.alive() and found.status() == "running"
    assert [j.id for j in again.running()] == [job.id]
    found.stop(timeout=30)
    assert not found.alive() and not job.alive()
    assert found.status() == "interrupted"
    deadline = time.monotonic() + 10
    while job.record.get("returncode") is None and time.monotonic() < deadline:  # the starter's reaper records it
        time.sleep(0.1)
    assert Jobs(tmp_path / ".ui-jobs").get(job.id).returncode() == job.returncode() is not None
    assert again.running() == []


def test_a_failed_command_leaves_its_error_in_the_log(tmp_path, job_env):
    jobs = Jobs(tmp_path / ".ui-jobs")
    job = jobs.start("sft", ["sft", "--lora_rank", "-1"])
    job.process.wait(timeout=120)
    assert job.returncode() == 2 and job.status() == "failed"
    assert job.log_tail(1) == "tunestack sft: error: --lora_rank: expected a positive number, got -1"


def test_paths_outside_the_allowed_folders_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text("{}\n")
    ctx = UiContext(runs_root=tmp_path / "runs")
    assert ctx.allowed_paths == [tmp_path.resolve(), (tmp_path / "runs").resolve()]
    given = UiContext(runs_root=tmp_path / "runs", allowed_paths=[tmp_path / "data"])
    assert given.allowed_paths == [(tmp_path / "data").resolve(), (tmp_path / "runs").resolve()]  # runs always
    assert ctx.check_path("data.jsonl") == (tmp_path / "data.jsonl").resolve()
    with pytest.raises(PathNotAllowedError, match="outside the folders this UI may read"):
        ctx.check_path("../../etc/passwd")
    (tmp_path / "escape").symlink_to("/etc")
    with pytest.raises(PathNotAllowedError, match="outside the folders"):
        ctx.check_path("escape/hostname")  # a link out of the folder counts where it leads
    with pytest.raises(PathNotAllowedError, match="no such file or folder"):
        ctx.check_path("missing.jsonl")
    assert ctx.check_path("runs/new-run", must_exist=False) == (tmp_path / "runs" / "new-run").resolve()
