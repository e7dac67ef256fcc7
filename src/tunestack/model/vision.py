"""Vision-language models: how to tell one, its processor, and which of its parts an adapter or freezing reaches.

A model whose config has a `vision_config` (Qwen2-VL, LLaVA, Idefics3 / SmolVLM, Gemma 3, ...) loads through
`AutoModelForImageTextToText` and brings an `AutoProcessor`, whose chat template and image processing are the
source of truth for its inputs. Its modules fall into three parts: the vision tower, the aligner (the projector or
connector that maps image features into the language model's embeddings) and the language model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunestack.errors import TunestackError

# Module-name fragments of each part, as the transformers classes name them.
VISION_TOWER = ("vision_tower", "vision_model", "visual", "image_encoder", "audio_tower")
ALIGNER = ("multi_modal_projector", "connector", "merger", "mm_projector", "aligner")


def is_multimodal(path_or_config) -> bool:
    """Whether the model (a folder or a config object) has a vision (or audio) encoder."""
    if isinstance(path_or_config, str | Path):
        config_file = Path(path_or_config) / "config.json"
        if not config_file.is_file():
            return False
        config = json.loads(config_file.read_text())
        return "vision_config" in config or "audio_config" in config
    return any(getattr(path_or_config, key, None) is not None for key in ("vision_config", "audio_config"))


def load_processor(path, trust_remote_code: bool = False, chat_template: str | None = None):
    """The model's `AutoProcessor`, its tokenizer padded on the right and holding the processor's chat template
    (so text-only conversations render exactly as image ones do)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TunestackError(f"could not load the processor of the vision-language model in {path}: {exc}") from exc
    if chat_template:
        processor.chat_template = chat_template
    if not getattr(processor, "chat_template", None):
        raise TunestackError(f"the processor in {path} has no chat template; pass --chat_template FILE.jinja")
    from tunestack.model.load import set_pad_token

    tokenizer = processor.tokenizer
    tokenizer.chat_template = processor.chat_template
    if tokenizer.pad_token is None:
        set_pad_token(tokenizer)
    tokenizer.padding_side = "right"
    return processor


def part_of(name: str) -> str:
    """`vision`, `aligner` or `language` for a module or parameter name."""
    pieces = name.split(".")
    if any(p in ALIGNER for p in pieces):  # before the tower: Qwen2-VL's merger sits inside `visual`
        return "aligner"
    if any(p in VISION_TOWER for p in pieces):
        return "vision"
    return "language"


def linear_pattern(model, parts: tuple[str, ...]) -> str:
    """A peft `target_modules` regex over the linear layers of `parts` (language, vision); never the output head."""
    import re

    import torch

    output = model.get_output_embeddings()
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not output and part_of(name) in parts]
    return "^(" + "|".join(re.escape(n) for n in names) + ")$" if names else ""


def _top_modules(model, part: str) -> list[str]:
    """The short names of the outermost modules of `part` (e.g. multi_modal_projector), as modules_to_save takes
    them."""
    found = []
    for name, _ in model.named_modules():
        if name and part_of(name) == part and not any(name.startswith(f + ".") for f in found):
            found.append(name)
    return sorted({name.rsplit(".", 1)[-1] for name in found})


def adapter_fields(model, args) -> dict:
    """LoraConfig's `target_modules` and `modules_to_save` for a vision-language model under TunerArgs `args`:
    adapters on the language model (unless --freeze_language) and the vision tower (--lora_vision); the aligner,
    and an unfrozen vision tower that is not adapted, train in full and are saved with the adapter."""
    parts = (() if args.freeze_language else ("language",)) + (("vision",) if args.lora_vision else ())
    pattern = linear_pattern(model, parts) if parts else ""
    if not pattern:
        raise TunestackError("--freeze_language leaves the adapter nothing to adapt: add --lora_vision, or train "
                             "the vision side in full with --tuner full --freeze_language --freeze_vision false")
    saved = list(args.modules_to_save)
    if not args.freeze_aligner:
        saved += _top_modules(model, "aligner")
    if not args.freeze_vision and not args.lora_vision:
        saved += _top_modules(model, "vision")
    return {"target_modules": pattern, "modules_to_save": sorted(set(saved)) or None}


def freeze_parts(model, args) -> None:
    """Full fine-tuning of a vision-language model: every part trains but those frozen by the flags."""
    frozen = {part for part, flag in (("vision", args.freeze_vision), ("aligner", args.freeze_aligner),
                                      ("language", args.freeze_language)) if flag}
    for name, parameter in model.named_parameters():
        if part_of(name) in frozen:
            parameter.requires_grad_(False)
