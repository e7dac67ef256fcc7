"""`tunestack estimate`: memory and time of an sft run from its flags and the model's config, before any training."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tunestack.config import DataArgs, ModelArgs, ParallelArgs, PlanArgs, TrainArgs, TunerArgs
from tunestack.config.parse import field_problems
from tunestack.errors import ConfigError
from tunestack.plan.device import Device
from tunestack.plan.memory import Memory, parameters
from tunestack.plan.recommend import Plan, TrainingGroups, auto_plan, plan_memory, run_profile
from tunestack.plan.rows import RowProfile, Rows
from tunestack.plan.setup import RunSetup
from tunestack.plan.shape import ModelShape
from tunestack.plan.source import ModelSource
from tunestack.plan.timing import TimeEstimate


@dataclass
class Estimate:
    """Everything `tunestack estimate` reports."""

    source: ModelSource
    shape: ModelShape
    device: Device
    setup: RunSetup
    rows: Rows
    profile: RowProfile
    memory: Memory
    time: TimeEstimate
    plan: Plan | None
    measured: object | None = None
    """What --measure found (tunestack.plan.measure.Measured)."""
    assumptions: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> int:
        return parameters(self.shape, self.setup)[1]

    @property
    def tokens_per_step(self) -> float:
        """Real tokens of one optimizer step over all processes."""
        return self.profile.mean_tokens * self.setup.batch * self.setup.accumulation * self.setup.sharding.world

    def describe_run(self) -> str:
        s = self.setup
        targets = ", ".join(self.shape.targets(s.targets))
        tuner = s.tuner if s.tuner == "full" else f"{s.tuner} rank {s.rank} on {targets}"
        precision = "fp32" if s.compute_bytes == 4 else "bf16/fp16"
        joined = ", rows joined without padding" if s.padding_free else ""
        return (f"{tuner}; {precision} compute; micro-batch {s.batch} x {s.accumulation} accumulation; "
                f"{s.attention} attention{joined}; gradient checkpointing {'on' if s.checkpointing else 'off'}")

    def describe_rows(self) -> str:
        p = self.profile
        if not self.rows.measured:
            return f"assumed: every row {p.length} tokens (--max_length) with a target at every position"
        packed = f", {p.examples} examples in the worst micro-batch" if p.examples > p.batch else ""
        if self.setup.padding_free:
            return (f"{self.rows.count:,} rows from --dataset; the longest micro-batch joins {p.examples} examples "
                    f"into {p.length} tokens, {p.kept} positions with logits, {p.mean_tokens:.0f} tokens per row on "
                    "average")
        return (f"{self.rows.count:,} rows from --dataset; longest {p.length} tokens, {p.kept} positions with "
                f"logits, {p.mean_tokens:.0f} tokens per row on average{packed}")

    def weights_note(self) -> str:
        s = self.setup
        if s.tuner == "full":
            return "fp32, all trained"
        base = "linear layers in 4-bit NF4, the rest fp32" if s.tuner == "qlora" else \
            f"base in {'fp32' if s.weight_bytes == 4 else 'bf16'}"
        return f"{base}; adapters fp32"

    def describe_step(self) -> str:
        s = self.setup
        return (f"{s.batch} rows x {s.accumulation} accumulation x {s.sharding.world} process(es), "
                f"{self.profile.mean_tokens:.0f} real tokens per row on average")

    def describe_time(self) -> str:
        t = self.time
        if t.step_seconds is None:
            return t.source
        total = "" if t.seconds is None else f" = {_duration(t.seconds)}"
        steps = f"{t.steps:,} steps x " if t.steps is not None else "per step: "
        return f"{steps}{t.step_seconds:.3g} s{total} ({t.source}; {t.step_flops / 1e12:.3g} TFLOP per step)"


def run_estimate(model: ModelArgs, data: DataArgs, tuner: TunerArgs, train: TrainArgs, parallel: ParallelArgs,
                 plan: PlanArgs) -> Estimate:
    """Estimate the run `tunestack sft` would make with these flags; prints the table or the JSON object."""
    estimate = build_estimate(model, data, tuner, train, parallel, plan)
    from tunestack.plan.report import as_json, render

    print(json.dumps(as_json(estimate), indent=2) if plan.json else render(estimate), flush=True)
    return estimate


def validate_estimate(data: DataArgs, tuner: TunerArgs, train: TrainArgs, parallel: ParallelArgs,
                      plan: PlanArgs) -> None:
    """Every problem with the flags at once, before a config is read or a byte is fetched."""
    from tunestack.plan.parallel import parallel_problems

    problems = [p for group in (data, tuner, train, parallel, plan) for p in field_problems(group)]
    problems += parallel_problems(parallel)
    if plan.measure and not data.dataset:
        problems.append("--measure: trains a few real steps, so it needs --dataset")
    if plan.measure and (parallel.nproc > 1 or parallel.deepspeed or parallel.fsdp):
        problems.append("--measure: times a single process; drop --nproc, --deepspeed and --fsdp to measure")
    if plan.device == "cpu" and (plan.gpu_type or plan.gpu_memory):
        problems.append("--gpu_type / --gpu_memory: describe GPUs; drop them with --device cpu")
    if problems:
        raise ConfigError(problems)


def build_estimate(model: ModelArgs, data: DataArgs, tuner: TunerArgs, train: TrainArgs, parallel: ParallelArgs,
                   plan: PlanArgs) -> Estimate:
    """The estimate, without printing it."""
    from tunestack.plan.device import cpu_peak_flops, detect_device
    from tunestack.plan.rows import data_rows
    from tunestack.plan.setup import run_setup
    from tunestack.plan.source import model_source
    from tunestack.plan.measure import run_measured
    from tunestack.plan.timing import estimate_time, run_steps

    validate_estimate(data, tuner, train, parallel, plan)
    device = detect_device(plan, parallel)
    if plan.measure and (device.kind == "cuda") != _has_cuda():
        raise ConfigError([f"--measure: times the run on this machine, which has no {device.kind} device to time"])
    source = model_source(model)
    shape = ModelShape.from_config(source.config)
    rows = data_rows(source, model, data, train.seed)
    groups = TrainingGroups(model, data, tuner, train, parallel)
    setup = run_setup(model, data, tuner, train, parallel, device, shape.model_type)
    profile = run_profile(train, setup, rows)
    mem = plan_memory(groups, shape, device, rows)
    assumptions = _assumptions(source, rows, device, data)
    measured = run_measured(groups, plan.measure_steps + 1) if plan.measure else None
    peak = device.peak_flops or (cpu_peak_flops(setup.compute_bytes == 2) if device.kind == "cpu" else None)
    steps = run_steps(rows.count, setup, train.max_steps, train.num_train_epochs)
    if steps is None:
        assumptions.append("the number of steps needs the data's size: pass --dataset with a local model, or "
                           "--max_steps")
    time = estimate_time(shape, setup, profile, steps, peak, device.efficiency, measured)
    recommendation = None if mem.needed <= device.memory else auto_plan(groups, shape, device, rows)
    return Estimate(source, shape, device, setup, rows, profile, mem, time, recommendation, measured, assumptions)


def _assumptions(source: ModelSource, rows: Rows, device: Device, data: DataArgs) -> list[str]:
    notes = []
    if not rows.measured and data.dataset:
        notes.append("rows assumed --max_length long: the data is tokenized only when the model (its tokenizer) "
                     "is on this machine")
    if device.kind == "cuda":
        notes.append("GPU figures follow the formulas in tunestack/plan/; they are not yet checked against a "
                     "measured GPU run")
    return notes


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
