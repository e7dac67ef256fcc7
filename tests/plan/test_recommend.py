"""auto_plan and the memory model's scale-out terms: pure functions of the groups, the shape and the device."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from tunestack.config import DataArgs, ModelArgs, ParallelArgs, TrainArgs, TunerArgs, parse_groups
from tunestack.plan import TrainingGroups, auto_plan
from tunestack.plan.device import GIB, Device
from tunestack.plan.memory import NF4_BYTES, memory
from tunestack.plan.parallel import Sharding
from tunestack.plan.recommend import plan_memory
from tunestack.plan.report import command_line
from tunestack.plan.rows import Rows
from tunestack.plan.setup import RunSetup
from tunestack.plan.shape import ModelShape

LLAMA_8B = ModelShape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, head_dim=128, vocab=128256,
                      tied=False, checkpoint_bytes=2)
SMOLLM2 = ModelShape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64, vocab=49152,
                     tied=True)


def groups(*argv: str) -> TrainingGroups:
    parsed = parse_groups([ModelArgs, DataArgs, TunerArgs, TrainArgs, ParallelArgs], ["--dataset", "d.jsonl", *argv])
    return TrainingGroups(*parsed)


def gpu(memory_gib: float, count: int = 1) -> Device:
    return Device("cuda", "test GPU", int(memory_gib * GIB), count, 989e12, True)


ROWS = Rows.assumed(2048)


def test_a_run_that_fits_is_left_as_it_is():
    given = groups("--tuner", "lora", "--max_length", "2048", "--per_device_train_batch_size", "1")
    plan = auto_plan(given, LLAMA_8B, gpu(80), ROWS)
    assert plan.fits and plan.changes == [] and plan.groups == given


def test_the_cheapest_fitting_change_keeps_the_training_when_it_can():
    """LoRA on an 8B model, micro-batch 8 of 2048 tokens on a 24 GiB GPU: checkpointing or smaller micro-batches
    fit, so the tuner stays LoRA (QLoRA is not needed) and the effective batch is kept."""
    given = groups("--tuner", "lora", "--max_length", "2048", "--per_device_train_batch_size", "8")
    before = dataclasses.replace(given)
    plan = auto_plan(given, LLAMA_8B, gpu(24), ROWS)
    assert given == before  # pure: the groups passed in are not changed
    assert plan.fits and plan.memory.needed <= 24 * GIB
    assert plan.groups.tuner.tuner == "lora"
    train = plan.groups.train
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps == 8
    assert plan.changes and all(change.startswith("--") for change in plan.changes)


def test_full_fine_tuning_too_large_for_one_gpu_shards_or_offloads_before_changing_the_tuner():
    """16 bytes per weight of an 8B model cannot fit one 80 GiB GPU: with one GPU the states go to CPU memory
    (ZeRO-3 offload), with eight they are sharded over them, and the tuner stays full either way."""
    given = groups("--tuner", "full", "--max_length", "2048", "--per_device_train_batch_size", "1")
    one = auto_plan(given, LLAMA_8B, gpu(80, count=1), ROWS)
    assert one.fits and one.groups.tuner.tuner == "full" and one.groups.parallel.deepspeed == "zero3_offload"
    assert one.memory.host > 100 * GIB
    four = auto_plan(given, LLAMA_8B, gpu(80, count=8), ROWS)
    assert four.fits and four.groups.tuner.tuner == "full" and four.memory.host == 0
    assert four.groups.parallel.nproc > 1 and (four.groups.parallel.deepspeed or four.groups.parallel.fsdp)
    assert any(change.startswith("--nproc") for change in four.changes)


def test_when_nothing_fits_the_smallest_footprint_is_returned_and_says_so():
    plan = auto_plan(groups("--tuner", "full"), LLAMA_8B, gpu(1), ROWS)
    assert not plan.fits and plan.memory.needed > GIB
    assert plan.memory.needed < plan_memory(groups("--tuner", "full"), LLAMA_8B, gpu(1), ROWS).needed


def test_cpu_budget_prefers_checkpointing_and_smaller_micro_batches_to_a_new_tuner():
    cpu = Device("cpu", "test CPU", int(2.5 * GIB), 1, None, False, 0.25)
    given = groups("--per_device_train_batch_size", "8", "--max_length", "1024")
    plan = auto_plan(given, SMOLLM2, cpu, Rows.assumed(1024))
    assert plan.fits and plan.groups.tuner.tuner == "lora"


def test_the_printed_command_reproduces_the_plan():
    given = groups("--tuner", "full", "--max_length", "2048", "--per_device_train_batch_size", "4",
                   "--target_modules", "q_proj,v_proj", "--packing")
    plan = auto_plan(given, LLAMA_8B, gpu(80, count=8), ROWS)
    line = command_line(plan.groups)
    assert line.startswith("tunestack sft ")
    parsed = parse_groups([ModelArgs, DataArgs, TunerArgs, TrainArgs, ParallelArgs], shlex.split(line)[2:])
    assert TrainingGroups(*parsed) == plan.groups


def setup(**kw) -> RunSetup:
    return RunSetup(tuner="full", batch=1, compute_bytes=2, attention="flash", device="cuda", **kw)


def test_zero_stages_shard_optimizer_then_gradients_then_weights():
    rows = Rows.assumed(512).micro_batch(1)
    stages = [memory(LLAMA_8B, setup(sharding=Sharding(8, "deepspeed", stage)), rows) for stage in range(4)]
    params = LLAMA_8B.params
    assert stages[0].optimizer == 12 * params and stages[0].gradients == 2 * params  # bf16 with fp32 master
    assert stages[1].optimizer == 12 * params // 8 and stages[1].gradients == 2 * params
    assert stages[2].gradients == 2 * params // 8
    assert stages[3].weights == 2 * params // 8 and stages[3].gathered > 0
    assert [m.peak for m in stages] == sorted((m.peak for m in stages), reverse=True)


def test_offload_moves_states_to_cpu_memory_and_ddp_keeps_a_second_gradient_copy():
    rows = Rows.assumed(512).micro_batch(1)
    offload = memory(LLAMA_8B, setup(sharding=Sharding(4, "deepspeed", 3, True, True)), rows)
    assert offload.optimizer == 0 and offload.weights == 0 and offload.host == (12 + 2) * LLAMA_8B.params // 4
    single = memory(LLAMA_8B, RunSetup(tuner="lora", batch=1, compute_bytes=2, device="cuda"), rows)
    ddp = memory(LLAMA_8B, RunSetup(tuner="lora", batch=1, compute_bytes=2, device="cuda",
                                    sharding=Sharding(2)), rows)
    assert ddp.gradients == 2 * single.gradients


def test_adapters_and_nf4_quantization_change_the_weight_bytes():
    rows = Rows.assumed(512).micro_batch(1)
    adapter = LLAMA_8B.adapter_params(LLAMA_8B.targets(["all-linear"]), 8)
    lora = memory(LLAMA_8B, RunSetup(tuner="lora", batch=1, compute_bytes=2, device="cuda"), rows)
    qlora = memory(LLAMA_8B, RunSetup(tuner="qlora", batch=1, compute_bytes=2, device="cuda"), rows)
    linear = LLAMA_8B.layers * LLAMA_8B.layer_linear_params
    assert lora.weights == LLAMA_8B.params * 2 + adapter * 4  # bf16 base, fp32 adapters
    assert qlora.weights == int(linear * NF4_BYTES) + (LLAMA_8B.params - linear + adapter) * 4
    assert lora.gradients == qlora.gradients == adapter * 4 and lora.optimizer == adapter * 8
    assert qlora.weights < lora.weights / 2  # peft keeps the embedding and output layer in fp32
