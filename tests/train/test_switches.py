"""Efficiency switches users bring from other tools: they reach the Trainer, or are refused with the reason."""

import pytest
import torch

from tunestack.config import DataArgs, ParallelArgs, TrainArgs, TunerArgs
from tunestack.errors import ConfigError, TunestackError
from tunestack.train.lifecycle import validate_training
from tunestack.train.trainer import training_arguments


def test_optimizer_and_neftune_reach_the_training_arguments(tmp_path):
    args = TrainArgs(optim="adamw_torch_fused", neftune_noise_alpha=5.0)
    made = training_arguments(args, str(tmp_path), torch.float32, 1e-4, has_eval=False)
    assert made.optim == "adamw_torch_fused" and made.neftune_noise_alpha == 5.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals a machine without a GPU gives")
def test_gpu_only_switches_are_refused_on_cpu_with_the_alternative():
    with pytest.raises(ConfigError) as caught:
        validate_training(DataArgs(dataset=["arith"]), TunerArgs(), TrainArgs(use_liger_kernel=True,
                                                                               optim="paged_adamw_8bit"),
                          parallel=ParallelArgs(nproc=2, tp=2))
    text = "\n".join(caught.value.problems)
    assert "--use_liger_kernel: Liger's kernels are Triton kernels for CUDA GPUs" in text
    assert "--optim paged_adamw_8bit: paged optimizers page GPU memory" in text
    assert "--tp 2: tensor-parallel training runs on GPUs only" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="FlexAttention trains on GPUs")
def test_flex_attention_cannot_train_on_cpu_but_loads_for_inference():
    from tunestack.model.load import pick_attention

    with pytest.raises(TunestackError, match="no backward pass on CPU"):
        pick_attention("flex_attention", torch.float32, max_length=512)
    assert pick_attention("flex_attention", torch.float32) == "flex_attention"


def test_auto_plan_applies_the_estimate_recommendation_and_records_it(tiny_model_dir, tmp_path, monkeypatch):
    import json

    import tunestack.plan.device as device
    from helpers import CHAT_ROWS, cli, write_jsonl
    from tunestack.config import ModelArgs
    from tunestack.train.lifecycle import _auto_plan

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--max_steps", "1", "--auto_plan",
        "--output_dir", str(tmp_path / "run"))
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["auto_plan"]
    assert recorded["fits_as_given"] is True and recorded["changes"] == []

    groups = (ModelArgs(model=str(tiny_model_dir)), DataArgs(dataset=[str(data)]), TunerArgs(tuner="full"),
              TrainArgs(per_device_train_batch_size=32, auto_plan=True), ParallelArgs())
    fits, _ = _auto_plan(*groups)
    monkeypatch.setattr(device, "_available_ram", lambda: fits["peak_bytes"] - 8 * 2**20)  # 8 MiB short
    record, (_, _, tuner, train, _) = _auto_plan(*groups)
    assert record["fits_as_given"] is False and record["fits"] is True and record["changes"]
    assert record["peak_bytes"] < fits["peak_bytes"]
    assert (tuner.tuner, train.per_device_train_batch_size, train.gradient_checkpointing) != ("full", 32, False)
    assert train.auto_plan is False  # applied once
