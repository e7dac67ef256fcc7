"""`/v1/completions`: text or token-id prompts (one or a list), n, stop strings, logprobs, and `echo` scoring of
the prompt itself (what lm-evaluation-harness's `local-completions` model uses for log-likelihoods)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from tunestack.serve.choice import ChoiceState, sse_events, step_choices
from tunestack.serve.errors import BadRequest
from tunestack.serve.params import sampling_params, usage
from tunestack.serve.protocol import CompletionRequest
from tunestack.serve.serving import Admission, Serving


class Completion:
    """One completion request (every prompt times n choices) as a JSON body or a stream of SSE events."""

    def __init__(self, serving: Serving, request: CompletionRequest):
        self.serving = serving
        self.request = request
        adapter = serving.adapter_for(request.model)
        vocab = serving.engine_vocab
        self.prompts, self.texts = [], []
        for prompt in request.prompts():
            if isinstance(prompt, list) and any(not 0 <= t < vocab for t in prompt):  # before decoding them
                raise BadRequest(f"prompt: token ids must lie in [0, {vocab})", param="prompt")
            self.texts.append(serving.tokenizer.decode(prompt) if isinstance(prompt, list) else prompt)
            self.prompts.append(prompt if isinstance(prompt, list) else
                                serving.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        top = request.logprobs
        self.jobs = []
        for ids in self.prompts:
            max_tokens = serving.check_length(ids, request.max_tokens, param="prompt")
            for i in range(request.n):
                params = sampling_params(request, max_tokens, i, top, prompt_logprobs=top if request.echo else None)
                self.jobs.append((ids, params, adapter))
        if request.echo and request.stream:
            raise BadRequest("echo: not supported together with stream", param="echo")
        self.choices = [ChoiceState(serving.tokenizer, request.stop_strings()) for _ in self.jobs]
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.admission: Admission = serving.admit(len(self.jobs), "prompt" if len(self.prompts) > 1 else "n")

    def _steps(self) -> AsyncIterator[tuple[int, str, int]]:
        return step_choices(self.serving, self.jobs, self.choices, self.admission)

    def _usage(self) -> dict:
        return usage(sum(len(p) for p in self.prompts), sum(c.tokens for c in self.choices))

    async def response(self) -> dict:
        async for _ in self._steps():
            pass
        choices = []
        for index, choice in enumerate(self.choices):
            prompt, prompt_text = self.jobs[index][0], self.texts[index // self.request.n]
            text, entries = choice.text, [(lp.token_id, lp) for lp in choice.logprobs]
            if self.request.echo:
                text = prompt_text + text
                entries = [(prompt[0], None)] + [(lp.token_id, lp) for lp in choice.prompt_logprobs or []] + entries
            logprobs = self._logprobs(entries) if self.request.logprobs is not None else None
            choices.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": choice.finish_reason})
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.request.model,
                "choices": choices, "usage": self._usage()}

    def _logprobs(self, entries: list, offset: int = 0) -> dict:
        """OpenAI's legacy shape: parallel lists of tokens, logprobs, top-k dicts and character offsets."""
        top = self.request.logprobs
        result = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, logprob in entries:
            text = self.serving.token_text(token)
            result["tokens"].append(text)
            result["text_offset"].append(offset)
            offset += len(text)
            result["token_logprobs"].append(None if logprob is None else logprob.logprob)
            if logprob is None:
                result["top_logprobs"].append(None)
                continue
            alternatives = {self.serving.token_text(t): lp for t, lp in logprob.top[:top]}
            alternatives.setdefault(text, logprob.logprob)
            result["top_logprobs"].append(alternatives)
        return result

    def stream(self) -> AsyncIterator[str]:
        include_usage = bool(self.request.stream_options and self.request.stream_options.include_usage)
        usage_chunk = (lambda: {**self._base(), "choices": [], "usage": self._usage()}) if include_usage else None
        return sse_events(self._chunks(include_usage), usage_chunk)

    async def _chunks(self, include_usage: bool) -> AsyncIterator[dict]:
        offsets = [0] * len(self.choices)
        async with aclosing(self._steps()) as steps:
            async for index, text, before in steps:
                choice = self.choices[index]
                if not (text or choice.finish_reason):
                    continue
                entries = [(lp.token_id, lp) for lp in choice.logprobs[before:]]
                logprobs = self._logprobs(entries, offsets[index]) if self.request.logprobs is not None else None
                offsets[index] += sum(len(self.serving.token_text(t)) for t, _ in entries)
                chunk = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": choice.finish_reason}
                yield {**self._base(), "choices": [chunk], **({"usage": None} if include_usage else {})}

    def _base(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.request.model}

