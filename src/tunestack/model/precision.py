"""Choose the compute precision: bf16 where the hardware is fast at it, fp32 otherwise."""

from __future__ import annotations

import contextlib

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


MATVEC_ROWS = 2
"""The most rows (batch rows times positions) a bf16 product on the CPU may have to go through ATen's own kernel
rather than oneDNN's (`cpu_matvec`); 0 leaves every product to oneDNN."""


@contextlib.contextmanager
def cpu_matvec(model: torch.nn.Module, rows: int):
    """Run a forward pass of `rows` token rows on ATen's bf16 matrix-vector kernel instead of oneDNN's, where that
    is faster: a bf16 model on a CPU whose oneDNN does bf16, at most MATVEC_ROWS rows (a decoding step of one or two
    sequences, a draft model's step).

    At one row oneDNN's bf16 matmul is bound by its own overheads, where ATen's gemv (fp32 accumulation with
    AVX-512) streams the weights at the memory's speed: the embedded model's linear layers, one row, took 8.6 ms
    against 17.7 ms on an AMD EPYC with AVX-512 BF16, and the engine's single-stream decoding went from 21.6-22.7 to
    29.6-37.6 tokens/s (benchmarks/README.md, "Decoding speed"). From three rows on oneDNN is as fast or faster, so batches
    and prefill keep it. The two kernels sum in different orders, so a bf16 logit can differ in its last bit and a
    greedy near-tie fall the other way; fp32 models are untouched.

    oneDNN is switched off for the whole process (torch has no per-call switch) while the block runs, so it is
    meant for the thread that owns the model, as the pt engine's scheduler does."""
    if not (0 < rows <= MATVEC_ROWS and torch.backends.mkldnn.enabled and _bf16_on_cpu(model)
            and _onednn_does_bf16()):
        yield
        return
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True


def _bf16_on_cpu(model: torch.nn.Module) -> bool:
    weight = model.get_output_embeddings().weight if hasattr(model, "get_output_embeddings") else None
    if weight is None:
        weight = next(model.parameters(), None)
    return weight is not None and weight.device.type == "cpu" and weight.dtype == torch.bfloat16


def _onednn_does_bf16() -> bool:
    """Whether torch sends bf16 matmuls to oneDNN on this CPU (AVX-512 BF16 or AMX; on AVX2 alone ATen's kernels run
    them already)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
