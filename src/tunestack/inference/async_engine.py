"""Shared base of the backends with an asyncio API (vLLM, SGLang, LMDeploy): each request is a task on a private
event loop, and cancelling the task aborts the request inside the backend."""

from __future__ import annotations

import asyncio
import importlib
import threading

from tunestack.errors import MissingExtraError
from tunestack.inference.engine import (IMAGES_PT_ONLY, Engine, GenerationRequest, StepOutput, TokenLogprob,
                                        UnsupportedRequest)


def require(module: str, package: str, extra: str, purpose: str):
    """Import an optional dependency or raise the one-line error naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package, extra, purpose) from None


class AsyncLoopEngine(Engine):
    """Runs `generate_async(request)` of a subclass for each submitted request on one event-loop thread."""

    def __init__(self, eos_token_ids: list[int]):
        self.eos_token_ids = set(eos_token_ids)
        self.loop = asyncio.new_event_loop()
        self._tasks: dict[int, object] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="tunestack-backend-loop", daemon=True)
        self._thread.start()

    def run_on_loop(self, coroutine):
        """Run a coroutine on the engine's loop and wait for its result (backend start-up and shutdown)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def submit(self, request: GenerationRequest) -> None:
        if request.media and not self.expands_media:  # tensors are the pt engine's; these take text prompts here
            request.emit(StepOutput(error=UnsupportedRequest(IMAGES_PT_ONLY)))
            return
        self._tasks[request.id] = asyncio.run_coroutine_threadsafe(self._guarded(request), self.loop)

    def cancel(self, request_id: int) -> None:
        future = self._tasks.pop(request_id, None)
        if future is not None:
            future.cancel()

    def running(self) -> int:
        return len(self._tasks)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    async def generate_async(self, request: GenerationRequest) -> None:
        raise NotImplementedError

    async def _guarded(self, request: GenerationRequest) -> None:
        try:
            await self.generate_async(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to this request's consumer, the engine carries on
            request.emit(StepOutput(error=exc))
        finally:
            self._tasks.pop(request.id, None)


def emit_tokens(request: GenerationRequest, tokens: list[int], logprobs: list[TokenLogprob | None],
                finish_reason: str | None, stop_ids: set[int]) -> None:
    """Emit new tokens one StepOutput each; a final end token (the backend's "stop") is not part of the text."""
    if finish_reason == "stop" and tokens and tokens[-1] in stop_ids | set(request.params.stop_token_ids):
        tokens, logprobs = tokens[:-1], logprobs[:-1]
    for index, token in enumerate(tokens):
        last = index == len(tokens) - 1
        request.emit(StepOutput(token_id=token, logprob=logprobs[index] if index < len(logprobs) else None,
                                finish_reason=finish_reason if last else None))
    if finish_reason is not None and not tokens:
        request.emit(StepOutput(finish_reason=finish_reason))


def finish_name(reason) -> str | None:
    """A backend's finish reason as OpenAI's: stop or length (abort and others count as stop)."""
    if reason is None:
        return None
    reason = getattr(reason, "type", None) or (reason.get("type") if isinstance(reason, dict) else reason)
    return "length" if str(reason).lower() == "length" else "stop"
