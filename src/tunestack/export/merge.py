"""Merge adapters into their base model and write a plain Hugging Face model folder, complete or not at all."""

from __future__ import annotations

import json
import re
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from tunestack.config import ExportArgs, ModelArgs
from tunestack.errors import TunestackError
from tunestack.export.atomic import write_folder_atomically
from tunestack.export.perplexity import perplexity, read_text
from tunestack.export.publish import model_card
from tunestack.export.quantize import METHODS
from tunestack.export.sources import ExportPlan, plan_export
from tunestack.jsonfile import read_json_object
from tunestack.progress import EVENTS_FILE, Progress, TerminalBar, events_path

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}
"""Saved dtypes an `--dtype auto` export keeps; anything else is written in fp32."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_export(model_args: ModelArgs, export: ExportArgs) -> Path:
    """Merge --model's adapters (a run's own, then each --adapter) and write the result to --output_dir; with
    --quant, quantized (see export/quantize.py); with --to gguf, also as OUTPUT_DIR/model-<gguf_type>.gguf (a model without
    adapters is written as it is). With --eval_ppl, export.json compares perplexity before and after.
    Progress events (load, merge, quantize or write, perplexity, gguf, upload, end) go into OUTPUT_DIR/events.jsonl
    from the moment the flags are found good; an export that stops leaves that file alone there.
    The output folder's path is the only thing printed to stdout."""
    with redirect_stdout(sys.stderr):  # some quantization libraries print progress to stdout
        plan = plan_export(model_args, export)
        events_path(plan.output).unlink(missing_ok=True)  # an earlier export's, replaced by --overwrite
        with Progress(plan.output, listeners=[TerminalBar()]) as progress:
            output = _export(plan, model_args, export, progress)
            progress.end("completed", str(output))
    print(output, flush=True)
    return output


def _export(plan: ExportPlan, model_args: ModelArgs, export: ExportArgs, progress: Progress) -> Path:
    say(f"model: {plan.resolved.source}")
    progress.start("load", message=plan.resolved.source)
    processor = _processor(plan, model_args, export)
    tokenizer = _tokenizer(plan, model_args) if processor is None else processor.tokenizer
    text = read_text(export.ppl_text) if export.eval_ppl else None
    source: dict = {}
    measure = (lambda m: source.update(zip(("source", "tokens"), perplexity(m, tokenizer, text[0])))) if text else None
    model = _merged_model(plan, model_args, tokenizer, export.adapter_weights, measure, progress)
    dtype = model_args.dtype if model_args.dtype != "auto" else _saved_dtype(Path(plan.resolved.path))
    import torch

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    model.to(torch_dtype)
    say(f"writing {plan.output} ({dtype}{', ' + export.quant if export.quant else ''}, "
        f"shards up to {export.max_shard_size})")

    progress.start("quantize" if export.quant else "write", message=export.quant or str(plan.output))
    calibration = None
    if export.quant and METHODS[export.quant].calibrated:
        from tunestack.export.calibrated import calibration_texts

        calibration = calibration_texts(tokenizer, export.calib_dataset, export.calib_samples, plan.resolved.run_dir)

    def write(folder: Path) -> None:
        from tunestack.run.rundir import write_json_atomic

        quantization = None
        if export.quant:
            from tunestack.export.quantize import write_quantized

            quantization = write_quantized(model, tokenizer, folder, export.quant, torch_dtype,
                                           shard_bytes(export.max_shard_size), calibration)
        else:
            model.save_pretrained(folder, max_shard_size=shard_bytes(export.max_shard_size))
        (processor or tokenizer).save_pretrained(folder)
        record = _record(plan, model_args, export, dtype, folder)
        if quantization:
            record["quantization"] = quantization
        if text:
            progress.start("perplexity", message=text[1])
            record["perplexity"] = _compare(folder, tokenizer, text, source, export.quant is not None)
        if export.to == "gguf":
            from tunestack.export.gguf import write_gguf

            say(f"writing model-{export.gguf_type}.gguf")
            progress.start("gguf", message=f"model-{export.gguf_type}.gguf")
            record["gguf"] = write_gguf(folder, folder / f"model-{export.gguf_type}.gguf", export.gguf_type)
        write_json_atomic(folder / "export.json", record)
        (folder / "README.md").write_text(model_card(plan.output, record, _base_name(plan), export.push_to_hub))

    write_folder_atomically(plan.output, write, carry=(EVENTS_FILE,))
    say(f"done: {plan.output}")
    if export.push_to_hub:
        from tunestack.export.publish import push

        say(f"uploading to {export.push_to_hub} ({model_args.hub})")
        progress.start("upload", message=export.push_to_hub)
        url = push(plan.output, export.push_to_hub, model_args.hub, export.private)
        say(f"uploaded: {url}")
        progress.message(f"uploaded: {url}")
    return plan.output


