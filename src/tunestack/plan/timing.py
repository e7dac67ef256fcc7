"""How long a run takes: its steps, the FLOPs of each, and a throughput measured here or taken from the peak."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tunestack.plan.measure import Measured
from tunestack.plan.rows import RowProfile
from tunestack.plan.setup import RunSetup
from tunestack.plan.shape import ModelShape


@dataclass(frozen=True)
class TimeEstimate:
    """The run's duration and where the speed comes from."""

    steps: int | None
    """Optimizer steps of the run; None when the number of rows is unknown and --max_steps is not set."""
    step_flops: float
    """FLOPs of one optimizer step on one device."""
    step_seconds: float | None
    seconds: float | None
    source: str
    """How the speed was found, in words."""


def run_steps(rows: int | None, setup: RunSetup, max_steps: int, epochs: float) -> int | None:
    """Optimizer steps as the transformers Trainer counts them, for `rows` training rows (None: unknown)."""
    if max_steps > 0:
        return max_steps
    if rows is None:
        return None
    batches = math.ceil(math.ceil(rows / setup.sharding.world) / setup.batch)
    updates = max(batches // setup.accumulation + int(batches % setup.accumulation > 0), 1)
    return math.ceil(epochs * updates)


def step_flops(shape: ModelShape, setup: RunSetup, rows: RowProfile) -> float:
    """Matmul FLOPs of one optimizer step on one device, for an average micro-batch.

    Linear layers cost 2 FLOPs per weight and token forward, as much again for the input gradients and, for weights
    that train, once more for theirs (so 6N per token for full fine-tuning, 4N plus 6 per adapter weight with
    adapters); the output layer only at the positions that have a target; attention 4 * heads * head_dim per
    query-key pair forward, twice that backward; checkpointing repeats the layers' forward.
    """
    tokens = rows.batch * rows.mean_padded  # rows.batch: 1 where the micro-batch's rows are joined
    kept = rows.batch * rows.kept * rows.mean_padded / rows.length
    linear = shape.layers * shape.layer_linear_params
    head = shape.hidden * shape.vocab
    if setup.attention == "packed":
        pairs = rows.grid_pairs * rows.mean_padded / rows.length
    else:
        pairs = rows.batch * rows.mean_padded**2
    attention = 4 * shape.layers * shape.heads * shape.head_dim * pairs
    forward = 2 * linear * tokens + attention
    if setup.tuner == "full":
        flops = 3 * forward + 6 * head * kept
    else:
        adapter = shape.adapter_params(shape.targets(setup.targets), setup.rank, setup.tuner == "dora")
        flops = 2 * (2 * linear * tokens) + 3 * attention + 4 * head * kept + 6 * adapter * tokens
    if setup.checkpointing:
        flops += forward
    return flops * setup.accumulation


def estimate_time(shape: ModelShape, setup: RunSetup, rows: RowProfile, steps: int | None,
                  peak_flops: float | None, efficiency: float, measured: Measured | None = None) -> TimeEstimate:
    """The run's time from a measurement on this machine, else from the device's peak FLOP/s at `efficiency`."""
    flops = step_flops(shape, setup, rows)
    if measured is not None:  # the data's average tokens per step at the measured speed, after the first step
        per_step = setup.batch * setup.accumulation * rows.mean_tokens / measured.tokens_per_s
        seconds = None if steps is None else measured.first_step + per_step * max(steps - 1, 0)
        return TimeEstimate(steps, flops, per_step, seconds,
                            f"measured here: {measured.steps - 1} steps after a first one, "
                            f"{measured.tokens_per_s:,.0f} tokens/s")
    if not peak_flops:
        return TimeEstimate(steps, flops, None, None, "unknown: pass --gpu_type, --peak_tflops or --measure")
    per_step = flops / (peak_flops * efficiency)
    return TimeEstimate(steps, flops, per_step, None if steps is None else per_step * steps,
                        f"{peak_flops / 1e12:,.2f} TFLOP/s peak at {efficiency:.0%} efficiency")
