"""The server backend: any OpenAI-compatible server through the official `openai` client, whose own retries (backoff
on connection errors, timeouts, 408, 409, 429 and 5xx, honouring `Retry-After`) are the retry policy; multiple
choice by prompt log-probabilities (the harness's local-completions request), generation by completions."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tunestack.errors import MissingExtraError, TunestackError
from tunestack.eval.extract import truncate_at
from tunestack.eval.scoring import LogprobsUnavailable

class RemoteBackend:
    """Evaluation against a running server; a question whose requests keep failing is reported, not fatal."""

    supports_loglikelihood = True

    def __init__(self, url: str, api_key: str | None, model: str | None, concurrency: int, max_retries: int,
                 seed: int, timeout: float = 120.0):
        try:
            import openai
        except ImportError:
            raise MissingExtraError("openai", "eval", "Evaluating a server (--url)") from None
        self.openai = openai
        base = url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY",
                                    max_retries=max_retries, timeout=timeout)
        self.concurrency, self.seed = concurrency, seed
        self.notes: list[str] = []
        self.errors: list[str] = []
        self._chat_for_completions = False
        self.model = model or self._first_model()
        self.name = f"{self.model} at {self.base_url}"

    def _first_model(self) -> str:
        try:
            models = self.client.models.list().data
        except self.openai.APIError as exc:
            raise TunestackError(f"--url {self.base_url}: the server cannot be reached or refused to list its "
                                 f"models ({_reason(exc)}); is it running? (or name the model: "
                                 f"--served_model_name)") from None
        if not models:
            raise TunestackError(f"--url {self.base_url}: the server lists no models; pass --served_model_name")
        return models[0].id

    def _each(self, work: Callable, items: list, progress: Callable[[int], None]) -> list:
        """work(item) for every item, `concurrency` at a time; None (and a recorded error) where it failed."""
        def guarded(item):
            try:
                return work(item)
            except (self.openai.APIError, LogprobsUnavailable) as exc:
                self.errors.append(_reason(exc))
                return None
            finally:
                progress(1)

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(guarded, items))

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: Callable[[int], None]) -> list:
        """Per pair (log-likelihood, greedy or None, continuation tokens) from one echoed completions request."""
        if not pairs:
            return []
        try:  # the first request tells whether the server gives prompt log-probabilities at all
            first = [self._loglik(pairs[0])]
        except (self.openai.BadRequestError, self.openai.NotFoundError, self.openai.UnprocessableEntityError) as exc:
            raise LogprobsUnavailable(_reason(exc)) from None
        except self.openai.APIError as exc:
            self.errors.append(_reason(exc))
            first = [None]
        progress(1)
        return first + self._each(self._loglik, pairs[1:], progress)

    def _loglik(self, pair: tuple[str, str]):
        context, continuation = pair
        spaces = len(context) - len(context.rstrip())
        if spaces:  # the harness's rule: trailing whitespace belongs to the continuation
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        prompt = context + continuation
        response = self.client.completions.create(model=self.model, prompt=prompt, echo=True, logprobs=1,
                                                  max_tokens=0, temperature=0.0)
        logprobs = response.choices[0].logprobs if response.choices else None
        if logprobs is None or not logprobs.token_logprobs or not logprobs.text_offset:
            raise LogprobsUnavailable("the echoed completion carries no token_logprobs")
        picked = [i for i, offset in enumerate(logprobs.text_offset) if len(context) <= offset < len(prompt)]
        total = sum(logprobs.token_logprobs[i] for i in picked)
        greedy = None
        if logprobs.top_logprobs and logprobs.tokens:
            tops = [logprobs.top_logprobs[i] or {} for i in picked]
            greedy = all(top and max(top, key=top.get) == logprobs.tokens[i] for i, top in zip(picked, tops))
        return total, greedy, [logprobs.tokens[i] for i in picked] if logprobs.tokens else []

    def generate(self, prompts: list[str], until: list[str], max_new_tokens: int, progress) -> list[str | None]:
        """Greedy completions of raw prompts (the completions endpoint), cut at the stop strings; through chat when
        the server has no completions endpoint."""
        def complete(prompt: str) -> str:
            if self._chat_for_completions:
                return self._chat_one([{"role": "user", "content": prompt}], max_new_tokens)
            try:
                response = self.client.completions.create(model=self.model, prompt=prompt, max_tokens=max_new_tokens,
                                                          temperature=0.0, stop=until[:4] or None, seed=self.seed)
            except self.openai.NotFoundError:
                self._chat_for_completions = True
                self.notes.append("the server has no completions endpoint: generation tasks were asked through "
                                  "chat completions (not comparable with the harness)")
                return self._chat_one([{"role": "user", "content": prompt}], max_new_tokens)
            return response.choices[0].text

        outputs = self._each(complete, prompts, progress)
        return [None if o is None else truncate_at(o, until) for o in outputs]

    def chat(self, conversations: list[list[dict]], max_new_tokens: int, progress) -> list[str | None]:
        return self._each(lambda messages: self._chat_one(messages, max_new_tokens).strip(), conversations, progress)

    def _chat_one(self, messages: list[dict], max_new_tokens: int) -> str:
        response = self.client.chat.completions.create(model=self.model, messages=openai_messages(messages),
                                                       max_tokens=max_new_tokens, temperature=0.0, seed=self.seed)
        return response.choices[0].message.content or ""


def openai_messages(messages: list[dict]) -> list[dict]:
    """Messages as the OpenAI API takes them: image parts become `image_url` parts, a local file sent inline as a
    base64 data URL (the server cannot read this machine's files)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": _image_url(p["image"])}}
                       if p.get("type") == "image" else p for p in content]
        out.append({**message, "content": content})
    return out


def _image_url(ref: str) -> str:
    import base64
    import mimetypes

    from tunestack.media import image_bytes

    if ref.startswith(("data:", "http://", "https://")):
        return ref
    kind = mimetypes.guess_type(ref)[0] or "image/png"
    return f"data:{kind};base64,{base64.b64encode(image_bytes(ref, ref)).decode()}"


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"HTTP {status}: {text}" if status else text
