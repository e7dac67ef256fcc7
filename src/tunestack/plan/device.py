"""The device an estimate is made for: its memory, how many there are, and its peak FLOP/s."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace

from tunestack.config import ParallelArgs, PlanArgs
from tunestack.errors import ConfigError

GIB = 2**30
GPUS = {  # name: (memory in MiB as the driver reports it, dense TFLOP/s in bf16/fp16 with fp32 accumulation, in fp32)
    "t4": (15360, 65, 8.1),
    "v100": (32768, 125, 15.7),
    "a10g": (23028, 70, 31.2),
    "l4": (23034, 121, 30.3),
    "rtx3090": (24576, 71, 35.6),
    "rtx4090": (24564, 165, 82.6),
    "a100-40gb": (40960, 312, 156),  # fp32 through TF32 tensor cores
    "a100-80gb": (81920, 312, 156),
    "h100": (81559, 989, 494),
    "h200": (143771, 989, 494),
}
GPU_EFFICIENCY = 0.4
"""Default fraction of the peak FLOP/s a fine-tuning step achieves on a GPU."""
CPU_EFFICIENCY = 0.25
"""Default fraction of the matmul probe's FLOP/s a fine-tuning step achieves on a CPU."""


@dataclass(frozen=True)
class Device:
    """One kind of device and how many of it a run may use."""

    kind: str
    """cpu or cuda."""
    name: str
    memory: int
    """Bytes of memory per device (on a CPU: the RAM available now)."""
    count: int = 1
    peak_flops: float | None = None
    """Dense FLOP/s of one device in the compute precision; None when unknown."""
    half_precision: bool = True
    """Whether `--dtype auto` trains in bf16 (or fp16) here."""
    efficiency: float = GPU_EFFICIENCY
    flash_attention: bool = False


def detect_device(plan: PlanArgs, parallel: ParallelArgs) -> Device:
    """The device described by --device, --gpus, --gpu_type, --gpu_memory and --peak_tflops, else the one here."""
    import torch

    kind = plan.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        from tunestack.model.precision import cpu_has_fast_bf16

        device = Device("cpu", cpu_name(), _available_ram(), max(plan.gpus or 1, parallel.nproc), None,
                        cpu_has_fast_bf16(), CPU_EFFICIENCY)
        return replace(device, peak_flops=plan.peak_tflops * 1e12 if plan.peak_tflops else None,
                       efficiency=plan.efficiency or device.efficiency)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    memory, name, kind_of = None, None, plan.gpu_type
    if visible:
        props = torch.cuda.get_device_properties(0)
        memory, name = props.total_memory, props.name
        plain = name.lower().replace(" ", "").replace("-", "")
        kind_of = kind_of or next((k for k in sorted(GPUS, key=len, reverse=True) if k.split("-")[0] in plain), None)
    if kind_of:
        memory = memory if visible and not plan.gpu_type else GPUS[kind_of][0] * 2**20
        name = name or kind_of
    if plan.gpu_memory:
        memory = int(plan.gpu_memory * GIB)
    if memory is None:
        raise ConfigError(["--device cuda: no GPU is visible here; say which one to plan for with --gpu_type "
                           f"({', '.join(GPUS)}) or --gpu_memory GIB"])
    peak = plan.peak_tflops * 1e12 if plan.peak_tflops else (GPUS[kind_of][1] * 1e12 if kind_of else None)
    # --dtype auto: bf16, or fp16 where bf16 is missing; 2 bytes either way.
    return Device("cuda", name or f"GPU with {memory / GIB:.0f} GiB", memory, max(plan.gpus or visible or 1,
                  parallel.nproc), peak, True, plan.efficiency or GPU_EFFICIENCY,
                  bool(visible) and importlib.util.find_spec("flash_attn") is not None)


def cpu_peak_flops(half_precision: bool) -> float:
    """Dense matmul FLOP/s of this CPU in the compute precision: the best of a few timed square matmuls."""
    import time

    import torch

    dtype = torch.bfloat16 if half_precision else torch.float32
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


def _available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_name() -> str:
    """This CPU's model name, its core count, and whether it has AMX (bf16 matmuls several times fp32's), AVX-512
    BF16 (about twice) or only AVX2 (bf16 emulated): the kind every speed figure depends on."""
    import os
    import platform

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    kind = ", AMX" if "amx_bf16" in flags else ", AVX-512 BF16" if "avx512_bf16" in flags else \
        ", AVX-512" if "avx512f" in flags else ", AVX2" if "avx2" in flags else ""
    return f"{name} ({os.cpu_count()} cores{kind})"
