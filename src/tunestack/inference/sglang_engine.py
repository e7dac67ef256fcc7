"""The SGLang backend: tunestack requests mapped onto `sglang.Engine.async_generate` with token-id input and
named LoRA adapters (`lora_path=NAME`); the serving layer has already applied the chat template."""

from __future__ import annotations

from tunestack.config import ModelArgs
from tunestack.inference.async_engine import AsyncLoopEngine, emit_tokens, finish_name, require
from tunestack.inference.engine import GenerationRequest, SamplingParams, StepOutput, TokenLogprob

DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def sampling_dict(params: SamplingParams) -> dict:
    """SGLang's `sampling_params` for tunestack's settings."""
    values = {
        "max_new_tokens": params.max_new_tokens, "temperature": max(params.temperature, 0.0), "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1, "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
        "stop_token_ids": list(params.stop_token_ids), "ignore_eos": params.ignore_eos,
        "skip_special_tokens": True,
    }
    if params.seed is not None:
        values["sampling_seed"] = params.seed
    if params.json_object:
        values["json_schema"] = '{"type": "object"}'
    return values


def generate_kwargs(request: GenerationRequest) -> dict:
    """The other keyword arguments of `async_generate`: token ids, streaming, logprobs, adapter."""
    params = request.params
    kwargs = {"input_ids": request.prompt, "sampling_params": sampling_dict(params), "stream": True}
    if params.logprobs is not None or params.prompt_logprobs is not None:
        kwargs.update(return_logprob=True, top_logprobs_num=max(params.logprobs or 0, params.prompt_logprobs or 0),
                      logprob_start_len=0 if params.prompt_logprobs is not None else -1)
    if request.adapter:
        kwargs["lora_path"] = request.adapter
    return kwargs


def engine_kwargs(model_dir: str, tokenizer_dir: str, model_args: ModelArgs, max_batch: int,
                  max_context: int | None, loras: dict[str, str]) -> dict:
    kwargs = {"model_path": model_dir, "tokenizer_path": tokenizer_dir, "dtype": DTYPES[model_args.dtype],
              "max_running_requests": max_batch, "trust_remote_code": model_args.trust_remote_code,
              "log_level": "error"}
    if max_context:
        kwargs["context_length"] = max_context
    if loras:
        kwargs.update(enable_lora=True, lora_paths=[f"{n}={p}" for n, p in loras.items()],
                      max_loras_per_batch=max(len(loras), 1))
    return kwargs


def to_logprobs(values: list, tops: list | None, top: int) -> list[TokenLogprob | None]:
    """SGLang's (logprob, token_id, text) triples, with the top alternatives per position, as TokenLogprobs."""
    results = []
    for index, (logprob, token, _) in enumerate(values):
        alternatives = [(t, lp) for lp, t, _ in (tops[index] or [])[:top]] if tops else []
        results.append(None if logprob is None else TokenLogprob(token, logprob, alternatives))
    return results


class SglangEngine(AsyncLoopEngine):
    mixed_adapter_batches = True

    def __init__(self, engine_args: dict, adapters: list[str], default: str | None, eos_ids: list[int],
                 max_context: int):
        super().__init__(eos_ids)
        sglang = require("sglang", "sglang", "sglang", "--backend sglang")
        self.engine = sglang.Engine(**engine_args)
        self.adapters = tuple(adapters)
        self.default = default
        self.max_context = max_context

    async def generate_async(self, request: GenerationRequest) -> None:
        params = request.params
        if request.adapter is None and self.default:
            request.adapter = self.default
        seen, first = 0, True
        async for chunk in await self.engine.async_generate(**generate_kwargs(request)):
            meta = chunk["meta_info"]
            if first and params.prompt_logprobs is not None:
                scored = to_logprobs(meta["input_token_logprobs"][1:], (meta.get("input_top_logprobs") or [None])[1:],
                                     params.prompt_logprobs)
                request.emit(StepOutput(prompt_logprobs=scored))
            first = False
            ids = chunk["output_ids"]
            new = ids[seen:] if len(ids) == meta["completion_tokens"] else ids  # cumulative or incremental chunks
            logprobs = to_logprobs(meta.get("output_token_logprobs", [])[seen:seen + len(new)],
                                   meta.get("output_top_logprobs", [])[seen:seen + len(new)], params.logprobs or 0)
            seen += len(new)
            emit_tokens(request, list(new), logprobs if params.logprobs is not None else [],
                        finish_name(meta.get("finish_reason")), self.eos_token_ids)

    def close(self) -> None:
        self.engine.shutdown()
        super().close()


def build(model_args: ModelArgs, options):
    require("sglang", "sglang", "sglang", "--backend sglang")
    from transformers import AutoConfig

    from tunestack.inference.loading import adapter_folders, resolve_for_inference
    from tunestack.inference.lora_info import single_adapter

    resolved, adapter_dirs, tokenizer = resolve_for_inference(model_args, options.adapters)
    loras = {n: str(p) for n, p in adapter_folders(options.named_adapters).items()}
    default = single_adapter(adapter_dirs, "sglang")
    if default:
        loras["__default__"] = str(default)
    args = engine_kwargs(str(resolved.path), tokenizer.name_or_path, model_args, options.max_batch,
                         options.max_context, loras)
    context = options.max_context or AutoConfig.from_pretrained(resolved.path).max_position_embeddings
    eos = sorted({tokenizer.eos_token_id} - {None})
    names = [n for n in loras if n != "__default__"]
    return SglangEngine(args, names, "__default__" if default else None, eos, context), tokenizer
