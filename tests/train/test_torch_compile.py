"""--torch_compile through the real CLI: compiled training gives the eager losses (within 1e-4) with LoRA,
DoRA and QLoRA (a 4-bit base) and records its compile time in run.json; where inductor cannot compile (no
C++ compiler), one warning names the cause and the run trains in eager mode to the end."""

from __future__ import annotations

import json

import pytest

from helpers import cli

TRAIN = ["--dtype", "fp32", "--max_steps", "3", "--logging_steps", "1", "--packing", "--max_length", "64",
         "--per_device_train_batch_size", "2"]


def losses(run) -> list[float]:
    return [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["lora", "dora", "qlora"])
def test_compiled_training_gives_the_eager_losses(tiny_model_dir, chat_file, tmp_path, tuner):
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    base = ["sft", "--model", str(tiny_model_dir), "--dataset", str(chat_file), *TRAIN, "--tuner", tuner]
    cli(*base, "--output_dir", str(tmp_path / "eager"))
    compiled = cli(*base, "--torch_compile", "--output_dir", str(tmp_path / "compiled"), env=cache)
    assert "eager mode" not in compiled.stderr
    eager_losses, compiled_losses = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager_losses) == 3 and compiled_losses == pytest.approx(eager_losses, abs=1e-4)
    record = json.loads((tmp_path / "compiled" / "run.json").read_text())
    assert record["status"] == "completed" and record["compile_seconds"] > 0
    assert record["kernels"]["torch_compile"] and record["kernels"]["attention"] == "tunestack_packed"
    assert any((tmp_path / "inductor").rglob("*.py"))  # the graphs went to the cache a second run reuses


def test_without_a_compiler_it_warns_once_and_trains_eagerly(tiny_model_dir, chat_file, tmp_path):
    env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    run = tmp_path / "run"
    result = cli("sft", "--model", str(tiny_model_dir), "--dataset", str(chat_file), *TRAIN, "--torch_compile",
                 "--output_dir", str(run), env=env)
    warnings = [line for line in result.stderr.splitlines() if "--torch_compile" in line]
    assert len(warnings) == 1 and "inductor cannot compile" in warnings[0] and "eager mode" in warnings[0]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and "compile_seconds" not in record
    assert record["kernels"]["torch_compile"] is False  # what the run did, not what was asked
    assert len(losses(run)) == 3
