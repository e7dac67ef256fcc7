"""An estimate as people read it (a table per device) and as tools read it (one JSON object), and the full command."""

from __future__ import annotations

import shlex
from dataclasses import MISSING, fields

GIB = 2**30


def command_line(groups, command: str = "sft") -> str:
    """`tunestack sft` with every flag whose value differs from its default, ready to paste."""
    return " ".join(["tunestack", command] + [shlex.quote(part) for part in sft_flags(groups)])


def sft_flags(groups) -> list[str]:
    """The command-line flags that reproduce `groups` (those whose values differ from the defaults, and those a
    built-in data set's presets could otherwise change)."""
    from tunestack.data.builtin import PRESET_FLAGS

    parts = []
    for group in (groups.model, groups.data, groups.tuner, groups.train, groups.parallel):
        for f in fields(group):
            value = getattr(group, f.name)
            default = f.default_factory() if f.default is MISSING else f.default
            if (value == default and f.name not in PRESET_FLAGS) or value is None:
                continue
            flag = f"--{f.name}"
            if value is True:
                parts.append(flag)
            elif isinstance(value, list):
                parts += [flag, ",".join(map(str, value))]
            else:
                parts += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return parts


def as_json(estimate) -> dict:
    """The estimate as one object; `peak_bytes` is the predicted peak of one device."""
    e, mem, acts = estimate, estimate.memory, estimate.memory.activations
    plan = e.plan
    return {
        "model": {"source": e.source.where, "params": e.shape.params, "layers": e.shape.layers,
                  "hidden": e.shape.hidden, "vocab": e.shape.vocab},
        "device": {"kind": e.device.kind, "name": e.device.name, "memory_bytes": e.device.memory,
                   "count": e.device.count},
        "setup": {"tuner": e.setup.tuner, "trainable_params": e.trainable, "compute_bytes": e.setup.compute_bytes,
                  "attention": e.setup.attention, "gradient_checkpointing": e.setup.checkpointing,
                  "micro_batch": e.setup.batch, "accumulation": e.setup.accumulation,
                  "processes": e.setup.sharding.world, "sharding": e.setup.sharding.describe()},
        "rows": {"from_data": e.rows.measured, "rows": e.rows.count, "longest": e.profile.length,
                 "logit_positions": e.profile.kept, "mean_tokens": round(e.profile.mean_tokens, 1)},
        "memory": {"weights": mem.weights, "gradients": mem.gradients, "optimizer": mem.optimizer,
                   "activations": mem.activation_bytes, "activations_without_checkpointing": acts.full,
                   "activations_with_checkpointing": acts.checkpointed, "logits": acts.logits,
                   "process": mem.process, "heap_kept": mem.heap_kept, "gathered": mem.gathered,
                   "cast_weights": mem.cast_weights,
                   "offloaded_to_cpu": mem.host, "load_peak": mem.load, "reserve": mem.reserve},
        "peak_bytes": mem.peak,
        "needed_bytes": mem.needed,
        "budget_bytes": e.device.memory,
        "fits": mem.needed <= e.device.memory,
        "tokens_per_step": e.tokens_per_step,
        "time": {"steps": e.time.steps, "step_seconds": e.time.step_seconds, "seconds": e.time.seconds,
                 "step_flops": e.time.step_flops, "source": e.time.source},
        "recommendation": None if plan is None else {
            "changes": plan.changes, "command": command_line(plan.groups), "fits": plan.fits,
            "peak_bytes": plan.memory.peak, "needed_bytes": plan.memory.needed,
            "offloaded_to_cpu": plan.memory.host},
        "measured": None if e.measured is None else {
            "peak_bytes": e.measured.peak_bytes, "first_step_seconds": e.measured.first_step,
            "step_seconds": e.measured.step, "tokens_per_s": e.measured.tokens_per_s, "steps": e.measured.steps},
        "assumptions": e.assumptions,
    }


