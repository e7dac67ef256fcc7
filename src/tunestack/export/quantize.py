"""Quantize an exported Hugging Face model with bitsandbytes, so that plain transformers loads it back quantized."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from tunestack.errors import MissingExtraError

QUANT_TYPES = ("bnb4", "bnb8")


def require_bitsandbytes() -> None:
    """Raise the one-line install hint when bitsandbytes is missing; called before any model loads."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingExtraError("bitsandbytes", "qlora", "bnb4/bnb8 export")


def bnb_config(quant: str):
    """bnb4: NF4 with double quantization and bf16 compute; bnb8: LLM.int8."""
    import torch
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    if quant == "bnb4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def write_quantized(model, folder: Path, quant: str, dtype, max_shard_size: int) -> dict:
    """Save `model` (full precision) to a scratch folder inside `folder`, reload it quantized, save that to
    `folder` and remove the scratch copy. Returns what export.json records about the quantization."""
    import torch
    from transformers import AutoModelForCausalLM

    scratch = folder / "unquantized"
    model.save_pretrained(scratch, max_shard_size=max_shard_size)
    config = bnb_config(quant)
    device = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    quantized = AutoModelForCausalLM.from_pretrained(scratch, dtype=dtype, quantization_config=config,
                                                     device_map=device)
    quantized.save_pretrained(folder, max_shard_size=max_shard_size)
    shutil.rmtree(scratch)
    if quant == "bnb4":
        settings = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}
    else:
        settings = {"bits": 8, "quant_type": "llm.int8", "threshold": config.llm_int8_threshold}
    skipped = sorted(n for n, m in quantized.named_modules() if type(m) is torch.nn.Linear)
    return {"method": "bitsandbytes", "type": quant, **settings, "unquantized_linear": skipped}
