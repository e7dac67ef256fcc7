"""`tunestack eval` through the real CLI: one-line errors for bad input, and a full run writing its reports."""

from __future__ import annotations

import json

from helpers import cli, write_jsonl


def _error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_unknown_task_is_one_line_with_a_suggestion():
    line = _error_line(cli("eval", "--tasks", "gsm8kk", check=False))
    assert "unknown task 'gsm8kk'" in line and "did you mean gsm8k" in line


def test_humaneval_needs_allow_code_execution():
    line = _error_line(cli("eval", "--tasks", "humaneval", check=False))
    assert "--allow_code_execution" in line


def test_wrong_schema_names_the_missing_field(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "mmlu.jsonl", [{"question": "2 + 2?", "options": ["4", "5", "6", "7"],
                                                  "answer": 0}])
    line = _error_line(cli("eval", "--model", str(tiny_model_dir), "--tasks", "mmlu", "--task_data",
                           f"mmlu={data}", "--output_dir", str(tmp_path / "out"), check=False))
    assert "missing field 'choices'" in line and "mmlu.jsonl, line 1" in line and "found answer, options" in line


def test_hub_task_offline_says_how_to_run_it_offline(tiny_model_dir, tmp_path):
    line = _error_line(cli("eval", "--model", str(tiny_model_dir), "--tasks", "gsm8k", "--output_dir",
                           str(tmp_path / "out"), check=False))
    assert "openai/gsm8k" in line and "--task_data gsm8k=PATH" in line


def test_full_run_writes_report_markdown_and_samples(tiny_model_dir, tmp_path, mmlu_file, gsm8k_file):
    mmlu, gsm8k = mmlu_file, gsm8k_file
    out = tmp_path / "out"
    result = cli("eval", "--model", str(tiny_model_dir), "--tasks", "mmlu,gsm8k,arith", "--task_data",
                 f"mmlu={mmlu}", f"gsm8k={gsm8k}", "--limit", "3", "--max_new_tokens", "8", "--num_fewshot", "1",
                 "--dtype", "fp32", "--output_dir", str(out))
    assert "| mmlu | acc |" in result.stdout and "q/s" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["tasks"]) == {"mmlu", "gsm8k", "arith"}
    mmlu_result = report["tasks"]["mmlu"]
    assert mmlu_result["n"] == 6 and mmlu_result["settings"]["num_fewshot"] == 1  # --limit 3 per subject
    assert set(mmlu_result["metrics"]["acc"]) == {"value", "stderr"}
    gsm8k_samples = [json.loads(l) for l in (out / "samples" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(gsm8k_samples) == 3
    assert {"prompt", "raw", "extracted", "gold", "exact_match,strict-match"} <= set(gsm8k_samples[0])
    assert gsm8k_samples[0]["prompt"].count("Question:") == 2  # one few-shot example, then the question
    assert "| gsm8k | exact_match,flexible-extract |" in (out / "report.md").read_text()
