"""Load a model for generation from any name: run directories bring their base, adapter and template; weights load
from safetensors only unless the user allows pickle files."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tunestack.compat import import_gptqmodel_quietly
from tunestack.config import ModelArgs


@dataclass
class LoadedModel:
    """A model ready to generate, its tokenizer (with chat template) and where it came from; for a vision-language
    model also its processor (images to tensors, and the chat template, which the tokenizer then shares)."""

    model: object
    tokenizer: object
    source: str
    processor: object | None = None

    @property
    def eos_token_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(i for i in ids if i is not None)


def resolve_for_inference(model_args: ModelArgs, adapters: list[str] = (), head: str = "causal"):
    """(resolved model, adapter directories to apply in order, tokenizer with the run's chat template).

    `head` is what the caller needs: `causal` to generate, `reward` to score; a model of the other kind is refused."""
    from tunestack.hub import resolve_model
    from tunestack.model.load import load_tokenizer

    resolved = resolve_model(model_args.model, hub=model_args.hub, revision=model_args.revision)
    check_head(model_args.model, resolved.head, head)
    adapter_dirs = resolved.adapters + [Path(a) for a in adapters]
    # The run's adapter folder carries the tokenizer and template the model was trained with.
    own = resolved.adapter
    tokenizer_dir = own if own is not None and (own / "tokenizer_config.json").is_file() else resolved.path
    tokenizer, _ = load_tokenizer(tokenizer_dir, model_args.template, model_args.trust_remote_code,
                                  fallback_template=resolved.template, chat_template=model_args.chat_template)
    tokenizer.padding_side = "left"
    return resolved, adapter_dirs, tokenizer


def refuse_pickle(folder: Path, allow_pickle: bool) -> None:
    """model/load.py's check that weights are safetensors (imported when needed: it brings torch)."""
    from tunestack.model.load import refuse_pickle as check

    check(folder, allow_pickle)


def load_for_inference(model_args: ModelArgs, adapters: list[str] = (),
                       named_adapters: dict[str, str] | None = None, allow_pickle: bool = False,
                       head: str = "causal", images_from: str | None = None) -> LoadedModel:
    """Resolve, load and (for adapters) merge a model in the fastest precision for this device.

    `named_adapters` (name -> adapter directory) are loaded side by side without merging, so that each request
    can pick one (peft's `adapter_names=`), the base model staying available under its own name. Folders whose
    weights are pickle files only are refused unless `allow_pickle`. `head="reward"` loads a reward model (a
    one-output sequence-classification head) instead of a causal LM. A vision-language model comes with its
    processor; `images_from` names the flag that brings media (`--image`, `--audio`), and a text-only model is then refused
    before its weights load.
    """
    from tunestack.model.load import load_model
    from tunestack.model.precision import resolve_dtype
    from tunestack.model.vision import is_multimodal

    resolved, adapter_dirs, tokenizer = resolve_for_inference(model_args, adapters, head)
    processor = None
    if head == "causal" and is_multimodal(resolved.path):
        processor = _processor(model_args, resolved, tokenizer)
        tokenizer = processor.tokenizer
    elif images_from:
        refuse_images(model_args.model, images_from)
    for folder in [resolved.path, *adapter_dirs, *adapter_folders(named_adapters or {}).values()]:
        refuse_pickle(folder, allow_pickle)
    model = load_model(resolved.path, resolve_dtype(model_args.dtype), model_args.attn_implementation,
                       trust_remote_code=model_args.trust_remote_code, tokenizer=tokenizer, head=head)
    if adapter_dirs:
        from tunestack.model.tuners import merge_adapter

        for adapter in adapter_dirs:
            model = merge_adapter(model, adapter)
    if named_adapters:
        model = _attach_named(model, named_adapters)
    print(f"model: {resolved.source}" + "".join(f" + adapter {a}" for a in adapters)
          + "".join(f", adapter {n} = {p}" for n, p in (named_adapters or {}).items()), file=sys.stderr)
    return LoadedModel(model=model, tokenizer=tokenizer, source=resolved.source, processor=processor)


def refuse_images(model: str, flag: str) -> None:
    """The one error for images or audio given to a model that cannot read them."""
    from tunestack.errors import ConfigError

    raise ConfigError([f"{flag}: --model {model} is a text-only model (no vision or audio encoder), so it cannot "
                       "take images or audio; use a multimodal model, or drop the media"])


def multimodal_processor(model_args: ModelArgs, resolved, tokenizer):
    """The processor of a multimodal model (`_processor`), None for a text model: what renders conversations with
    media for an engine that loads the model itself (vLLM)."""
    from tunestack.model.vision import is_multimodal

    return _processor(model_args, resolved, tokenizer) if is_multimodal(resolved.path) else None


def _processor(model_args: ModelArgs, resolved, tokenizer):
    """The vision-language model's processor, from the run's adapter folder when it holds one (a fine-tuned VLM
    saves its processor beside the adapter), with --chat_template's template when given; its tokenizer pads on the
    left, as the engine's prompts are."""
    from tunestack.model.vision import load_processor

    own = resolved.adapter
    saved = own is not None and any((own / f).is_file() for f in ("processor_config.json", "preprocessor_config.json"))
    template = tokenizer.chat_template if model_args.chat_template else None
    processor = load_processor(own if saved else resolved.path, model_args.trust_remote_code, template,
                               model_args.min_pixels, model_args.max_pixels, model_args.fps, model_args.max_frames)
    processor.tokenizer.padding_side = "left"
    return processor


def check_head(name: str, found: str, wanted: str) -> None:
    """Refuse a reward model where a model must generate, and a causal LM where one must score."""
    from tunestack.errors import ConfigError

    if found == wanted:
        return
    if found == "reward":
        raise ConfigError([f"--model {name} is a reward model (a sequence-classification head): it scores text and "
                           f"does not generate; score with it: tunestack infer --score --model {name}"])
    raise ConfigError([f"--model {name} is a causal language model, not a reward model: scoring needs a run of "
                       "`tunestack rm` (or a sequence-classification checkpoint); drop --score to chat with it"])


def adapter_folders(named_adapters: dict[str, str]) -> dict[str, Path]:
    """Each named adapter's PEFT folder (a run directory keeps it in final/); raises for one that is none."""
    from tunestack.errors import ConfigError

    if problems := adapter_problems(named_adapters):
        raise ConfigError(problems)
    return {name: _adapter_folder(path) for name, path in named_adapters.items()}


def adapter_problems(named_adapters: dict[str, str]) -> list[str]:
    """Why a named adapter cannot be served beside the base model, one line each; read before any model loads."""
    folders = {name: _adapter_folder(path) for name, path in named_adapters.items()}
    problems = [f"--adapter {name}={path}: no adapter_config.json in {path} (expected a LoRA adapter or run directory)"
                for name, path in folders.items() if not (path / "adapter_config.json").is_file()]
    problems += [f"--adapter {name}={named_adapters[name]}: this run was trained on top of another run's adapter, "
                 "so it is not an adapter of the base alone; serve it as --model, or export it and serve that"
                 for name, path in folders.items() if _has_parents(path.parent / "run.json")]
    return problems


def _adapter_folder(path: str) -> Path:
    return Path(path) / "final" if (Path(path) / "final" / "adapter_config.json").is_file() else Path(path)


def _has_parents(manifest: Path) -> bool:
    from tunestack.jsonfile import read_json_object

    return manifest.is_file() and bool(read_json_object(manifest).get("chain"))


def _attach_named(model, named_adapters: dict[str, str]):
    import_gptqmodel_quietly()
    from peft import PeftModel

    named_adapters = adapter_folders(named_adapters)
    peft_model = None
    for name, path in named_adapters.items():
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        else:
            peft_model.load_adapter(str(path), adapter_name=name)
    return peft_model.eval()
