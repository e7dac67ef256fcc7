"""What an export reads and writes, checked before any model loads: the adapters, their base, the output folder."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tunestack.config import ExportArgs, ModelArgs
from tunestack.config.parse import field_problems
from tunestack.errors import ConfigError, TunestackError
from tunestack.jsonfile import read_json_object
from tunestack.export.gguf import gguf_architecture_problem
from tunestack.export.quantize import METHODS, require_backend
from tunestack.hub import ResolvedModel, resolve_model
from tunestack.progress import EVENTS_FILE
from tunestack.run.manifest import adapter_fingerprint, model_fingerprint


@dataclass
class Adapter:
    """One PEFT adapter to merge, and the run directory it came from, if any."""

    given: str
    """The name as typed (or the run directory --model pointed to)."""
    path: Path
    """The folder holding adapter_config.json."""
    config: dict
    run_base_fingerprint: str | None = None
    """The base model fingerprint the run recorded in run.json."""

    @property
    def dora(self) -> bool:
        return bool(self.config.get("use_dora"))

    def record(self) -> dict:
        """How export.json describes this adapter."""
        return {"given": self.given, "path": str(self.path), "type": "dora" if self.dora else "lora",
                "rank": self.config.get("r"), "fingerprint": adapter_fingerprint(self.path),
                "base_model": self.config.get("base_model_name_or_path"),
                "base_model_fingerprint": self.run_base_fingerprint}


@dataclass
class ExportPlan:
    """A validated export: the resolved base, its fingerprint, the adapters in merge order and the output folder."""

    resolved: ResolvedModel
    base_fingerprint: str
    adapters: list[Adapter]
    output: Path


def plan_export(model: ModelArgs, export: ExportArgs) -> ExportPlan:
    """Check every flag, adapter and the output folder, raising once with every problem, before anything loads."""
    problems = field_problems(export) + _output_problems(export)
    if not export.merge:
        problems.append("--merge false: this version only writes merged models; drop --merge false")
    problems += _quant_problems(export)
    converting = export.to == "gguf" or export.quant is not None  # a model without adapters is written as it is
    if not export.adapter and not converting and not Path(model.model).expanduser().is_dir():  # folders carry one
        problems.append(_NOTHING_TO_MERGE.format(model=model.model))
    if problems:  # before resolving: a hub id would otherwise download first
        raise ConfigError(problems)
    if export.quant:
        require_backend(export.quant)
    if export.push_to_hub:
        from tunestack.export.publish import check_push

        check_push(export.push_to_hub, model.hub)
    resolved = resolve_model(model.model, hub=model.hub, revision=model.revision)
    from tunestack.model.load import refuse_pickle

    for folder in [resolved.path, *resolved.adapters, *(Path(a).expanduser() for a in export.adapter)]:
        refuse_pickle(folder / "final" if (folder / "run.json").is_file() else folder, model.allow_pickle)
    if resolved.head == "reward":
        raise ConfigError([f"--model {model.model} is a reward model: export writes causal language models; score "
                           f"with it in place (tunestack infer --score --model {model.model}) or pass its run "
                           "directory to ppo --reward_model / grpo --reward_funcs"])
    fingerprint = model_fingerprint(Path(resolved.path))
    adapters = []
    for link in resolved.adapter_chain:  # parent runs' adapters, merged first (their run.json names the same base)
        adapters.append(_adapter(str(link.parent if link.name == "final" else link),
                                 link.parent if (link.parent / "run.json").is_file() else None, link))
    if resolved.adapter is not None:
        adapters.append(_adapter(str(resolved.run_dir or resolved.adapter), resolved.run_dir, resolved.adapter))
    for given in export.adapter:
        try:
            adapters.append(_open(given))
        except TunestackError as error:
            problems.append(str(error))
    problems += [p for a in adapters if (p := _base_problem(a, model.model, resolved.path, fingerprint))]
    output = Path(export.output_dir).expanduser().absolute()
    if not adapters and not export.adapter and not converting and resolved.run_dir is None:
        problems.append(_NOTHING_TO_MERGE.format(model=model.model))  # a full fine-tune's run is written as it is
    problems += _weight_problems(export.adapter_weights, adapters)
    if export.to == "gguf" and (problem := gguf_architecture_problem(Path(resolved.path))):
        problems.append(problem)
    if export.quant and METHODS[export.quant].calibrated:
        from tunestack.export.calibrated import architecture_problem

        problems += [p for p in [architecture_problem(read_json_object(Path(resolved.path) / "config.json"),
                                                      export.quant)] if p]
    for source in [resolved.path, resolved.run_dir] + [a.path for a in adapters]:
        if source is not None and output.resolve() in [Path(source).resolve(), *Path(source).resolve().parents]:
            problems.append(f"--output_dir {output} holds the model or adapter being exported ({source}); "
                            "choose another folder")
    if problems:
        raise ConfigError(problems)
    return ExportPlan(resolved, fingerprint, adapters, output)


_NOTHING_TO_MERGE = "--model {model} carries no adapter and no --adapter was given: nothing to merge"


def _output_problems(export: ExportArgs) -> list[str]:
    if not export.output_dir:
        return ["--output_dir: required; the folder the merged model is written to"]
    output = Path(export.output_dir).expanduser()
    if output.exists() and not output.is_dir():
        return [f"--output_dir {output} is a file; pass a folder"]
    # A folder holding only the events of an export that stopped is free to use.
    if output.is_dir() and any(p.name != EVENTS_FILE for p in output.iterdir()) and not export.overwrite:
        return [f"--output_dir {output} is not empty; pass --overwrite to replace it or choose another folder"]
    return []


def _quant_problems(export: ExportArgs) -> list[str]:
    problems = []
    if export.quant and export.to == "gguf":
        problems.append(f"--quant {export.quant} with --to gguf: choose one; --gguf_type q8_0 or q4_0 quantizes the "
                        "GGUF file, --quant (with --to hf) the Hugging Face folder")
    text = Path(export.ppl_text).expanduser() if export.ppl_text else None
    if export.eval_ppl and text is not None and not text.is_file():
        problems.append(f"--ppl_text {export.ppl_text}: no such file; pass a UTF-8 .txt file or drop --ppl_text")
    return problems


def _weight_problems(weights: list[float], adapters: list[Adapter]) -> list[str]:
    if not weights or not adapters:
        return []
    names = ", ".join(a.given for a in adapters)
    if len(weights) != len(adapters):
        return [f"--adapter_weights: {len(weights)} weights for {len(adapters)} adapters ({names}); give one each"]
    return [f"--adapter_weights: adapter {a.given} is DoRA, which a weighted combination would distort; drop "
            "--adapter_weights to merge the adapters one after another" for a in adapters if a.dora]


def _open(given: str) -> Adapter:
    """An --adapter: a PEFT adapter folder, or a run directory whose final/ holds one."""
    path = Path(given).expanduser()
    if not path.is_dir():
        raise TunestackError(f"--adapter {given}: no such directory")
    if (path / "run.json").is_file():
        if not (path / "final" / "adapter_config.json").is_file():
            raise TunestackError(f"--adapter {given}: run directory without an adapter in final/ (a full "
                                 "fine-tune, or unfinished); pass it as --model instead")
        return _adapter(given, path, path / "final")
    if not (path / "adapter_config.json").is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
        raise TunestackError(f"--adapter {given}: {path} has no adapter_config.json (it holds {found}); expected "
                             "a PEFT adapter folder or a run directory")
    return _adapter(given, None, path)


def _adapter(given: str, run_dir: Path | None, path: Path) -> Adapter:
    config = read_json_object(path / "adapter_config.json")
    recorded = read_json_object(run_dir / "run.json").get("base_model_fingerprint") if run_dir else None
    return Adapter(given, Path(path).absolute(), config, recorded)


def _base_problem(adapter: Adapter, model: str, base_path: Path, fingerprint: str) -> str | None:
    """Why `adapter` does not belong on --model, or None; a base that is not on this machine gets a warning."""
    trained_on, what = adapter.run_base_fingerprint, "run.json"
    if trained_on is None:
        base = adapter.config.get("base_model_name_or_path")
        local = _local_model(str(base)) if base else None
        if local is None or Path(local).resolve() == Path(base_path).resolve():
            if base and local is None and base != model:
                print(f"warning: adapter {adapter.given} names base model {base}, which is not on this machine; "
                      f"cannot check that it matches --model {model}", file=sys.stderr)
            return None
        trained_on, what = model_fingerprint(Path(local)), f"base_model_name_or_path {base}"
    if trained_on in (fingerprint, model_fingerprint(Path(base_path), legacy=True)):
        return None
    return (f"adapter {adapter.given} was trained on base with fingerprint {trained_on} ({what}); --model {model} "
            f"has {fingerprint} ({base_path}); pass the base model it was trained on")


def _local_model(name: str) -> Path | None:
    """The local model folder `name` stands for, without touching the network; None when it is not here."""
    from tunestack.hub.fetch import MODEL_FILES, cached_snapshot, looks_like_hub_id

    if Path(name).expanduser().is_dir():
        try:
            return Path(resolve_model(name).path)
        except TunestackError:
            return None
    return cached_snapshot(name, patterns=MODEL_FILES) if looks_like_hub_id(name) else None