def _compare(folder: Path, tokenizer, text: tuple[str, str], source: dict, quantized: bool) -> dict:
    """Perplexity of the model as written in `folder` beside the source's; the GGUF file itself is not scored."""
    from tunestack.model.load import load_exported

    written = load_exported(folder, quantized)
    export, _ = perplexity(written, tokenizer, text[0])
    change = 100 * (export - source["source"]) / source["source"]
    say(f"perplexity on {text[1]} ({source['tokens']} tokens): source {source['source']:.4f}, "
        f"export {export:.4f} ({change:+.2f}%)")
    return {"text": text[1], "tokens": source["tokens"], "source": source["source"], "export": export,
            "change_pct": change}


def _base_name(plan: ExportPlan) -> str | None:
    """The base model's hub id where one is known (an alias stands for its hub id), for the model card."""
    from tunestack.hub.fetch import looks_like_hub_id
    from tunestack.hub.registry import lookup_alias

    run = plan.resolved.run_dir
    trained_from = read_json_object(run / "run.json").get("config", {}).get("model", {}).get("model") if run else None
    names = [a.config.get("base_model_name_or_path") for a in plan.adapters] + [trained_from, plan.resolved.name]
    for name in map(str, filter(None, names)):
        if alias := lookup_alias(name):
            return alias.hf
        if not Path(name).expanduser().exists() and looks_like_hub_id(name):
            return name
    return None


def _processor(plan: ExportPlan, model_args: ModelArgs, export: ExportArgs):
    """A vision-language model's processor (the one saved with its adapter, else the base's), written with the merged
    model so that AutoProcessor loads the export; None for a text model."""
    from tunestack.model.vision import is_multimodal, load_processor

    if not is_multimodal(plan.resolved.path):
        return None
    if export.quant or export.to == "gguf":
        from tunestack.errors import ConfigError

        raise ConfigError([f"--model {plan.resolved.name} is a vision-language model: its export merges adapters "
                           "and writes the HF folder; --quant, --to gguf and --eval_ppl do not handle one yet"])
    first = plan.adapters[0].path if plan.adapters else plan.resolved.path
    folder = first if (first / "processor_config.json").is_file() else plan.resolved.path
    return load_processor(folder, model_args.trust_remote_code)


def _tokenizer(plan: ExportPlan, model_args: ModelArgs):
    """The tokenizer the adapter was trained with (saved beside it), else the base's; always with a chat template."""
    from tunestack.model.load import load_tokenizer

    first = plan.adapters[0].path if plan.adapters else plan.resolved.path
    folder = first if (first / "tokenizer_config.json").is_file() else plan.resolved.path
    tokenizer, _ = load_tokenizer(folder, model_args.template, model_args.trust_remote_code,
                                  fallback_template=plan.resolved.template, chat_template=model_args.chat_template)
    return tokenizer


