"""The engine-agnostic serving core: model names, prompt limits, admission to a bounded queue, and the bridge
from the engine's thread to asyncio that cancels a request as soon as its consumer goes away, its time is up or
the server stops draining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tunestack.inference.engine import Engine, GenerationRequest, StepOutput, UnsupportedRequest
from tunestack.serve.errors import BadRequest, EngineFailed, ModelNotFound, Overloaded, ShuttingDown, TimedOut
from tunestack.serve.metrics import ServeMetrics


@dataclass
class ServeLimits:
    max_concurrency: int = 32
    max_queue: int = 64
    default_max_tokens: int = 512
    request_timeout: float | None = None  # seconds from admission to the last token
    max_request_bytes: int = 16 * 2**20


class Serving:
    """What the chat and completion handlers share: one engine, its tokenizer (and for a vision-language model its
    processor, None for a text model), names, limits and metrics."""

    def __init__(self, engine: Engine, tokenizer, model_name: str, limits: ServeLimits,
                 template_kwargs: dict | None = None, processor=None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.processor = processor
        self.template_kwargs = template_kwargs or {}  # the chat template's defaults (--enable_thinking)
        self.model_name = model_name
        self.limits = limits
        self.admitted = 0
        self.in_flight = 0  # HTTP requests being answered (the router counts them)
        self.draining = False
        self.cut = False  # past the drain timeout: generations end with ShuttingDown
        self._live: set[asyncio.Queue] = set()  # the output queue of every generation under way
        self.metrics = ServeMetrics(engine, lambda: self.admitted)
        self.created = int(time.time())
        self._token_text: dict[int, str] = {}
        self.engine_vocab = getattr(engine, "vocab_size", None) or len(tokenizer)

    def model_names(self) -> list[str]:
        return [self.model_name, *self.engine.adapters]

    def adapter_for(self, model: str) -> str | None:
        """The adapter a request's `model` names (None: the base model); unknown names are a 404."""
        if model == self.model_name:
            return None
        if model in self.engine.adapters:
            return model
        raise ModelNotFound(f"The model `{model}` does not exist. Served models: {', '.join(self.model_names())}",
                            param="model")

    def token_text(self, token: int) -> str:
        if token not in self._token_text:
            self._token_text[token] = self.tokenizer.decode([token])
        return self._token_text[token]

    def check_length(self, prompt: list[int], max_tokens: int | None, param: str = "messages") -> int:
        """The number of tokens to generate, after checking the prompt and limit fit in the context; `param` names
        the field that holds the prompt."""
        limit = self.engine.max_context
        if not prompt:
            raise BadRequest(f"{param}: the prompt is empty (no tokens); send some text", param=param)
        if len(prompt) >= limit and not (max_tokens == 0 and len(prompt) <= limit):
            raise BadRequest(f"This model's maximum context length is {limit} tokens. However, your prompt has "
                             f"{len(prompt)} tokens. Please shorten it.", param=param)
        room = limit - len(prompt)
        if max_tokens is None:
            return min(room, self.limits.default_max_tokens)
        if max_tokens > room:
            raise BadRequest(f"This model's maximum context length is {limit} tokens. However, you requested "
                             f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the prompt, {max_tokens} for the "
                             f"completion). Please reduce the prompt or max_tokens.", param="max_tokens")
        return max_tokens

    def check_room(self, sequences: int, param: str = "n") -> None:
        """Refuse (503 draining, 400 never fits, 429 busy) a request for `sequences` that `admit` would refuse, without
        reserving anything: asked first by requests with costly work before admission (images to fetch)."""
        if self.draining:
            raise ShuttingDown("The server is shutting down and takes no new requests; retry on another replica.")
        bound = self.limits.max_concurrency + self.limits.max_queue
        if sequences > bound:
            raise BadRequest(f"{param}: this request needs {sequences} sequences (prompts x n), more than the server "
                             f"ever holds at once ({bound}: --max_concurrency + --max_queue); send fewer", param=param)
        if self.admitted + sequences > bound:
            self.metrics.rejected.inc()
            raise Overloaded(f"The server is busy ({self.admitted} sequences running or queued, at most {bound}); "
                             "retry shortly.")

    def admit(self, sequences: int, param: str = "n") -> Admission:
        """Reserve room for `sequences` or refuse with 429 when running plus queued would exceed the bounds (with 400
        when this request alone could never fit; `param` names the field that asks for so many)."""
        self.check_room(sequences, param)
        self.admitted += sequences
        timeout = self.limits.request_timeout
        return Admission(self, sequences, None if timeout is None else time.monotonic() + timeout)

    def cut_off(self) -> None:
        """End every generation, under way or yet to start, with ShuttingDown (the drain timeout has passed)."""
        self.cut = True
        for outputs in self._live:
            outputs.put_nowait((None, self._cut_error()))

    @staticmethod
    def _cut_error() -> ShuttingDown:
        return ShuttingDown("The server is shutting down: this request was ended before it finished; retry it.")

    async def generate(self, jobs: list[tuple], done: set[int],
                       deadline: float | None = None) -> AsyncIterator[tuple[int, StepOutput]]:
        """Run the jobs in the engine; yields (job index, output) until every job has finished. A job is (prompt ids,
        SamplingParams, adapter or None), with the prompt's image tensors (GenerationRequest.media) as a fourth item
        when it has images. The consumer adds a job's index to `done` to end it early (a stop string); leaving early
        (a client that disconnected) cancels the unfinished ones at once. Past `deadline` (time.monotonic()) it
        raises TimedOut."""
        if self.cut:
            raise self._cut_error()
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue = asyncio.Queue()
        timer = None if deadline is None else loop.call_later(max(deadline - time.monotonic(), 0), outputs.put_nowait,
                                                              (None, TimedOut(self._timeout_message())))
        self._live.add(outputs)
        requests = [GenerationRequest(prompt, params, lambda out, i=i: loop.call_soon_threadsafe(
            outputs.put_nowait, (i, out)), adapter, media=media[0] if media else None)
            for i, (prompt, params, adapter, *media) in enumerate(jobs)]
        started = time.perf_counter()
        last: dict[int, float] = {}
        open_jobs = set(range(len(jobs)))
        for request in requests:
            self.metrics.prompt_tokens.inc(len(request.prompt))
            self.engine.submit(request)
        try:
            while open_jobs - done:
                index, out = await outputs.get()
                if index is None:  # the deadline or the shutdown
                    raise out
                if index in done:
                    continue
                if isinstance(out.error, UnsupportedRequest):
                    raise BadRequest(str(out.error))
                if out.error is not None:
                    raise EngineFailed(f"generation failed: {type(out.error).__name__}: {out.error}")
                if out.token_id is not None:
                    now = time.perf_counter()
                    if index in last:
                        self.metrics.token_gap.observe(now - last[index])
                    else:
                        self.metrics.first_token.observe(now - started)
                    last[index] = now
                    self.metrics.generation_tokens.inc()
                if out.finish_reason is not None:
                    open_jobs.discard(index)
                yield index, out
                if index in done and index in open_jobs:
                    self.engine.cancel(requests[index].id)
            self.metrics.latency.observe(time.perf_counter() - started)
        finally:
            self._live.discard(outputs)
            if timer is not None:
                timer.cancel()
            for request in requests:
                self.engine.cancel(request.id)

    def _timeout_message(self) -> str:
        return (f"request_timeout: the request ran past the server's limit of {self.limits.request_timeout:g} s "
                "(--request_timeout); ask for fewer tokens or retry later.")


class Admission:
    """A reservation of queue room, released exactly once, and the time (time.monotonic()) its request must end by."""

    def __init__(self, serving: Serving, sequences: int, deadline: float | None = None):
        self.serving = serving
        self.sequences = sequences
        self.deadline = deadline

    def release(self) -> None:
        self.serving.admitted -= self.sequences
        self.sequences = 0
