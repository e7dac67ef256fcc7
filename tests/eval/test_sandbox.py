"""humaneval's sandbox: programs pass or fail by their tests, time out, and cannot reach the network."""

from __future__ import annotations

import json
import socket

from helpers import cli, write_jsonl
from tunestack.eval.benchmarks import humaneval
from tunestack.eval.sandbox import run_program, score_code

PROBLEM = {"task_id": "HumanEval/0", "entry_point": "add",
           "prompt": "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n",
           "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


def test_right_and_wrong_completions():
    doc = humaneval(PROBLEM)
    samples = score_code([doc, doc], [doc.text, doc.text], ["    return a + b\n", "    return a - b\n"], timeout=20)
    assert [s["pass@1"] for s in samples] == [1.0, 0.0]
    assert samples[1]["result"].startswith("failed: AssertionError")


def test_endless_program_times_out():
    passed, result = run_program("while True:\n    pass\n", timeout=1)
    assert not passed and result == "timed out after 1 s"


def test_program_cannot_reach_the_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        passed, result = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)\n",
                                     timeout=20)
    assert not passed and "failed" in result


def test_humaneval_through_the_cli(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "humaneval.jsonl", [PROBLEM])
    cli("eval", "--model", str(tiny_model_dir), "--tasks", "humaneval", "--task_data", f"humaneval={data}",
        "--allow_code_execution", "--max_new_tokens", "8", "--output_dir", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())["tasks"]["humaneval"]
    assert report["n"] == 1 and "pass@1" in report["metrics"] and report["settings"]["sandbox"]
    (sample,) = [json.loads(l) for l in (tmp_path / "out" / "samples" / "humaneval.jsonl").read_text().splitlines()]
    assert sample["task_id"] == "HumanEval/0" and sample["result"]
