"""Quantize an exported model with a real library per method, so that transformers (or vLLM) loads it back."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tunestack.errors import MissingExtraError, TunestackError


@dataclass(frozen=True)
class QuantMethod:
    """One `--quant` choice: the library that does it, the extra that installs it, whether it calibrates. Every
    method runs on CPU; where a faster CUDA path exists (torchao int4, transformers' fp8) it is taken there."""

    name: str
    package: str
    """Import name checked before any model loads."""
    extra: str
    summary: str
    calibrated: bool = False
    """Needs calibration text (--calib_dataset)."""


METHODS = {m.name: m for m in [
    QuantMethod("int8", "torchao", "torchao", "int8 weight-only, per channel, through torchao: every linear layer "
                "and the embedding matrix (a tied output layer shares it)"),
    QuantMethod("int4", "torchao", "torchao", "int4 weight-only through torchao on CUDA; optimum-quanto elsewhere"),
    QuantMethod("bnb8", "bitsandbytes", "qlora", "LLM.int8 through bitsandbytes"),
    QuantMethod("bnb4", "bitsandbytes", "qlora", "NF4 with double quantization through bitsandbytes"),
    QuantMethod("hqq", "optimum.quanto", "quanto", "4-bit half-quadratic quantization (HQQ), calibration-free, "
                "through optimum-quanto's HQQ optimizer (group 128 or the largest multiple of 32 below it)"),
    QuantMethod("gptq", "gptqmodel", "gptq", "4-bit GPTQ (group 128) through gptqmodel", calibrated=True),
    QuantMethod("awq", "gptqmodel", "gptq", "4-bit AWQ (group 128) through gptqmodel", calibrated=True),
    QuantMethod("fp8", "torch", "torchao", "fp8 e4m3 weights: block-wise through transformers on CUDA 8.9+, "
                "weight-only per row through torchao elsewhere"),
]}
QUANT_TYPES = tuple(METHODS)


def require_backend(quant: str) -> None:
    """Raise the one-line install hint when the method's library is missing."""
    package, extra = ("optimum.quanto", "quanto") if _through_quanto(quant) else \
        ("torchao", "torchao") if _fp8_through_torchao(quant) else (METHODS[quant].package, METHODS[quant].extra)
    if importlib.util.find_spec(package) is None:
        raise MissingExtraError(package.replace(".", "-"), extra, f"--quant {quant} export")


def _through_quanto(quant: str) -> bool:
    """hqq always goes through optimum-quanto (transformers' HQQ quantizer has no quantize or load step); int4 where
    torchao's int4 kernels (CUDA, Ampere or newer) are missing."""
    return quant == "hqq" or (quant == "int4" and not _cuda_capability((8, 0)))


def _fp8_through_torchao(quant: str) -> bool:
    """fp8 goes through torchao (weight-only) where transformers' fine-grained fp8 kernels (CUDA 8.9+) are missing."""
    return quant == "fp8" and not _cuda_capability((8, 9))


def _cuda_capability(least: tuple[int, int]) -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= least


def bnb_config(quant: str):
    """bnb4: NF4 with double quantization and bf16 compute; bnb8: LLM.int8."""
    import torch
    from transformers import BitsAndBytesConfig

    if quant == "bnb4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def transformers_config(quant: str, model=None):
    """The transformers quantization config that quantizes a model as it loads, and what export.json says of it
    (int8 names the weights of `model`, the full-precision model, that it quantizes)."""
    if quant in ("bnb4", "bnb8"):
        config = bnb_config(quant)
        if quant == "bnb4":
            return config, {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4", "double_quant": True,
                            "compute_dtype": "bfloat16"}
        return config, {"method": "bitsandbytes", "bits": 8, "quant_type": "llm.int8",
                        "threshold": config.llm_int8_threshold}
    if quant in ("int8", "int4"):
        from torchao.quantization import Int4WeightOnlyConfig
        from transformers import TorchAoConfig

        if quant == "int8":
            return int8_config(model), {"method": "torchao", "bits": 8, "granularity": "per channel",
                                        "embeddings": True}
        return TorchAoConfig(Int4WeightOnlyConfig(group_size=128)), {"method": "torchao", "bits": 4, "group_size": 128}
    if quant == "fp8" and _fp8_through_torchao(quant):
        from torchao import __version__
        from torchao.quantization import Float8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Float8WeightOnlyConfig()), {
            "method": "torchao", "backend": f"torchao {__version__}", "bits": 8, "weights": "float8_e4m3fn",
            "granularity": "per row", "scheme": "fp8 weight-only (activations stay in the model's dtype)"}
    if quant == "fp8":
        from transformers import FineGrainedFP8Config, __version__

        return FineGrainedFP8Config(), {"method": "fp8", "backend": f"transformers {__version__}", "bits": 8,
                                        "weights": "float8_e4m3fn", "block": [128, 128],
                                        "scheme": "fp8 weights and dynamic fp8 activations"}
    raise TunestackError(f"--quant {quant} is not quantized while loading")  # gptq/awq go through calibrated.py


