"""Choose the compute precision: bf16 where the hardware is fast at it, fp32 otherwise."""

from __future__ import annotations

import torch

from tunestack.errors import TunestackError

_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul instructions: AMX tiles (Intel Sapphire Rapids and later) or AVX-512 BF16
    (AMD Zen 4 and later, Intel Cooper Lake). oneDNN's bf16 matmuls run there at about 2.5x (AVX-512 BF16) to 7x (AMX)
    the fp32 rate, and a short LoRA job's steps 1.3x to 2x faster; on CPUs with AVX2 only, bf16 is emulated and slower
    than fp32."""
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(probe and probe() for probe in probes)


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype for --dtype: 'auto' picks bf16 on CUDA GPUs that support it and on CPUs with
    native bf16 (AMX or AVX-512 BF16), else fp32."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if name == "fp16" and not torch.cuda.is_available():
        raise TunestackError("--dtype fp16: half precision needs a CUDA GPU; use bf16 or fp32 on CPU")
    return _NAMES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _NAMES.items()}[dtype]
