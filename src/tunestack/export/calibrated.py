"""GPTQ and AWQ export through gptqmodel, calibrated on text rendered from any dataset tunestack can read."""

from __future__ import annotations

import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

from tunestack.errors import DataError, TunestackError

GROUP_SIZES = (128, 64, 32)


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


def architecture_problem(model_type: str, quant: str) -> str | None:
    """Why gptqmodel cannot quantize this architecture, or None."""
    with redirect_stdout(sys.stderr):  # gptqmodel prints a banner on import; stdout carries only the export's path
        from gptqmodel.models.auto import MODEL_MAP

    if model_type in MODEL_MAP:
        return None
    return (f"--quant {quant}: gptqmodel does not support the {model_type!r} architecture; use --quant int8, int4, "
            "bnb8 or bnb4, which quantize any linear layers")


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
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD
    from transformers import AutoConfig

    group = group_size(AutoConfig.from_pretrained(scratch))
    method, fmt = (METHOD.AWQ, FORMAT.GEMM) if quant == "awq" else (METHOD.GPTQ, FORMAT.GPTQ)
    config = QuantizeConfig(bits=4, group_size=group, method=method, format=fmt, offload_to_disk=False)
    print(f"{quant}: calibrating on {len(calibration)} examples (group size {group})", file=sys.stderr)
    model = GPTQModel.load(str(scratch), config)
    model.quantize(calibration, batch_size=4)
    model.save(str(folder), max_shard_size=max_shard_size)
    for leftover in ("quant_log.csv",):
        (folder / leftover).unlink(missing_ok=True)
    from gptqmodel import __version__

    return {"method": quant, "backend": f"gptqmodel {__version__}", "type": quant, "bits": 4, "group_size": group,
            "format": fmt.value, "calibration_examples": len(calibration)}
