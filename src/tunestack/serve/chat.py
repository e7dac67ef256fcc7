"""`/v1/chat/completions`: the tokenizer's chat template (a vision-language model's processor, with its images), n
choices, stop strings, logprobs, streaming, usage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from tunestack.inference.chat_prompt import chat_prompt_ids, vision_prompt
from tunestack.media import MediaError
from tunestack.serve.choice import ChoiceState, sse_events, step_choices
from tunestack.serve.errors import BadRequest
from tunestack.serve.params import sampling_params, usage
from tunestack.serve.protocol import ChatCompletionRequest
from tunestack.serve.serving import Admission, Serving


def chat_prompt(serving: Serving, request: ChatCompletionRequest) -> list[int]:
    """The request's prompt token ids, rendered as the terminal chat and evaluation render a conversation."""
    return chat_inputs(serving, request)[0]


def chat_inputs(serving: Serving, request: ChatCompletionRequest) -> tuple[list[int], dict | None]:
    """(prompt ids, image tensors or None): through the processor for a vision-language model, which reads the
    images (a bad one is a 400 naming `messages[i].content[j]`); images sent to a text model are a 400 too."""
    processor = getattr(serving, "processor", None)
    kwargs = {**getattr(serving, "template_kwargs", {}), **(request.chat_template_kwargs or {})}
    if processor is None:
        _refuse_images(serving, request)
    try:
        if processor is None:
            return chat_prompt_ids(serving.tokenizer, [{"role": m.role, "content": m.text()} for m in request.messages],
                                   kwargs), None
        return vision_prompt(processor, [m.message() for m in request.messages], kwargs,
                             raw=getattr(serving.engine, "expands_media", False))
    except MediaError as exc:
        raise BadRequest(str(exc), param="messages") from None
    except Exception as exc:  # the template itself refuses (say, roles that do not alternate)
        raise BadRequest(f"messages: the model's chat template rejected them: {exc}", param="messages") from None


async def render_chat(serving: Serving, request: ChatCompletionRequest) -> tuple[list[int], dict | None]:
    """`chat_inputs`, in a worker thread when there are images to fetch, decode and process, so that the server
    answers other requests meanwhile. An unknown model name is refused first, and with images a full server too."""
    serving.adapter_for(request.model)
    if getattr(serving, "processor", None) is not None and any(m.media_parts() for m in request.messages):
        serving.check_room(request.n)  # a busy server answers 429 before fetching anyone's images or audio
        return await asyncio.to_thread(_worker_chat_inputs, serving, request)
    return chat_inputs(serving, request)


def _worker_chat_inputs(serving: Serving, request: ChatCompletionRequest) -> tuple[list[int], dict | None]:
    """`chat_inputs` in a worker thread, which then lets go of the OpenMP workers its image processing may have
    started: beside the engine's own they would slow every decoding step (inference/openmp.py)."""
    from tunestack.inference.openmp import release

    try:
        return chat_inputs(serving, request)
    finally:
        release()


def _refuse_images(serving: Serving, request: ChatCompletionRequest) -> None:
    for i, message in enumerate(request.messages):
        for j in message.media_parts():
            raise BadRequest(f"messages[{i}].content[{j}]: the model `{request.model}` takes text only (a text-only "
                             "model, or one served by a backend other than pt), so it cannot read images or audio; "
                             "send text, or serve a multimodal model", param="messages")


class ChatCompletion:
    """One chat request from admission to its last byte, as a JSON body or a stream of SSE events. `inputs` is the
    rendered prompt (render_chat's), rendered here when not given."""

    def __init__(self, serving: Serving, request: ChatCompletionRequest, inputs: tuple | None = None):
        self.serving = serving
        self.request = request
        adapter = serving.adapter_for(request.model)
        self.prompt, media = inputs if inputs is not None else chat_inputs(serving, request)
        max_tokens = serving.check_length(self.prompt, request.token_limit())
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        images = [media] if media else []  # a job's fourth item (see Serving.generate)
        self.jobs = [(self.prompt, sampling_params(request, max_tokens, i, logprobs), adapter, *images)
                     for i in range(request.n)]
        self.choices = [ChoiceState(serving.tokenizer, request.stop_strings()) for _ in self.jobs]
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.admission: Admission = serving.admit(len(self.jobs))

    async def _steps(self) -> AsyncIterator[tuple[int, str, list]]:
        async with aclosing(step_choices(self.serving, self.jobs, self.choices, self.admission)) as steps:
            async for index, text, before in steps:  # closed with this generator: the admission frees at once
                yield index, text, self.choices[index].logprobs[before:]

    def _usage(self) -> dict:
        return usage(len(self.prompt), sum(c.tokens for c in self.choices))

    def _logprobs(self, entries) -> dict | None:
        if not self.request.logprobs:
            return None
        return {"content": [_entry(self.serving, e, self.request.top_logprobs or 0) for e in entries]}

    async def response(self) -> dict:
        async for _ in self._steps():
            pass
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                    "logprobs": self._logprobs(c.logprobs), "finish_reason": c.finish_reason}
                   for i, c in enumerate(self.choices)]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.request.model,
                "choices": choices, "usage": self._usage()}

    def stream(self) -> AsyncIterator[str]:
        include_usage = bool(self.request.stream_options and self.request.stream_options.include_usage)
        usage_chunk = (lambda: {**self._base(), "choices": [], "usage": self._usage()}) if include_usage else None
        return sse_events(self._chunks(include_usage), usage_chunk)

    async def _chunks(self, include_usage: bool) -> AsyncIterator[dict]:
        for i in range(len(self.jobs)):
            yield self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}], include_usage)
        async with aclosing(self._steps()) as steps:
            async for index, text, entries in steps:
                finish = self.choices[index].finish_reason
                if text or entries or finish:
                    delta = {"content": text} if text else {}
                    yield self._chunk([{"index": index, "delta": delta, "logprobs": self._logprobs(entries),
                                        "finish_reason": finish}], include_usage)

    def _base(self) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.request.model}

    def _chunk(self, choices: list[dict], include_usage: bool) -> dict:
        return {**self._base(), "choices": choices, **({"usage": None} if include_usage else {})}


def _entry(serving: Serving, logprob, top: int) -> dict:
    text = serving.token_text(logprob.token_id)
    alternatives = [(serving.token_text(t), lp) for t, lp in logprob.top[:top]]
    return {"token": text, "logprob": logprob.logprob, "bytes": list(text.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives]}

