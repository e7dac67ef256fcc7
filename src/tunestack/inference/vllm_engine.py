"""The vLLM backend: tunestack requests (token ids, sampling settings, named LoRA adapters) mapped onto vLLM's
AsyncLLM; the prompt is already templated and tokenized by the serving layer, so vLLM never applies a template.
A multimodal model's requests carry their images, audio clips and video frames as read, and the prompt one
placeholder token for each: vLLM's own processing expands them (`multi_modal_data`)."""

from __future__ import annotations

from tunestack.config import ModelArgs
from tunestack.inference.async_engine import AsyncLoopEngine, emit_tokens, finish_name, require
from tunestack.inference.engine import GenerationRequest, SamplingParams, StepOutput, TokenLogprob

DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def sampling_kwargs(params: SamplingParams) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for tunestack's settings (vLLM needs max_tokens >= 1: a pure
    prompt-scoring request generates one token that is then dropped)."""
    kwargs = {
        "n": 1, "max_tokens": max(params.max_new_tokens, 1), "temperature": max(params.temperature, 0.0),
        "top_p": params.top_p, "top_k": params.top_k if params.top_k > 0 else -1,
        "repetition_penalty": params.repetition_penalty, "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty, "seed": params.seed,
        "stop_token_ids": list(params.stop_token_ids), "ignore_eos": params.ignore_eos,
        "logprobs": params.logprobs, "prompt_logprobs": params.prompt_logprobs, "detokenize": False,
    }
    if params.json_object:
        kwargs["structured_outputs"] = {"json_object": True}
    return kwargs


def engine_kwargs(model_dir: str, tokenizer_dir: str, model_args: ModelArgs, max_batch: int,
                  max_context: int | None, lora_ranks: list[int]) -> dict:
    """Keyword arguments of `vllm.AsyncEngineArgs`."""
    kwargs = {"model": model_dir, "tokenizer": tokenizer_dir, "dtype": DTYPES[model_args.dtype],
              "max_num_seqs": max_batch, "trust_remote_code": model_args.trust_remote_code, "max_logprobs": 20}
    if max_context:
        kwargs["max_model_len"] = max_context
    if lora_ranks:
        kwargs.update(enable_lora=True, max_loras=len(lora_ranks), max_lora_rank=_vllm_rank(max(lora_ranks)))
    return kwargs


def vllm_prompt(ids: list[int], media: dict | None) -> dict:
    """vLLM's `TokensPrompt` fields for a prompt and its media as read (chat_prompt.vision_prompt with raw=True):
    images as PIL images, audio as (samples, rate) pairs, videos as frame arrays; one item or a list per kind."""
    prompt = {"prompt_token_ids": list(ids)}
    if media:
        prompt["multi_modal_data"] = {kind: items[0] if len(items) == 1 else list(items)
                                      for kind, items in media.items()}
    return prompt


def _vllm_rank(rank: int) -> int:
    """vLLM accepts a few fixed maximum ranks; the smallest that fits."""
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)


def to_logprob(entry: dict | None, chosen: int, top: int) -> TokenLogprob | None:
    """vLLM's {token_id: Logprob} at one position as a TokenLogprob with the `top` most likely alternatives."""
    if entry is None:
        return None
    ranked = sorted(entry.items(), key=lambda item: -item[1].logprob)[:top]
    return TokenLogprob(chosen, entry[chosen].logprob, [(t, lp.logprob) for t, lp in ranked])


class VllmEngine(AsyncLoopEngine):
    mixed_adapter_batches = True
    expands_media = True

    def __init__(self, engine_args: dict, loras: dict[str, str], default_lora: str | None, eos_ids: list[int]):
        super().__init__(eos_ids)
        vllm = require("vllm", "vllm", "vllm", "--backend vllm")
        from vllm.lora.request import LoRARequest

        self.vllm = vllm
        self.loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(loras.items())}
        self.default = self.loras.pop("__default__", None) if default_lora else None
        self.adapters = tuple(self.loras)
        self.max_context = engine_args.get("max_model_len") or 2048
        self.engine = self.run_on_loop(self._start(engine_args))
        self.max_context = self.engine.model_config.max_model_len

    async def _start(self, engine_args: dict):
        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:
            from vllm import AsyncLLMEngine as AsyncLLM
        return AsyncLLM.from_engine_args(self.vllm.AsyncEngineArgs(**engine_args))

    def _sampling(self, params: SamplingParams):
        kwargs = sampling_kwargs(params)
        if "structured_outputs" in kwargs:
            try:
                from vllm.sampling_params import StructuredOutputsParams
            except ImportError:  # vLLM before 0.11
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(**kwargs.pop("structured_outputs"))
            else:
                kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        return self.vllm.SamplingParams(**kwargs)

    async def generate_async(self, request: GenerationRequest) -> None:
        from vllm.inputs import TokensPrompt

        params = request.params
        lora = self.loras[request.adapter] if request.adapter else self.default
        seen, first = 0, True
        stream = self.engine.generate(TokensPrompt(**vllm_prompt(request.prompt, request.media)),
                                      self._sampling(params), f"tunestack-{request.id}", lora_request=lora)
        async for output in stream:
            if first and params.prompt_logprobs is not None:
                scored = [to_logprob(e, t, params.prompt_logprobs) for e, t in
                          zip(output.prompt_logprobs[1:], request.prompt[1:])]
                request.emit(StepOutput(prompt_logprobs=scored))
            first = False
            completion = output.outputs[0]
            if params.max_new_tokens == 0:
                request.emit(StepOutput(finish_reason="length"))
                return
            tokens = list(completion.token_ids[seen:])
            logprobs = [to_logprob(e, t, params.logprobs or 0) for e, t in
                        zip((completion.logprobs or [])[seen:], tokens)] if params.logprobs is not None else []
            seen += len(tokens)
            emit_tokens(request, tokens, logprobs, finish_name(completion.finish_reason), self.eos_token_ids)


def build(model_args: ModelArgs, options):
    """(VllmEngine, tokenizer, processor) for a model name; a run's own adapter is applied to requests for the
    base. The processor (a multimodal model's, else None) renders conversations and reads their media, which vLLM
    then processes itself."""
    require("vllm", "vllm", "vllm", "--backend vllm")
    from tunestack.inference.loading import adapter_folders, resolve_for_inference
    from tunestack.inference.lora_info import lora_rank, single_adapter

    resolved, adapter_dirs, tokenizer = resolve_for_inference(model_args, options.adapters)
    loras = {n: str(p) for n, p in adapter_folders(options.named_adapters).items()}
    default = single_adapter(adapter_dirs, "vllm")
    if default:
        loras["__default__"] = str(default)
    args = engine_kwargs(str(resolved.path), tokenizer.name_or_path, model_args, options.max_batch,
                         options.max_context, [lora_rank(p) for p in loras.values()])
    eos = sorted({tokenizer.eos_token_id} - {None})
    from tunestack.inference.loading import multimodal_processor

    processor = multimodal_processor(model_args, resolved, tokenizer)
    return VllmEngine(args, loras, default, eos), tokenizer, processor
