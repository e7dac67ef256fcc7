"""--compare: base and fine-tune side by side, evaluated now or read from earlier eval folders."""

from __future__ import annotations

import json

import pytest

from helpers import make_adapter
from tunestack.config import EvalArgs, ModelArgs
from tunestack.eval.command import run_eval


def test_compare_two_models_then_two_eval_folders(tiny_model_dir, mmlu_file, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], compare=[str(tiny_model_dir), str(adapter)])
    comparison = run_eval(ModelArgs(dtype="fp32"), args, tmp_path / "cmp")
    reports = [json.loads((tmp_path / "cmp" / side / "report.json").read_text()) for side in "AB"]
    (row,) = comparison["rows"]
    a, b = (r["tasks"]["mmlu"]["metrics"]["acc"] for r in reports)
    assert row["a"] == a["value"] and row["b"] == b["value"]
    assert row["difference"] == pytest.approx(b["value"] - a["value"])
    assert row["stderr"] == pytest.approx((a["stderr"] ** 2 + b["stderr"] ** 2) ** 0.5)
    assert row["significant"] == (abs(row["difference"]) > row["stderr"])
    samples = [[json.loads(l)["loglikelihoods"] for l in (tmp_path / "cmp" / s / "samples" / "mmlu.jsonl")
                .read_text().splitlines()] for s in "AB"]
    assert samples[0] != samples[1]  # the adapter really changed the model
    assert "| mmlu | acc |" in (tmp_path / "cmp" / "compare.md").read_text()

    again = run_eval(ModelArgs(), EvalArgs(compare=[str(tmp_path / "cmp" / "A"), str(tmp_path / "cmp" / "B")]),
                     tmp_path / "cmp2")
    assert again["rows"] == comparison["rows"]