def _merged_model(plan: ExportPlan, model_args: ModelArgs, tokenizer, weights: list[float], measure=None,
                  progress: Progress | None = None):
    """The base in fp32 with every adapter merged in: combined by weight first when weights are given.
    `measure`, if given, is called on the source model: the base with its last adapter applied but not merged.
    `progress` receives the "merge" phase, counted in adapters."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunestack.compat import import_gptqmodel_quietly

    import_gptqmodel_quietly()  # before peft touches the model
    from transformers import AutoModelForMultimodalLM

    from tunestack.model.vision import is_multimodal

    auto = AutoModelForMultimodalLM if is_multimodal(plan.resolved.path) else AutoModelForCausalLM
    model = auto.from_pretrained(plan.resolved.path, dtype=torch.float32,
                                 trust_remote_code=model_args.trust_remote_code)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:  # as training resized it
        model.resize_token_embeddings(len(tokenizer))
    if model.generation_config is not None:
        _stop_tokens(model.generation_config, tokenizer)
    measure = measure or (lambda m: None)
    progress = progress or Progress(None)
    adapter = plan.adapters[0] if plan.adapters else None
    try:
        if plan.adapters:
            progress.start("merge", total=len(plan.adapters) if len(plan.adapters) > 1 and not weights else None,
                           message=", ".join(a.given for a in plan.adapters), unit="adapter")
        if weights:
            return _combined(model, plan, weights, measure)
        if not plan.adapters:
            measure(model)
        for i, adapter in enumerate(plan.adapters):
            say(f"merging {'DoRA' if adapter.dora else 'LoRA'} adapter {adapter.given}")
            model = PeftModel.from_pretrained(model, str(adapter.path))
            if i == len(plan.adapters) - 1:
                measure(model)
            model = model.merge_and_unload()
            progress.step(i + 1)
        return model
    except (ValueError, RuntimeError, KeyError) as error:
        which = "the adapters" if weights else f"adapter {adapter.given}"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TunestackError(f"{which} cannot be merged into --model {model_args.model}: {detail}") from error


def _stop_tokens(generation_config, tokenizer) -> None:
    """Generation stops at the base's end tokens and at the tokenizer's (the end of turn training taught)."""
    eos = generation_config.eos_token_id
    eos = sorted(i for i in set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id} if i is not None)
    generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
    generation_config.pad_token_id = tokenizer.pad_token_id


def _combined(model, plan: ExportPlan, weights: list[float], measure):
    """One adapter equal to the weighted sum of the adapters' updates, merged into `model`."""
    from peft import PeftModel

    names = [f"adapter{i}" for i in range(len(plan.adapters))]
    model = PeftModel.from_pretrained(model, str(plan.adapters[0].path), adapter_name=names[0])
    for name, adapter in zip(names[1:], plan.adapters[1:]):
        model.load_adapter(str(adapter.path), adapter_name=name)
    say("merging " + " + ".join(f"{w:g} x {a.given}" for w, a in zip(weights, plan.adapters)))
    # "cat" sums weight x scaling x B @ A exactly; peft's "linear" multiplies summed A and B factors instead.
    model.add_weighted_adapter(names, list(weights), "combined", combination_type="cat")
    model.set_adapter("combined")
    measure(model)
    return model.merge_and_unload(adapter_names=["combined"])


def _saved_dtype(path: Path) -> str:
    """bf16 or fp16 when the base model's config.json says it was saved so, else fp32."""
    config = json.loads((path / "config.json").read_text())
    return _DTYPES.get(str(config.get("dtype") or config.get("torch_dtype")), "fp32")


def shard_bytes(size: str) -> int:
    """Bytes in a --max_shard_size such as 2GB, 500MB or 4GiB."""
    number, unit = re.fullmatch(r"(\d+)\s*([KMG]i?B)", size.strip(), re.IGNORECASE).groups()
    return int(number) * _UNITS[unit.upper()]


def _record(plan: ExportPlan, model_args: ModelArgs, export: ExportArgs, dtype: str, folder: Path) -> dict:
    """export.json: what was merged, how, into which files, with which libraries."""
    from tunestack.run.manifest import library_versions

    resolved = plan.resolved
    files = {p.name: p.stat().st_size for p in sorted(folder.glob("*.safetensors"))}
    return {
        "method": "merge" if plan.adapters else "convert",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"model": model_args.model, "resolved": resolved.source, "base_path": str(resolved.path),
                   "base_fingerprint": plan.base_fingerprint,
                   "run_dir": str(resolved.run_dir) if resolved.run_dir else None,
                   "adapters": [a.record() for a in plan.adapters]},
        "settings": {"dtype": dtype, "requested_dtype": model_args.dtype, "max_shard_size": export.max_shard_size,
                     "adapter_weights": list(export.adapter_weights) or None, "quant": export.quant,
                     "combination": "weighted (cat)" if export.adapter_weights else "one after another"},
        "sizes": {"weights_bytes": sum(files.values()), "files": files},
        "versions": library_versions(),
    }
