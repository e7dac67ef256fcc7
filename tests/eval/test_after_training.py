"""`tunestack sft --eval_tasks`: the finished run is evaluated and the report lands in the run directory."""

from __future__ import annotations

import json

from helpers import cli


def test_sft_evaluates_its_final_model(tiny_model_dir, chat_file, mmlu_file, tmp_path):
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(chat_file), "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--output_dir", str(run), "--dtype", "fp32",
        "--eval_tasks", "mmlu,arith", "--eval_task_data", f"mmlu={mmlu_file}", "--eval_limit", "2")
    report = json.loads((run / "eval" / "report.json").read_text())
    assert set(report["tasks"]) == {"mmlu", "arith"}
    assert "adapter" in report["model"] or str(run) in report["model"]
    assert report["tasks"]["mmlu"]["n"] == 4 and report["tasks"]["arith"]["n"] == 2
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["eval"]["mmlu"]["acc"] == report["tasks"]["mmlu"]["metrics"]["acc"]["value"]


def test_bad_eval_task_fails_before_training(tiny_model_dir, chat_file, tmp_path):
    result = cli("sft", "--model", str(tiny_model_dir), "--dataset", str(chat_file), "--max_steps", "1",
                 "--output_dir", str(tmp_path / "run"), "--eval_tasks", "mmlux", check=False)
    assert result.returncode == 2 and "unknown task 'mmlux'" in result.stderr
    assert not (tmp_path / "run").exists()
