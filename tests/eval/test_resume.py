"""`tunestack eval` killed with SIGKILL mid-way continues with --resume from the answers in its cache, asking none of
them again, and its report and samples equal an uninterrupted run's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from helpers import cli, cli_env

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the tiny model gains nothing from more; on a shared CPU they spin and stall


def _eval_args(tiny_model_dir, mmlu_file, out) -> list[str]:
    return ["eval", "--model", str(tiny_model_dir), "--tasks", "mmlu,arith", "--task_data", f"mmlu={mmlu_file}",
            "--limit", "5", "--num_fewshot", "1", "--max_new_tokens", "12", "--batch_size", "2", "--dtype", "fp32",
            "--output_dir", str(out)]


def _lines(path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def _kill_mid_way(args: list[str], progress_file, at_least: int) -> None:
    """Run the CLI and SIGKILL it once `progress_file` holds `at_least` lines."""
    process = subprocess.Popen([sys.executable, "-m", "tunestack", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=cli_env(ONE_THREAD))
    deadline = time.time() + 300
    while _lines(progress_file) < at_least:
        assert process.poll() is None, f"ended ({process.returncode}) before it was killed"
        assert time.time() < deadline, "no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _report(out) -> dict:
    report = json.loads((out / "report.json").read_text())
    for task in report["tasks"].values():  # timings differ between runs
        task.pop("seconds"), task.pop("questions_per_second")
    return report


def test_eval_killed_mid_way_resumes_to_the_uninterrupted_result(tiny_model_dir, mmlu_file, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    cli(*_eval_args(tiny_model_dir, mmlu_file, whole), env=ONE_THREAD)
    answers = _lines(whole / "cache.jsonl")  # 10 questions x 4 choices, and 5 arith answers
    assert answers == 45
    _kill_mid_way(_eval_args(tiny_model_dir, mmlu_file, killed), killed / "cache.jsonl", at_least=8)
    kept = _lines(killed / "cache.jsonl")
    assert 8 <= kept < answers and not (killed / "report.json").exists()  # the kill landed before the end
    resumed = cli(*_eval_args(tiny_model_dir, mmlu_file, killed), "--resume", env=ONE_THREAD)
    assert f"resumed: {kept} questions read from cache.jsonl" in resumed.stderr, resumed.stderr
    assert _lines(killed / "cache.jsonl") == answers  # only the missing answers were added
    assert _report(killed) == _report(whole)
    for task in ("mmlu", "arith"):
        assert (killed / "samples" / f"{task}.jsonl").read_text() == (whole / "samples" / f"{task}.jsonl").read_text()
