"""GPTQ and AWQ export through gptqmodel, calibrated on text rendered from any dataset tunestack can read."""

from __future__ import annotations

import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

from tunestack.compat import import_gptqmodel_quietly
from tunestack.errors import DataError, TunestackError

GROUP_SIZES = (128, 64, 32)
AWQ_OUTPUT_MULTIPLE = 64
"""gptqmodel's AWQ clipping search walks each layer's output rows in batches of 256 or 64."""


def calibration_texts(tokenizer, datasets: list[str], samples: int, run_dir: Path | None = None,
                      max_tokens: int = 512, seed: int = 42) -> list:
    """Token ids of up to `samples` examples: conversations rendered by the chat template, or raw text. Without
    `datasets`, a run's own training data (as it was configured), else the built-in arith."""
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.jsonfile import read_json_object

    data = read_json_object(run_dir / "run.json").get("config", {}).get("data", {}) if run_dir else {}
    datasets = datasets or data.get("dataset") or ["arith"]
    print(f"calibration data: {', '.join(datasets)}", file=sys.stderr)
    args = DataArgs(dataset=[f"{d}#{samples}" if "#" not in d else d for d in datasets],
                    dataset_info=data.get("dataset_info"), model_name=data.get("model_name"),
                    model_author=data.get("model_author"))
    try:
        rows = load_datasets(args, "sft", seed=seed).train
        texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    except DataError as conversation_error:
        try:
            texts = [r["text"] for r in load_datasets(args, "pt", seed=seed).train]
        except DataError:
            raise conversation_error from None
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts[:samples]]
    return [i for i in ids if len(i) > 1]


def group_size(config) -> int:
    """The largest usual group size dividing every linear layer's input width (CPU int4 kernels require it)."""
    widths = [config.hidden_size, getattr(config, "intermediate_size", config.hidden_size)]
    for size in GROUP_SIZES:
        if all(w % size == 0 for w in widths):
            return size
    raise TunestackError(f"--quant: no group size in {GROUP_SIZES} divides the layer widths {widths} of this model")


def architecture_problem(config: dict, quant: str) -> str | None:
    """Why gptqmodel cannot quantize this model (its config.json as a dict), or None."""
    import_gptqmodel_quietly()
    from gptqmodel.models.auto import MODEL_MAP

    model_type = config.get("model_type", "unknown")
    if model_type not in MODEL_MAP:
        return (f"--quant {quant}: gptqmodel does not support the {model_type!r} architecture; use --quant int8, "
                "int4, bnb8 or bnb4, which quantize any linear layers")
    widths = _output_widths(config)
    if quant == "awq" and any(w % AWQ_OUTPUT_MULTIPLE for w in widths):
        return (f"--quant awq: gptqmodel's AWQ needs every linear layer's output width to be a multiple of "
                f"{AWQ_OUTPUT_MULTIPLE}; this model has {sorted(set(widths))}; use --quant gptq")
    return None


def _output_widths(config: dict) -> list[int]:
    """Output widths of a decoder layer's attention and MLP projections, from config.json."""
    hidden, heads = config.get("hidden_size") or 0, config.get("num_attention_heads") or 1
    head_dim = config.get("head_dim") or hidden // heads
    return [hidden, heads * head_dim, (config.get("num_key_value_heads") or heads) * head_dim,
            config.get("intermediate_size") or hidden]


def write_calibrated(scratch: Path, folder: Path, quant: str, calibration: list, max_shard_size: int) -> dict:
    """Quantize the full-precision model (and tokenizer) in `scratch` with gptqmodel on `calibration` and save it
    to `folder`."""
    cwd, scratch, folder = os.getcwd(), scratch.absolute(), folder.absolute()
    os.chdir(scratch)  # gptqmodel writes a logs/ folder into the working directory; keep it in the scratch copy
    try:
        with redirect_stdout(sys.stderr):
            return _write_calibrated(scratch, folder, quant, calibration, max_shard_size)
    finally:
        os.chdir(cwd)


def _write_calibrated(scratch: Path, folder: Path, quant: str, calibration: list, max_shard_size: int) -> dict:
    # gptqmodel sizes its CPU worker pool from this variable; its default asks for more than a 2-core machine has.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(4, os.cpu_count() or 1))))
    import torch
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD
    from transformers import AutoConfig

    group = group_size(AutoConfig.from_pretrained(scratch))
    awq = quant == "awq"
    method, fmt = (METHOD.AWQ, FORMAT.GEMM) if awq else (METHOD.GPTQ, FORMAT.GPTQ)
    # AWQ with zero points is the GEMM layout AutoAWQ writes and vLLM serves; gptqmodel packs it with its portable
    # torch kernel where its CUDA AWQ kernels are missing.
    config = QuantizeConfig(bits=4, group_size=group, method=method, format=fmt, sym=not awq, offload_to_disk=False)
    backend = BACKEND.AWQ_TORCH if awq and not torch.cuda.is_available() else BACKEND.AUTO
    print(f"{quant}: calibrating on {len(calibration)} examples (group size {group})", file=sys.stderr)
    model = GPTQModel.load(str(scratch), config)
    model.quantize(calibration, batch_size=4, backend=backend)
    model.save(str(folder), max_shard_size=max_shard_size)
    for leftover in ("quant_log.csv",):
        (folder / leftover).unlink(missing_ok=True)
    from gptqmodel import __version__

    return {"method": quant, "backend": f"gptqmodel {__version__}", "type": quant, "bits": 4, "group_size": group,
            "format": fmt.value, "scheme": f"int4 weights ({'asymmetric' if awq else 'symmetric'}), 16-bit activations",
            "calibration_examples": len(calibration)}