def render(estimate) -> str:
    """The estimate as a table of memory per device, then tokens, time and any recommendation."""
    e, mem, acts = estimate, estimate.memory, estimate.memory.activations
    s = e.shape
    where = "available" if e.device.kind == "cpu" else "per GPU"
    lines = [
        f"model    {e.source.where}: {s.params / 1e6:,.1f}M weights, {s.layers} layers, hidden {s.hidden}, "
        f"vocab {s.vocab}",
        f"device   {e.device.kind}: {e.device.name}, {_gib(e.device.memory)} {where}; {e.setup.sharding.describe()}",
        f"run      {e.describe_run()}",
        f"rows     {e.describe_rows()}",
        "",
        f"memory per device{'':24}GiB",
    ]
    ckpt = "with" if e.setup.checkpointing else "without"
    rows = [
        ("weights", mem.weights, e.weights_note()),
        ("gradients", mem.gradients, f"{e.trainable / 1e6:,.2f}M trainable weights"),
        ("optimizer states (AdamW)", mem.optimizer, _sharded(e, mem)),
        (f"activations ({ckpt} checkpointing)", mem.activation_bytes,
         f"without: {_gib(acts.full)}, with: {_gib(acts.checkpointed)}; logits and loss {_gib(acts.logits)}"),
        ("gathered layers (ZeRO-3 / FSDP)", mem.gathered, ""),
        ("half-precision weight copies", mem.cast_weights, "autocast's, kept for the backward pass"),
        ("process (Python, torch, libraries, data)", mem.process, "measured on this platform"),
        ("heap kept by the allocator", mem.heap_kept, "glibc keeps freed activation memory"),
    ]
    lines += [f"  {name:<38} {value / GIB:6.2f}  {note}".rstrip() for name, value, note in rows if value or name ==
              "weights"]
    peak_note = "peak (torch.cuda.max_memory_allocated)" if e.device.kind == "cuda" else "peak (resident memory)"
    lines.append(f"  {peak_note:<38} {mem.peak / GIB:6.2f}")
    if mem.load > mem.peak - 1 and mem.load:
        lines.append(f"  {'(reached while loading the weights)':<38}")
    if e.measured is not None:
        lines.append(f"  {'measured (--measure, ' + str(e.measured.steps) + ' steps)':<38} "
                     f"{e.measured.peak_bytes / GIB:6.2f}")
    if mem.reserve:
        lines.append(f"  {'+ CUDA context and allocator slack':<38} {mem.reserve / GIB:6.2f}")
    if mem.host:
        lines.append(f"  {'offloaded to CPU memory (not on device)':<38} {mem.host / GIB:6.2f}")
    verdict = "fits" if mem.needed <= e.device.memory else "does NOT fit"
    lines.append(f"  needs {_gib(mem.needed)} of {_gib(e.device.memory)}: {verdict}")
    lines += ["", f"tokens per step  {e.tokens_per_step:,.0f} ({e.describe_step()})",
              f"time             {e.describe_time()}"]
    if e.plan is not None:
        lines += ["", "recommended changes:" if e.plan.fits else "nothing tried fits; the smallest footprint found:"]
        lines += [f"  {change}" for change in e.plan.changes]
        host = f", and {_gib(e.plan.memory.host)} of CPU memory for what is offloaded" if e.plan.memory.host else ""
        lines += [f"  peak {_gib(e.plan.memory.peak)}, needs {_gib(e.plan.memory.needed)}{host}", "",
                  f"  {command_line(e.plan.groups)}"]
    lines += [f"note: {note}" for note in e.assumptions]
    return "\n".join(lines)


def _sharded(e, mem) -> str:
    shard = e.setup.sharding
    parts = []
    if shard.stage:
        parts.append(f"ZeRO stage {shard.stage} over {shard.world}")
    if mem.host:
        parts.append(f"{_gib(mem.host)} offloaded to CPU")
    return ", ".join(parts)


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"