def write_quantized(model, tokenizer, folder: Path, quant: str, dtype, max_shard_size: int,
                    calibration=None) -> dict:
    """Write `model` (full precision) to `folder` quantized by `quant`. Returns what export.json records about it.

    Most methods quantize while transformers loads the full-precision copy from a scratch folder; hqq, and int4
    without a CUDA GPU (torchao's int4 kernels need one), go through optimum-quanto; fp8 without a CUDA GPU of compute
    capability 8.9 uses torchao's weight-only float8; gptq and awq calibrate on `calibration`."""
    require_backend(quant)
    if _fp8_through_torchao(quant):
        print("fp8: transformers' fp8 kernels need a CUDA GPU with compute capability 8.9; quantizing the weights "
              "only, per row, with torchao instead", file=sys.stderr)
    if _through_quanto(quant):
        from tunestack.export.quanto import write_quanto

        return write_quanto(model, folder, max_shard_size, quant)
    scratch = folder / "unquantized"
    model.save_pretrained(scratch, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(scratch)
    try:
        if METHODS[quant].calibrated:
            from tunestack.export.calibrated import write_calibrated

            return write_calibrated(scratch, folder, quant, calibration, max_shard_size)
        return _quantize_on_load(scratch, folder, quant, dtype, max_shard_size, model)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _quantize_on_load(scratch: Path, folder: Path, quant: str, dtype, max_shard_size: int, model) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from tunestack.compat import torchao_tied_weights_saved_once

    config, settings = transformers_config(quant, model)
    device = {"": 0} if torch.cuda.is_available() else ({"": "cpu"} if quant.startswith("bnb") else None)
    quantized = AutoModelForCausalLM.from_pretrained(scratch, dtype=dtype, quantization_config=config,
                                                     device_map=device)
    with torchao_tied_weights_saved_once(quantized):
        quantized.save_pretrained(folder, max_shard_size=max_shard_size)
    return {"type": quant, "backend": settings["method"], **settings, "unquantized_linear": unquantized(quantized)}


def int8_config(model):
    """torchao int8 weight-only, per output channel, for every linear weight and the input embedding's weight.

    The weights are named by one pattern over parameter names (layer numbers generalised), so biases and norms
    stay in full precision; a tied output layer is quantized with the embedding it shares. The embedding is a
    fifth of a small model's weights, so leaving it out (transformers' default) costs a tenth of the size."""
    import torch
    from torchao.quantization import FqnToConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    embedding = model.get_input_embeddings()
    owners = sorted({_name_pattern(name) for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) or module is embedding})
    pattern = "re:(" + "|".join(owners) + r")\.weight"
    return TorchAoConfig(FqnToConfig({pattern: Int8WeightOnlyConfig()}), include_input_output_embeddings=True)


def _name_pattern(name: str) -> str:
    return r"\.".join(r"\d+" if part.isdigit() else re.escape(part) for part in name.split("."))


def unquantized(model) -> list[str]:
    """Linear layers still holding plain floating-point weights (bitsandbytes swaps the module class, torchao the
    weight's tensor class)."""
    import torch

    return sorted(name for name, module in model.named_modules() if type(module) is torch.nn.Linear
                  and type(module.weight) in (torch.nn.Parameter, torch.Tensor))
