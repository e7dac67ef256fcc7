"""The LMDeploy backend: tunestack requests mapped onto LMDeploy's PyTorch-engine pipeline with token-id input
(`input_ids=`) and named LoRA adapters (`adapter_name=`); the serving layer has already applied the template."""

from __future__ import annotations

import itertools

from tunestack.config import ModelArgs
from tunestack.inference.async_engine import AsyncLoopEngine, emit_tokens, finish_name, require
from tunestack.inference.engine import GenerationRequest, SamplingParams, StepOutput, TokenLogprob, UnsupportedRequest

DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_sessions = itertools.count(1)


def generation_kwargs(params: SamplingParams) -> dict:
    """Keyword arguments of `lmdeploy.GenerationConfig`."""
    kwargs = {
        "max_new_tokens": params.max_new_tokens, "do_sample": not params.greedy,
        "temperature": params.temperature if not params.greedy else 1.0, "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else 0, "repetition_penalty": params.repetition_penalty,
        "random_seed": params.seed, "stop_token_ids": list(params.stop_token_ids) or None,
        "ignore_eos": params.ignore_eos, "logprobs": params.logprobs, "skip_special_tokens": True,
    }
    if params.presence_penalty or params.frequency_penalty:
        raise UnsupportedRequest("--backend lmdeploy has no presence or frequency penalty; use repetition_penalty")
    if params.prompt_logprobs is not None:
        raise UnsupportedRequest("--backend lmdeploy cannot score prompt tokens (echo with logprobs); use --backend pt or vllm")
    if params.json_object:
        kwargs["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "object", "schema": {"type": "object"}}}
    return kwargs


def engine_kwargs(model_args: ModelArgs, max_batch: int, max_context: int | None, loras: dict[str, str]) -> dict:
    """Keyword arguments of `lmdeploy.PytorchEngineConfig`."""
    kwargs = {"max_batch_size": max_batch, "dtype": DTYPES[model_args.dtype]}
    if max_context:
        kwargs["session_len"] = max_context
    if loras:
        kwargs["adapters"] = dict(loras)
    return kwargs


def to_logprobs(entries: list[dict] | None, tokens: list[int], top: int) -> list[TokenLogprob]:
    results = []
    for entry, token in zip(entries or [], tokens):
        ranked = sorted(entry.items(), key=lambda item: -item[1])[:top]
        results.append(TokenLogprob(token, entry.get(token, float("nan")), ranked))
    return results


class LmdeployEngine(AsyncLoopEngine):
    mixed_adapter_batches = True

    def __init__(self, model_dir: str, engine_args: dict, adapters: list[str], default: str | None,
                 eos_ids: list[int], max_context: int):
        super().__init__(eos_ids)
        lmdeploy = require("lmdeploy", "lmdeploy", "lmdeploy", "--backend lmdeploy")
        self.lmdeploy = lmdeploy
        self.pipe = lmdeploy.pipeline(model_dir, backend_config=lmdeploy.PytorchEngineConfig(**engine_args))
        self.adapters = tuple(adapters)
        self.default = default
        self.max_context = max_context

    async def generate_async(self, request: GenerationRequest) -> None:
        params = request.params
        config = self.lmdeploy.GenerationConfig(**generation_kwargs(params))
        adapter = request.adapter or self.default
        stream = self.pipe.generate(messages=None, session_id=next(_sessions), gen_config=config,
                                    input_ids=request.prompt, stream_response=True, sequence_start=True,
                                    sequence_end=True, adapter_name=adapter)
        async for out in stream:
            tokens = list(out.token_ids or [])
            logprobs = to_logprobs(out.logprobs, tokens, params.logprobs or 0) if params.logprobs is not None else []
            emit_tokens(request, tokens, logprobs, finish_name(out.finish_reason), self.eos_token_ids)
            if out.finish_reason is not None:
                return
        request.emit(StepOutput(finish_reason="stop"))


def build(model_args: ModelArgs, options):
    require("lmdeploy", "lmdeploy", "lmdeploy", "--backend lmdeploy")
    from transformers import AutoConfig

    from tunestack.inference.loading import adapter_folders, resolve_for_inference
    from tunestack.inference.lora_info import single_adapter

    resolved, adapter_dirs, tokenizer = resolve_for_inference(model_args, options.adapters)
    loras = {n: str(p) for n, p in adapter_folders(options.named_adapters).items()}
    default = single_adapter(adapter_dirs, "lmdeploy")
    if default:
        loras["__default__"] = str(default)
    context = options.max_context or AutoConfig.from_pretrained(resolved.path).max_position_embeddings
    engine = LmdeployEngine(str(resolved.path), engine_kwargs(model_args, options.max_batch, options.max_context,
                                                              loras),
                            [n for n in loras if n != "__default__"], "__default__" if default else None,
                            sorted({tokenizer.eos_token_id} - {None}), context)
    return engine, tokenizer
