"""What a run does, in the terms memory and time depend on, resolved from its flags and the device."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunestack.config import DataArgs, ModelArgs, ParallelArgs, TrainArgs, TunerArgs
from tunestack.plan.device import Device
from tunestack.plan.parallel import Sharding, sharding


@dataclass(frozen=True)
class RunSetup:
    """The training choices of one run, per device."""

    tuner: str = "lora"
    rank: int = 8
    targets: list[str] = field(default_factory=lambda: ["all-linear"])
    dropout: float = 0.0
    modules_to_save: list[str] = field(default_factory=list)
    checkpointing: bool = False
    batch: int = 4
    """Rows per micro-batch and device."""
    accumulation: int = 1
    compute_bytes: int = 4
    """Bytes per element of activations: 2 in bf16 / fp16, 4 in fp32."""
    attention: str = "eager"
    """eager (keeps length x length scores), grouped eager (tunestack's kernel: eager without copies of the keys and
    values per query head, in GROUPED_FAMILIES), sdpa or flash (keep none), packed (tunestack's per-example kernel)."""
    sharding: Sharding = field(default_factory=Sharding)
    device: str = "cpu"
    fused: frozenset[str] = frozenset()
    """The fused functions the run may use (train/trainer.py's fuse_modules: mlp, lora, rmsnorm), by its flags and
    process; which of them apply also depends on the family and the adapters (plan/activations.py)."""
    loss_in_chunks: bool = False
    """Whether the trainer may apply the output head at the target tokens alone, in chunks where their logits are
    large (train/trainer.py: one process, not compiled, no --loss_func); the family decides too."""
    padding_free: bool = False
    """Whether each micro-batch's rows are joined into one row without padding (data/packing.py)."""

    @property
    def adapter(self) -> bool:
        return self.tuner != "full"

    @property
    def weight_bytes(self) -> int:
        """Bytes per frozen base weight: the compute precision; fully trained weights stay fp32."""
        return 4 if self.tuner == "full" else self.compute_bytes


def run_setup(model: ModelArgs, data: DataArgs, tuner: TunerArgs, train: TrainArgs, parallel: ParallelArgs,
              device: Device, model_type: str | None = None) -> RunSetup:
    """The setup `tunestack sft` would train with, given these flags, on `device`, for a model of `model_type`."""
    from tunestack.data.packing import run_padding_free
    from tunestack.model.attention import GROUPED_FAMILIES

    shard = sharding(parallel)
    joined = run_padding_free(model, data, train, parallel, task="sft", text=True, cuda=device.kind == "cuda",
                              grouped=model_type in GROUPED_FAMILIES and not model.trust_remote_code)
    return RunSetup(
        tuner=tuner.tuner, rank=tuner.lora_rank, targets=list(tuner.target_modules), dropout=tuner.lora_dropout,
        modules_to_save=list(tuner.modules_to_save), checkpointing=train.gradient_checkpointing,
        batch=train.per_device_train_batch_size, accumulation=train.gradient_accumulation_steps,
        compute_bytes=compute_bytes(model, train, device), attention=attention_kind(model, data, device, joined),
        sharding=shard, device=device.kind, fused=fused_functions(train, shard),
        loss_in_chunks=shard.world == 1 and not train.torch_compile and train.loss_func is None,
        padding_free=joined,
    )


def fused_functions(train: TrainArgs, shard: Sharding) -> frozenset[str]:
    """The fused functions fuse_modules installs for these flags: in one process, without torch.compile or Liger."""
    if shard.world != 1 or shard.engine != "none" or train.torch_compile or train.use_liger_kernel:
        return frozenset()
    flags = {"mlp": train.fused_mlp, "lora": train.fused_lora, "rmsnorm": train.fused_rmsnorm}
    return frozenset(name for name, on in flags.items() if on)


def compute_bytes(model: ModelArgs, train: TrainArgs, device: Device) -> int:
    """2 when the run computes in bf16 / fp16, 4 in fp32 (as model/precision.py resolves --dtype and --bf16)."""
    if train.bf16 is not None:
        return 2 if train.bf16 else 4
    if model.dtype == "auto":
        return 2 if device.half_precision else 4
    return 4 if model.dtype == "fp32" else 2


def attention_kind(model: ModelArgs, data: DataArgs, device: Device, padding_free: bool = False) -> str:
    """The attention kernel training would use (model/load.py's pick_attention), by what it keeps for backward."""
    requested = model.attn_implementation
    if requested != "auto":
        return "flash" if requested.startswith("flash") else requested
    if device.kind == "cuda":
        return "flash" if device.flash_attention else "sdpa"
    if data.packing or padding_free:
        return "packed"
    return "grouped eager" if data.max_length <= 1024 else "sdpa"
