"""Build an engine for a backend name: the one factory `tunestack infer`, `tunestack serve` and evaluation use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunestack.config import ModelArgs

if TYPE_CHECKING:
    from tunestack.inference.engine import Engine


@dataclass
class EngineOptions:
    """Backend-independent engine settings."""

    adapters: list[str] = field(default_factory=list)  # merged into the weights
    named_adapters: dict[str, str] = field(default_factory=dict)  # served side by side, picked per request
    max_batch: int = 32
    max_context: int | None = None
    allow_pickle: bool = False  # load pickle weight files (.bin), which can run code (pt backend; others load their own)
    images_from: str | None = None  # the flag bringing images (--image): a text-only model is refused before it loads
    decoding: object | None = None  # config.DecodingArgs (pt backend): speculative decoding, compiled steps


@dataclass
class EngineParts:
    """An engine and what turns conversations into its token ids: the tokenizer, and for a multimodal model (pt and
    vLLM backends) the processor that also reads the media (into the model's tensors for pt; vLLM takes them as
    read); None for text models."""

    engine: Engine
    tokenizer: object
    processor: object | None = None


def create_engine(model_args: ModelArgs, backend: str = "pt", options: EngineOptions | None = None):
    """(engine, tokenizer) for `backend`; tokenization stays with the caller, the engine works on token ids."""
    parts = build_engine(model_args, backend, options)
    return parts.engine, parts.tokenizer


def build_engine(model_args: ModelArgs, backend: str = "pt", options: EngineOptions | None = None) -> EngineParts:
    """The engine for `backend` with its tokenizer and, for a multimodal model on the pt or vLLM backend, its
    processor (the other backends generate from text only here)."""
    options = options or EngineOptions()
    spec = options.decoding
    if spec is not None and (spec.prompt_lookup_tokens or spec.draft_model):
        from tunestack.errors import TunestackError

        if backend != "pt":
            raise TunestackError(f"--prompt_lookup_tokens / --draft_model: speculative decoding here runs on "
                                 f"--backend pt; {backend} has settings of its own for it")
        if spec.prompt_lookup_tokens and spec.draft_model:
            raise TunestackError("--prompt_lookup_tokens and --draft_model: pick one drafter")
    if backend == "pt":
        return _pt_engine(model_args, options)
    import importlib

    module = importlib.import_module(f"tunestack.inference.{_MODULES[backend]}")
    return EngineParts(*module.build(model_args, options))


_MODULES = {"vllm": "vllm_engine", "sglang": "sglang_engine", "lmdeploy": "lmdeploy_engine",
            "llama.cpp": "llamacpp_engine"}


def _pt_engine(model_args: ModelArgs, options: EngineOptions):
    from tunestack.inference.loading import load_for_inference
    from tunestack.inference.pt import PtEngine

    loaded = load_for_inference(model_args, options.adapters, options.named_adapters, options.allow_pickle,
                                images_from=options.images_from)
    tokenizer = loaded.tokenizer
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    engine = PtEngine(loaded.model, tokenizer.pad_token_id, loaded.eos_token_ids, max_batch=options.max_batch,
                      max_context=options.max_context, token_texts=texts + [""] * (vocab - len(texts)),
                      speculator=_speculator(model_args, options, loaded),
                      compile_decode=bool(getattr(options.decoding, "torch_compile", False)))
    return EngineParts(engine, loaded.tokenizer, loaded.processor)


def _speculator(model_args: ModelArgs, options: EngineOptions, loaded):
    """The drafter the speculation flags ask for (None without them); a draft model loads like the model itself."""
    from dataclasses import replace

    from tunestack.inference.speculative import DraftModel, PromptLookup, check_same_tokenizer

    spec = options.decoding
    if spec is None or not (spec.prompt_lookup_tokens or spec.draft_model):
        return None
    if spec.prompt_lookup_tokens:
        return PromptLookup(spec.prompt_lookup_tokens)
    from tunestack.inference.loading import load_for_inference

    draft = load_for_inference(replace(model_args, model=spec.draft_model), allow_pickle=options.allow_pickle)
    check_same_tokenizer(loaded.tokenizer, draft.tokenizer, spec.draft_model)
    return DraftModel(draft.model, spec.num_speculative_tokens)
