"""The model families tunestack is tested with, and the one notice a run on any other family gets."""

from __future__ import annotations

import sys

TESTED_MODEL_TYPES = {
    "llama": "Llama 3.x, SmolLM2, TinyLlama", "mistral": "Mistral, Ministral", "qwen2": "Qwen2, Qwen2.5",
    "qwen3": "Qwen3", "qwen3_moe": "Qwen3-MoE", "gemma3_text": "Gemma 3", "gemma2": "Gemma 2",
    "phi3": "Phi-3, Phi-4", "glm4": "GLM-4", "deepseek_v3": "DeepSeek-V3 / R1", "mixtral": "Mixtral",
    "gpt_oss": "gpt-oss",
}
"""Model types the family matrix (tests/families) takes through sft, infer, serve, export and eval."""
TESTED_VISION_TYPES = {"llava": "LLaVA-1.5, smollm2-135m-vision", "llava_next": "LLaVA-NeXT",
                       "idefics3": "Idefics3, SmolVLM", "qwen2_vl": "Qwen2-VL (images, videos)",
                       "qwen2_5_vl": "Qwen2.5-VL (images, videos)", "qwen3_vl": "Qwen3-VL (images, videos)",
                       "gemma3": "Gemma 3", "qwen2_audio": "Qwen2-Audio"}
"""Vision- and audio-language model types whose masks, adapters and training tiny models test
(tests/train/test_vision_sft.py, test_audio_sft.py, test_video.py), LLaVA also through infer, serve, eval and export,
Qwen2-VL through infer, serve, eval and export, LLaVA-NeXT, Gemma 3 and Qwen3-VL through infer, Qwen2-Audio through
infer, serve and export; Qwen2.5-VL through training and its processor."""

PLAIN_HEAD_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "mixtral", "phi3", "smollm3")
"""Causal LMs whose logits are their output head's output as it is (no softcapping or scaling after the head): the
trainer applies their head at the target tokens alone, in chunks where the logits are large (train/trainer.py)."""
LOSS_CHUNK_ROWS = 1024
"""Target positions whose logits exist at once when the loss is computed in chunks."""
LOSS_CHUNK_FROM_BYTES = 256 * 2**20
"""The loss runs in chunks where the target positions' logits would pass this many bytes in fp32."""

UNVERIFIED = ("the loss mask against the chat template, LoRA targets, merged export and serving; GGUF export covers "
              "only the architectures it names")
_noted: set[str] = set()


def note_untested(model_type: str | None) -> None:
    """Say once per process that a model of an untested family is tried as a generic causal LM, and what was not
    verified for it."""
    if not model_type or model_type in TESTED_MODEL_TYPES or model_type in TESTED_VISION_TYPES or model_type in _noted:
        return
    _noted.add(model_type)
    print(f"note: model type {model_type!r} is not among the families tunestack is tested with; it is tried as a "
          f"generic transformers causal LM, but these were not verified for it: {UNVERIFIED}", file=sys.stderr,
          flush=True)
