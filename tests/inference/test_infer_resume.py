"""`tunestack infer --input` killed with SIGKILL mid-way continues with --resume without redoing finished rows, and
its output equals an uninterrupted run's."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from helpers import cli, cli_env, write_jsonl

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the tiny model gains nothing from more; on a shared CPU they spin and stall


def _rows(path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def test_infer_file_killed_mid_way_resumes_to_the_uninterrupted_output(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"What is {i} + {i}?"} for i in range(40)])
    args = ["infer", "--model", str(tiny_model_dir), "--input", str(prompts), "--max_new_tokens", "8",
            "--batch_size", "2", "--dtype", "fp32"]
    whole, killed = tmp_path / "whole.jsonl", tmp_path / "killed.jsonl"
    cli(*args, "--output", str(whole), env=ONE_THREAD)
    assert _rows(whole) == 40
    process = subprocess.Popen([sys.executable, "-m", "tunestack", *args, "--output", str(killed)],
                               stderr=subprocess.DEVNULL, env=cli_env(ONE_THREAD))
    deadline = time.time() + 300
    while _rows(killed) < 4:
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    kept = _rows(killed)
    assert 4 <= kept < 40  # the kill landed before the end
    with open(killed, "a") as fh:
        fh.write('{"messages": [{"role": "us')  # a row cut short, as a kill in the middle of a write leaves it
    resumed = cli(*args, "--output", str(killed), "--resume", env=ONE_THREAD)
    assert f"resuming: {kept} of 40 prompts already answered" in resumed.stderr
    assert killed.read_text() == whole.read_text()


def test_resume_refuses_an_output_of_other_prompts(tmp_path):
    import pytest

    from tunestack.errors import DataError
    from tunestack.inference.prompt_file import answered_rows

    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "there"}]]
    output = write_jsonl(tmp_path / "out.jsonl", [{"messages": prompts[0], "response": "a"},
                                                  {"messages": [{"role": "user", "content": "bye"}], "response": "b"}])
    with pytest.raises(DataError, match="out.jsonl, line 2 does not answer prompt 2 of in.jsonl; drop --resume"):
        answered_rows(str(output), prompts, "in.jsonl")
    output.write_text(output.read_text().splitlines()[0] + "\n" + '{"messages": [')  # then a row cut short
    assert answered_rows(str(output), prompts, "in.jsonl") == 1
    assert output.read_text().endswith('"response": "a"}\n')  # the cut row is gone
