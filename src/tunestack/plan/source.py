"""Find a model's config.json for an estimate without loading or downloading its weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunestack.config import ModelArgs
from tunestack.errors import ModelNotFoundError


@dataclass
class ModelSource:
    """A model's config and, when the model is on this machine, the folder its tokenizer loads from."""

    config: dict
    where: str
    """Where the config came from, in words."""
    local: Path | None = None
    """A local model folder (config, tokenizer, weights), used to tokenize --dataset; None for hub ids."""
    template: str | None = None
    """The chat template name an alias or run records."""


def model_source(args: ModelArgs) -> ModelSource:
    """The config of `--model`: a local or run directory, a .gguf file, an alias, or a hub id (config.json only)."""
    from tunestack.hub.registry import lookup_alias

    path = Path(args.model).expanduser()
    if path.is_dir():
        return _directory(path, args)
    if path.is_file() and path.suffix.lower() == ".gguf":
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        return ModelSource(load_gguf_checkpoint(str(path), return_tensors=False)["config"], f"GGUF file {path}")
    alias = lookup_alias(args.model)
    if alias is not None and alias.embedded:
        from tunestack.hub.gguf import embedded_gguf_path

        if embedded_gguf_path() is not None:  # on this machine: converted once (no download), as sft does
            from tunestack.hub import resolve_model

            resolved = resolve_model(args.model)
            return ModelSource(_read(resolved.path / "config.json"), resolved.source, resolved.path, alias.template)
    if alias is not None:
        repo = alias.hub_id(args.model, args.hub)
        return ModelSource(_hub_config(repo, args), f"hub {repo} (config.json only)", template=alias.template)
    from tunestack.hub.fetch import looks_like_hub_id

    if not looks_like_hub_id(args.model):
        raise ModelNotFoundError(f"model '{args.model}' is not a local directory, .gguf file, alias (see `tunestack "
                                 "models`) or hub id (org/name)")
    return ModelSource(_hub_config(args.model, args), f"hub {args.model} (config.json only)")


def _directory(path: Path, args: ModelArgs) -> ModelSource:
    """A model folder, a run directory (its full model or its base) or an adapter folder (its base)."""
    if (path / "run.json").is_file():
        meta = _read(path / "run.json")
        if (path / "final" / "config.json").is_file():
            return ModelSource(_read(path / "final" / "config.json"), f"run {path} (full fine-tune)", path / "final",
                               meta.get("template"))
        base = meta.get("base_model_path")
        if base and (Path(base) / "config.json").is_file():
            return ModelSource(_read(Path(base) / "config.json"), f"run {path} (base {base})", Path(base),
                               meta.get("template"))
        return _base_of(meta.get("base_model"), f"run directory {path}", args)
    if (path / "config.json").is_file():
        return ModelSource(_read(path / "config.json"), f"local directory {path}", path)
    if (path / "adapter_config.json").is_file():
        return _base_of(_read(path / "adapter_config.json").get("base_model_name_or_path"), f"adapter {path}", args)
    raise ModelNotFoundError(f"model '{args.model}': directory {path} has no config.json, run.json or "
                             "adapter_config.json")


def _base_of(name: str | None, owner: str, args: ModelArgs) -> ModelSource:
    if not name:
        raise ModelNotFoundError(f"{owner} does not name its base model; pass the base as --model")
    import dataclasses

    return model_source(dataclasses.replace(args, model=str(name)))


def _hub_config(repo: str, args: ModelArgs) -> dict:
    """config.json of a hub repository, from the cache or fetched alone; offline or unreachable: one clear error."""
    if args.hub == "modelscope":
        return _modelscope_config(repo, args.revision)
    from tunestack.hub.fetch import HubUnavailable, explain, hf_snapshot

    try:
        folder, _ = hf_snapshot(repo, args.revision, patterns=["config.json"])
    except HubUnavailable as error:
        problem, fix = explain(error, repo, args.revision)
        raise ModelNotFoundError(f"model '{args.model}': the estimate needs {repo}'s config.json, which is "
                                 f"{problem}. {fix}") from error
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"model '{args.model}': hub repository {repo} has no config.json")
    return _read(folder / "config.json")


def _modelscope_config(repo: str, revision: str | None) -> dict:
    from tunestack.errors import MissingExtraError

    try:
        from modelscope import snapshot_download
    except ImportError as error:
        raise MissingExtraError("modelscope", "modelscope", "Reading a ModelScope model's config") from error
    try:
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=["config.json"]))
    except Exception as error:
        raise ModelNotFoundError(f"model '{repo}': ModelScope could not provide its config.json ({error})") from error
    return _read(folder / "config.json")


def _read(path: Path) -> dict:
    from tunestack.jsonfile import read_json_object

    return read_json_object(path, ModelNotFoundError)
