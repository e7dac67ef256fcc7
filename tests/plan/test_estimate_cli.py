"""`tunestack estimate`: the table, the JSON object for tools, the recommendation and the command, the errors."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import cli, cli_env
from tunestack.config import DataArgs, ModelArgs, ParallelArgs, PlanArgs, TrainArgs, TunerArgs, parse_groups
from tunestack.plan.estimate import run_estimate

GROUPS = [ModelArgs, DataArgs, TunerArgs, TrainArgs, ParallelArgs, PlanArgs]


def estimate(capsys, *argv: str) -> str:
    run_estimate(*parse_groups(GROUPS, list(argv)))
    return capsys.readouterr().out


def test_table_per_device(capsys, tiny_model_dir, chat_file):
    out = estimate(capsys, "--model", str(tiny_model_dir), "--dataset", str(chat_file), "--device", "cpu",
                   "--max_steps", "10")
    for part in ("weights", "gradients", "optimizer states (AdamW)", "activations (without checkpointing)",
                 "process (Python, torch, libraries, data)", "peak (resident memory)", "tokens per step",
                 "32 rows from --dataset", "10 steps x"):
        assert part in out, part
    assert "fits" in out and "recommended" not in out


def test_json_for_tools_and_a_recommendation_when_the_run_does_not_fit(capsys, tiny_model_dir, chat_file):
    run = ["--model", str(tiny_model_dir), "--dataset", str(chat_file), "--device", "cuda",
           "--per_device_train_batch_size", "8", "--json"]
    roomy = json.loads(estimate(capsys, *run, "--gpu_memory", "80"))
    assert isinstance(roomy["peak_bytes"], int) and roomy["fits"] and roomy["recommendation"] is None
    memory = roomy["memory"]
    saved = memory["activations_without_checkpointing"] - memory["activations_with_checkpointing"]
    assert saved > 0
    budget = (roomy["needed_bytes"] - saved / 2) / 2**30  # checkpointing fits, the run as given does not
    report = json.loads(estimate(capsys, *run, "--gpu_memory", str(budget)))
    assert report["fits"] is False and report["peak_bytes"] == roomy["peak_bytes"]
    plan = report["recommendation"]
    assert plan["fits"] and plan["needed_bytes"] <= report["budget_bytes"]
    assert plan["command"].startswith(f"tunestack sft --model {tiny_model_dir} --dataset {chat_file}")
    assert plan["changes"] and "--deepspeed" not in plan["command"]  # one GPU: nothing to shard over
    text = estimate(capsys, *run[:-1], "--gpu_memory", str(budget))
    assert "does NOT fit" in text and "recommended changes:" in text and plan["command"] in text


def test_hub_id_offline_fails_in_one_line_and_help_loads_no_torch(tmp_path):
    result = cli("estimate", "--model", "no-org/no-model", check=False, env={"HF_HOME": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "config.json" in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr
    code = ("import sys; from tunestack.cli import main; main(['estimate', '--help']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=cli_env()).stdout
    assert "--gpu_memory" in out and "--deepspeed" in out and out.strip().endswith("False")
    bad = cli("estimate", "--deepspeed", "zero3", "--fsdp", "--measure", check=False)
    assert bad.returncode == 2 and "3 problems" in bad.stderr
