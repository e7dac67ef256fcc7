"""From a request's OpenAI fields to the engine's sampling settings, and the usage block of a response."""

from __future__ import annotations

from tunestack.inference.engine import SamplingParams


def sampling_params(request, max_tokens: int, index: int, logprobs: int | None, prompt_logprobs: int | None = None,
                    stop_token_ids: list[int] = ()) -> SamplingParams:
    """Engine settings for choice `index` of a request (choice i of n samples with seed + i)."""
    return SamplingParams(
        max_new_tokens=max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=max(request.top_k or 0, 0),
        repetition_penalty=request.repetition_penalty or 1.0,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        seed=None if request.seed is None else request.seed + index,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        stop_token_ids=list(stop_token_ids),
        ignore_eos=request.ignore_eos,
        json_object=getattr(request, "response_format", None) is not None
        and request.response_format.type == "json_object",
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
