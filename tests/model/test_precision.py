"""`--dtype auto` on a CPU: bf16 where the CPU has native bf16 matmuls (AMX or AVX-512 BF16), fp32 where it only
emulates them."""

import pytest
import torch

from tunestack.model import precision


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, True, torch.bfloat16),     # Intel Sapphire Rapids and later
    (False, True, torch.bfloat16),    # AMD Zen 4 and later, Intel Cooper Lake
    (False, False, torch.float32),    # AVX2 only: bf16 emulated
])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert precision.resolve_dtype("auto") == expected
    assert precision.resolve_dtype("fp32") == torch.float32
