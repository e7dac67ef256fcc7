"""When a run does not fit its device, the cheapest change of its flags that does: a pure function of the parsed
groups, the model's shape, the device and the rows (what `sft --auto_plan` applies).

Cheapest means, in this order: changes that train the same weights to the same result on the devices at hand
(gradient checkpointing, smaller micro-batches with more accumulation, ZeRO / FSDP sharding, offload, more of the
available GPUs), the least estimated slowdown first; then a lighter tuner (full -> LoRA -> QLoRA); then more devices
than --gpus. The slowdowns are rough, stated factors (SLOWDOWN), not measurements.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from tunestack.config import DataArgs, ModelArgs, ParallelArgs, TrainArgs, TunerArgs
from tunestack.config.args import ZERO_STAGES
from tunestack.plan.device import Device
from tunestack.plan.memory import Memory, memory
from tunestack.plan.rows import RowProfile, Rows
from tunestack.plan.setup import RunSetup, run_setup
from tunestack.plan.timing import run_steps
from tunestack.plan.shape import ModelShape

SLOWDOWN = {"gradient_checkpointing": 1.33, "halve_batch": 1.05, "zero1": 1.02, "zero2": 1.05, "zero3": 1.15,
            "zero3_offload": 2.5, "fsdp": 1.15, "fsdp_offload": 2.5, "qlora": 1.3, "double_nproc": 1.05}
"""Rough cost of each change relative to the run as given (device-time, so more processes cost communication)."""
TUNERS = {"full": ("full", "lora", "qlora"), "lora": ("lora", "qlora"), "dora": ("dora", "qlora"), "qlora": ("qlora",)}
MAX_PROCESSES = 64


@dataclass(frozen=True)
class TrainingGroups:
    """The argument groups of a training run."""

    model: ModelArgs
    data: DataArgs
    tuner: TunerArgs
    train: TrainArgs
    parallel: ParallelArgs


@dataclass(frozen=True)
class Plan:
    """The groups to train with, what was changed and why, and their estimate."""

    groups: TrainingGroups
    changes: list[str]
    """One line per changed flag: the flag and its value, and what it does; empty when the run fits as given."""
    fits: bool
    memory: Memory


def plan_memory(groups: TrainingGroups, shape: ModelShape, device: Device, rows: Rows) -> Memory:
    """The per-device training peak of `groups` on `device`."""
    g = groups
    setup = run_setup(g.model, g.data, g.tuner, g.train, g.parallel, device, shape.model_type)
    return memory(shape, setup, run_profile(g.train, setup, rows))


def run_profile(train: TrainArgs, setup: RunSetup, rows: Rows) -> RowProfile:
    """The micro-batches of the run: with --max_steps, the worst among the rows those steps draw."""
    steps = run_steps(rows.count, setup, train.max_steps, train.num_train_epochs) if train.max_steps > 0 else None
    drawn = None if steps is None else steps * setup.batch * setup.accumulation
    return rows.micro_batch(setup.batch, drawn, train.seed, padding_free=setup.padding_free)


def auto_plan(groups: TrainingGroups, shape: ModelShape, device: Device, rows: Rows) -> Plan:
    """`groups` unchanged when they fit `device`, else the cheapest fitting change (or, when none fits, the
    smallest footprint found, with fits=False)."""
    given = plan_memory(groups, shape, device, rows)
    if given.needed <= device.memory:
        return Plan(groups, [], True, given)
    best, smallest = None, None
    for candidate, cost in _candidates(groups, device):
        found = plan_memory(candidate, shape, device, rows)
        if found.needed <= device.memory and (best is None or cost < best[1]):
            best = (candidate, cost, found)
        if smallest is None or found.needed < smallest[2].needed:
            smallest = (candidate, cost, found)
    chosen, _, found = best or smallest
    return Plan(chosen, describe(groups, chosen, device), best is not None, found)


def _candidates(groups: TrainingGroups, device: Device):
    """Every combination of the changes, with its (tier, slowdown) cost."""
    train, parallel = groups.train, groups.parallel
    batches = [b for b in range(train.per_device_train_batch_size, 0, -1) if train.per_device_train_batch_size % b == 0]
    engines = [("fsdp", parallel.fsdp_offload), ("fsdp", True)] if parallel.fsdp else \
        [(parallel.deepspeed, False)] + [(stage, False) for stage in ZERO_STAGES]
    processes = [parallel.nproc * 2**k for k in range(7) if parallel.nproc * 2**k <= MAX_PROCESSES]
    for checkpointing, batch, (engine, offload), tuner, nproc in itertools.product(
            {train.gradient_checkpointing, True}, batches, engines, TUNERS[groups.tuner.tuner], processes):
        new_train = replace(train, gradient_checkpointing=checkpointing, per_device_train_batch_size=batch,
                            gradient_accumulation_steps=train.gradient_accumulation_steps
                            * (train.per_device_train_batch_size // batch))
        new_parallel = replace(parallel, nproc=nproc, deepspeed=None if engine == "fsdp" else engine,
                               fsdp_offload=offload if engine == "fsdp" else False)
        candidate = replace(groups, train=new_train, parallel=new_parallel,
                            tuner=replace(groups.tuner, tuner=tuner))
        yield candidate, _cost(groups, candidate, device)


def _cost(given: TrainingGroups, new: TrainingGroups, device: Device) -> tuple[int, float]:
    """(tier, slowdown): tier 0 same training on the devices at hand, 1-2 a lighter tuner, 3 more devices."""
    slowdown = 1.0
    if new.train.gradient_checkpointing and not given.train.gradient_checkpointing:
        slowdown *= SLOWDOWN["gradient_checkpointing"]
    slowdown *= SLOWDOWN["halve_batch"] ** math.log2(given.train.per_device_train_batch_size
                                                     / new.train.per_device_train_batch_size)
    engine = "fsdp_offload" if new.parallel.fsdp_offload else "fsdp" if new.parallel.fsdp else new.parallel.deepspeed
    if engine != _engine(given.parallel):
        slowdown *= SLOWDOWN.get(engine, 1.0)
    slowdown *= SLOWDOWN["double_nproc"] ** math.log2(new.parallel.nproc / given.parallel.nproc)
    steps = TUNERS[given.tuner.tuner].index(new.tuner.tuner)
    if new.tuner.tuner == "qlora" and steps:
        slowdown *= SLOWDOWN["qlora"]
    tier = 3 if new.parallel.nproc > device.count else steps
    return tier, slowdown


def _engine(parallel: ParallelArgs) -> str | None:
    return "fsdp_offload" if parallel.fsdp_offload else "fsdp" if parallel.fsdp else parallel.deepspeed


def describe(given: TrainingGroups, new: TrainingGroups, device: Device) -> list[str]:
    """What changed between two sets of groups, one line per change, flag first."""
    lines = []
    if new.tuner.tuner != given.tuner.tuner:
        what = "a 4-bit NF4 base with LoRA adapters" if new.tuner.tuner == "qlora" else "LoRA adapters on a frozen base"
        lines.append(f"--tuner {new.tuner.tuner}: train {what} instead of --tuner {given.tuner.tuner}")
    if new.train.gradient_checkpointing and not given.train.gradient_checkpointing:
        lines.append("--gradient_checkpointing: keep only each layer's input and recompute the rest in backward "
                     "(about a third more compute)")
    if new.train.per_device_train_batch_size != given.train.per_device_train_batch_size:
        lines.append(f"--per_device_train_batch_size {new.train.per_device_train_batch_size} "
                     f"--gradient_accumulation_steps {new.train.gradient_accumulation_steps}: the same "
                     f"{given.train.per_device_train_batch_size * given.train.gradient_accumulation_steps} rows per "
                     "step in smaller micro-batches")
    if _engine(new.parallel) != _engine(given.parallel):
        flag = "--fsdp --fsdp_offload" if new.parallel.fsdp_offload else f"--deepspeed {new.parallel.deepspeed}"
        lines.append(f"{flag}: {_ENGINES[_engine(new.parallel)]}")
    if new.parallel.nproc != given.parallel.nproc:
        more = "" if new.parallel.nproc <= device.count else f" (more than the {device.count} available: add devices)"
        lines.append(f"--nproc {new.parallel.nproc}: one process per GPU{more}")
    return lines


_ENGINES = {
    "zero1": "shard the optimizer states over the processes",
    "zero2": "shard gradients and optimizer states over the processes",
    "zero3": "shard weights, gradients and optimizer states over the processes",
    "zero3_offload": "shard everything and keep weights and optimizer states in CPU memory",
    "fsdp": "shard weights, gradients and optimizer states over the processes",
    "fsdp_offload": "shard everything and keep it in CPU memory between uses",
}
