"""One choice of a response as its tokens arrive: text so far, stop strings, logprobs, token count, why it ended."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from tunestack.inference.engine import StepOutput, TokenLogprob
from tunestack.inference.detokenize import Detokenizer, StopScanner
from tunestack.serve.errors import ServeError, error_body


class ChoiceState:
    """Feeds engine outputs through the detokenizer and stop strings; `step` returns the newly visible text."""

    def __init__(self, tokenizer, stops: list[str]):
        self.detokenizer = Detokenizer(tokenizer)
        self.scanner = StopScanner(stops)
        self.text = ""
        self.tokens = 0
        self.logprobs: list[TokenLogprob] = []
        self.prompt_logprobs: list[TokenLogprob] | None = None
        self.finish_reason: str | None = None

    def step(self, out: StepOutput) -> str:
        if out.prompt_logprobs is not None:
            self.prompt_logprobs = out.prompt_logprobs
        piece = ""
        if out.token_id is not None:
            self.tokens += 1
            piece = self.detokenizer.add(out.token_id)
            if out.logprob is not None and not self.scanner.stopped:
                self.logprobs.append(out.logprob)
        if out.finish_reason is not None:
            piece += self.detokenizer.flush()
        visible = self.scanner.push(piece, final=out.finish_reason is not None)
        self.text += visible
        if self.scanner.stopped:
            self.finish_reason = "stop"
        elif out.finish_reason is not None:
            self.finish_reason = out.finish_reason
        return visible


async def step_choices(serving, jobs: list, choices: list[ChoiceState], admission):
    """Feed each engine step to its choice; yield (choice index, new text, logprob entries before this step).
    The admission is released however the caller stops iterating."""
    done: set[int] = set()
    try:
        async for index, out in serving.generate(jobs, done, admission.deadline):
            choice = choices[index]
            before = len(choice.logprobs)
            text = choice.step(out)
            if choice.finish_reason is not None:
                done.add(index)
            yield index, text, before
    finally:
        admission.release()


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def sse_events(chunks: AsyncIterator[dict], usage_chunk: Callable[[], dict] | None) -> AsyncIterator[str]:
    """A stream's server-sent events: each chunk; an engine failure after the stream started as an error event
    (the status line is long gone); the usage chunk when one is asked for; then [DONE]."""
    async with aclosing(chunks):  # a client that leaves closes the chunks, which frees the request's room
        try:
            async for payload in chunks:
                yield sse(payload)
        except ServeError as exc:
            yield sse(error_body(str(exc), exc.type, exc.param))
    if usage_chunk is not None:
        yield sse(usage_chunk())
    yield "data: [DONE]\n\n"
