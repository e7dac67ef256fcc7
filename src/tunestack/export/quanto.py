"""int4 weight-only export through optimum-quanto, for machines where torchao's int4 kernels do not run (no CUDA)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunestack.model.load import QUANTO_QMAP


def write_quanto_int4(model, folder: Path, max_shard_size: int) -> dict:
    """Quantize the linear layers (not lm_head) to int4 with optimum-quanto and save them with its own format."""
    from optimum.quanto import QuantizedModelForCausalLM, qint4

    print("int4: torchao's int4 kernels need a CUDA GPU; quantizing with optimum-quanto instead", file=sys.stderr)
    quantized = QuantizedModelForCausalLM.quantize(model, weights=qint4, exclude="lm_head")
    quantized.save_pretrained(folder, max_shard_size=max_shard_size)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    # Not transformers' QuantoConfig: transformers cannot load quanto checkpoints; this tells readers how to.
    config["quantization_config"] = {"quant_method": "quanto", "weights": "int4", "exclude": ["lm_head"],
                                     "loader": "optimum.quanto.QuantizedModelForCausalLM"}
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    qmap = json.loads((folder / QUANTO_QMAP).read_text())
    return {"method": "optimum-quanto", "backend": "optimum-quanto", "type": "int4", "bits": 4,
            "group_size": None, "quantized_modules": len(qmap),
            "note": "torchao's int4 kernels need a CUDA GPU; optimum-quanto was used, and loads it back "
                    "(tunestack infer/serve/eval do so)"}

