"""The engine interface on token ids: requests in, generated tokens (with logprobs) out; tokenization stays outside."""

from __future__ import annotations

import itertools
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class SamplingParams:
    """How to pick tokens; temperature 0 is greedy. Penalties follow OpenAI (presence, frequency) and HF (repetition)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's logprob and the k most likely
    prompt_logprobs: int | None = None  # the same for every prompt token after the first
    json_object: bool = False  # only tokens that keep the output a valid prefix of one JSON object

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5  # below this, dividing the logits would overflow: pick the most likely


@dataclass
class TokenLogprob:
    """A token's log-probability under the model and the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class StepOutput:
    """What one engine step produced for one request: at most one new token, or the end."""

    token_id: int | None = None
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None  # "stop" (end token) or "length"
    prompt_logprobs: list[TokenLogprob] | None = None  # on the first output, when asked
    error: BaseException | None = None


class UnsupportedRequest(ValueError):
    """A setting this backend cannot honour; the server answers 400 with the message."""


IMAGES_PT_ONLY = ("images: this backend generates from text only; serve or infer a vision-language model with "
                  "--backend pt to send it images")
"""What a backend that cannot take a request's `media` answers (UnsupportedRequest)."""


_ids = itertools.count()


@dataclass
class GenerationRequest:
    """One sequence to generate; `emit` is called from the engine's thread with each StepOutput.

    `media` holds the processor's tensors for the images of a vision-language prompt (pixel_values, image_grid_thw,
    mm_token_type_ids, image_sizes, ...: its output without input_ids and attention_mask), each with a batch
    dimension of one; `prompt` is then the processor's ids, the image placeholders already expanded. For an engine
    that expands placeholders itself (`Engine.expands_media`, vLLM) it holds the media as read instead
    (chat_prompt.vision_prompt with raw=True), and `prompt` one placeholder token each. None for text.
    """

    prompt: list[int]
    params: SamplingParams
    emit: Callable[[StepOutput], None]
    adapter: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    media: dict[str, torch.Tensor] | None = None


class Engine:
    """What every backend provides. `submit` never blocks; outputs arrive through the request's `emit`."""

    max_context: int = 2048
    adapters: tuple[str, ...] = ()
    mixed_adapter_batches: bool = False
    expands_media: bool = False  # takes requests' media as read and expands their placeholders itself (vLLM)

    def submit(self, request: GenerationRequest) -> None:
        raise NotImplementedError

    def cancel(self, request_id: int) -> None:
        """Stop a request and free its slot; a no-op for a finished or unknown one."""
        raise NotImplementedError

    def waiting(self) -> int:
        """Requests submitted but not yet running."""
        return 0

    def running(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def stream_steps(self, prompt: list[int], params: SamplingParams, adapter: str | None = None,
                     media: dict | None = None) -> Iterator[StepOutput]:
        """Blocking iterator over one request's outputs; leaving it early cancels the request."""
        outputs: queue.Queue = queue.Queue()
        request = GenerationRequest(prompt, params, outputs.put, adapter, media=media)
        self.submit(request)
        try:
            while True:
                out = outputs.get()
                if out.error is not None:
                    raise out.error
                yield out
                if out.finish_reason is not None:
                    return
        finally:
            self.cancel(request.id)

    def stream(self, prompt: list[int], params: SamplingParams, adapter: str | None = None,
               media: dict | None = None) -> Iterator[int]:
        """Yield completion token ids one at a time as they are generated."""
        for out in self.stream_steps(prompt, params, adapter, media):
            if out.token_id is not None:
                yield out.token_id

    def generate(self, prompts: list[list[int]], params: SamplingParams, adapter: str | None = None,
                 media: list[dict | None] | None = None) -> list[list[int]]:
        """Completions (token ids, stop token excluded) for prompts generated together; `media[i]`, when given,
        holds prompt i's image tensors."""
        outputs: queue.Queue = queue.Queue()
        requests = []
        for index, prompt in enumerate(prompts):
            requests.append(GenerationRequest(prompt, params, lambda out, i=index: outputs.put((i, out)), adapter,
                                              media=media[index] if media else None))
        for request in requests:
            self.submit(request)
        tokens: list[list[int]] = [[] for _ in prompts]
        remaining = len(prompts)
        try:
            while remaining:
                index, out = outputs.get()
                if out.error is not None:
                    raise out.error
                if out.token_id is not None:
                    tokens[index].append(out.token_id)
                remaining -= out.finish_reason is not None
        finally:
            for request in requests:
                self.cancel(request.id)
        return tokens
