"""What --nproc, --deepspeed and --fsdp mean for memory: which training state is sharded or offloaded, over how many."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunestack.config import ParallelArgs
from tunestack.config.args import ZERO_STAGES
from tunestack.errors import TunestackError


@dataclass(frozen=True)
class Sharding:
    """How training state is spread: ZeRO stage 1 shards optimizer states, 2 also gradients, 3 also weights."""

    world: int = 1
    """Processes (one per device) the run uses."""
    engine: str = "none"
    """none (one process or plain DDP), deepspeed or fsdp."""
    stage: int = 0
    offload_optimizer: bool = False
    """Optimizer states (and DeepSpeed's fp32 master weights) live in CPU memory."""
    offload_params: bool = False
    """Weights live in CPU memory and are fetched layer by layer."""

    def describe(self) -> str:
        if self.engine == "none":
            return "one process" if self.world == 1 else f"DDP over {self.world} processes (every state replicated)"
        offload = [name for name, on in (("optimizer", self.offload_optimizer), ("weights", self.offload_params)) if on]
        where = f", {' and '.join(offload)} offloaded to CPU" if offload else ""
        name = "FSDP" if self.engine == "fsdp" else f"DeepSpeed ZeRO-{self.stage}"
        return f"{name} over {self.world} process{'es' if self.world > 1 else ''}{where}"


def parallel_problems(args: ParallelArgs) -> list[str]:
    """Cross-field problems of the scale-out flags, one line each with the fix."""
    problems = []
    if args.deepspeed and args.fsdp:
        problems.append("--deepspeed and --fsdp exclude each other; pick one engine")
    if args.fsdp_offload and not args.fsdp:
        problems.append("--fsdp_offload: needs --fsdp")
    if args.deepspeed and args.deepspeed not in ZERO_STAGES:
        try:
            _deepspeed_file(args.deepspeed)
        except TunestackError as error:
            problems.append(str(error))
    return problems


def sharding(args: ParallelArgs) -> Sharding:
    """The Sharding the flags select (the flags are assumed valid: see parallel_problems)."""
    if args.fsdp:
        return Sharding(args.nproc, "fsdp", 3, args.fsdp_offload, args.fsdp_offload)
    if args.deepspeed in ZERO_STAGES:
        offload = args.deepspeed == "zero3_offload"
        return Sharding(args.nproc, "deepspeed", int(args.deepspeed[4]), offload, offload)
    if args.deepspeed:
        stage, optimizer, params = _deepspeed_file(args.deepspeed)
        return Sharding(args.nproc, "deepspeed", stage, optimizer, params)
    return Sharding(args.nproc)


def deepspeed_flag(shard: Sharding) -> str | None:
    """The --deepspeed value that selects `shard`'s stage and offload (None: no DeepSpeed)."""
    if shard.engine != "deepspeed":
        return None
    return "zero3_offload" if shard.offload_params else f"zero{shard.stage}"


def _deepspeed_file(path: str) -> tuple[int, bool, bool]:
    """(stage, optimizer offloaded, weights offloaded) from a DeepSpeed JSON config."""
    from tunestack.jsonfile import read_json_object

    file = Path(path)
    if not file.is_file():
        raise TunestackError(f"--deepspeed {path}: no such file; pass zero1, zero2, zero3, zero3_offload or a "
                             "DeepSpeed config file")
    zero = read_json_object(file).get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise TunestackError(f"--deepspeed {path}: zero_optimization.stage is {stage!r}; expected 0, 1, 2 or 3")
    offloaded = [(zero.get(key) or {}).get("device", "none") in ("cpu", "nvme")
                 for key in ("offload_optimizer", "offload_param")]
    return stage, offloaded[0], offloaded[1]
