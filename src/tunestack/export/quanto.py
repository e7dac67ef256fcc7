"""4-bit weight-only export through optimum-quanto: int4 where torchao's int4 kernels do not run (no CUDA), and hqq,
which transformers' own HQQ quantizer cannot do."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunestack.model.load import QUANTO_QMAP

WHY = {
    "int4": "torchao's int4 kernels need a CUDA GPU; quantizing with optimum-quanto instead",
    "hqq": "transformers' HQQ quantizer has no quantize or load step in this version and refuses CPU; quantizing "
           "with optimum-quanto's HQQ optimizer (half-quadratic scale/zero fit) instead",
}
OPTIMIZER = {"int4": "min-max", "hqq": "hqq"}


def write_quanto(model, folder: Path, max_shard_size: int, quant: str) -> dict:
    """Quantize the linear layers (not lm_head) to int4 with optimum-quanto, fitting each group's scale and zero by
    min/max (int4) or by half-quadratic optimization (hqq), and save them with optimum-quanto's own format."""
    import torch
    from optimum.quanto import HqqOptimizer, QuantizedModelForCausalLM, qint4

    print(f"{quant}: {WHY[quant]}", file=sys.stderr)
    optimizer = HqqOptimizer() if quant == "hqq" else None  # None: optimum-quanto's min/max
    with torch.no_grad():  # the HQQ optimizer reads errors as floats, which warns on tensors that need gradients
        quantized = QuantizedModelForCausalLM.quantize(model, weights=qint4, optimizer=optimizer, exclude="lm_head")
    groups = group_sizes(model)
    quantized.save_pretrained(folder, max_shard_size=max_shard_size)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    # Not transformers' QuantoConfig: transformers cannot load quanto checkpoints; this tells readers how to.
    config["quantization_config"] = {"quant_method": "quanto", "weights": "int4", "optimizer": OPTIMIZER[quant],
                                     "group_size": groups, "exclude": ["lm_head"],
                                     "loader": "optimum.quanto.QuantizedModelForCausalLM"}
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    qmap = json.loads((folder / QUANTO_QMAP).read_text())
    return {"method": quant if quant == "hqq" else "optimum-quanto", "backend": "optimum-quanto", "type": quant,
            "bits": 4, "group_size": groups, "optimizer": OPTIMIZER[quant], "quantized_modules": len(qmap),
            "note": f"{WHY[quant].split(';')[0]}; optimum-quanto was used, and loads it back (tunestack "
                    "infer/serve/eval do so)"}


def group_sizes(model) -> list[int]:
    """The weight group sizes optimum-quanto chose (128, or the largest multiple of 32 below it dividing the input
    width); a layer quantized per output row counts its whole input width as one group."""
    from optimum.quanto import QModuleMixin

    return sorted({module.weight_group_size or module.weight.shape[1] for module in model.modules()
                   if isinstance(module, QModuleMixin)})
