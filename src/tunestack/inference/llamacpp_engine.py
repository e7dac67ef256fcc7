"""The llama.cpp backend for GGUF files (llama-cpp-python): one sequence at a time on token ids, with tunestack's
sampling settings and JSON mode (llama.cpp's JSON grammar); the serving layer applies the template."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

from tunestack.config import ModelArgs
from tunestack.errors import ConfigError
from tunestack.inference.async_engine import require
from tunestack.inference.engine import (IMAGES_PT_ONLY, Engine, GenerationRequest, SamplingParams, StepOutput,
                                        UnsupportedRequest)


def sample_kwargs(params: SamplingParams) -> dict:
    """Keyword arguments of `Llama.generate` for tunestack's settings (greedy is top_k 1)."""
    greedy = params.greedy
    return {"temp": 0.0 if greedy else params.temperature, "top_k": 1 if greedy else params.top_k,
            "top_p": 1.0 if greedy else params.top_p, "min_p": 0.0, "typical_p": 1.0,
            "repeat_penalty": params.repetition_penalty, "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty, "reset": True}


def gguf_file(model_args: ModelArgs, resolved) -> Path:
    """The .gguf file behind a model name (a .gguf path, or the embedded model's bundled file)."""
    path = Path(model_args.model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if resolved.kind == "embedded":
        from tunestack.hub.gguf import embedded_gguf_path

        if embedded_gguf_path() is not None:
            return embedded_gguf_path()
    raise ConfigError([f"--backend llama.cpp runs GGUF files, and --model {model_args.model} is none: pass "
                       "--model FILE.gguf (`tunestack export --to gguf` writes one from any model or run)"])


class LlamaCppEngine(Engine):
    """Requests run one after another on a worker thread; the others wait in order."""

    def __init__(self, llama, eos_ids: list[int]):
        self.llama = llama
        self.eos_token_ids = set(eos_ids)
        self.max_context = llama.n_ctx()
        self.vocab_size = llama.n_vocab()
        self._queue: collections.deque[GenerationRequest] = collections.deque()
        self._cancelled: set[int] = set()
        self._current: int | None = None
        self._wake = threading.Condition()
        self._closed = False
        threading.Thread(target=self._loop, name="tunestack-llama-cpp", daemon=True).start()

    def submit(self, request: GenerationRequest) -> None:
        if request.media:
            request.emit(StepOutput(error=UnsupportedRequest(IMAGES_PT_ONLY)))
            return
        with self._wake:
            self._queue.append(request)
            self._wake.notify()

    def cancel(self, request_id: int) -> None:
        with self._wake:
            if request_id == self._current or any(r.id == request_id for r in self._queue):
                self._cancelled.add(request_id)

    def waiting(self) -> int:
        return len(self._queue)

    def running(self) -> int:
        return int(self._current is not None)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                request = self._queue.popleft()
                self._current = request.id
            try:
                if request.id not in self._cancelled:
                    self._run(request)
            except Exception as exc:
                request.emit(StepOutput(error=exc))
            finally:
                with self._wake:
                    self._current = None
                    self._cancelled.discard(request.id)

    def _run(self, request: GenerationRequest) -> None:
        params = request.params
        if params.prompt_logprobs is not None or params.logprobs is not None:
            # llama-cpp-python keeps logits only with logits_all, a context-by-vocabulary array (1.6 GB for the
            # embedded model's 8k context): too much to hold for every server.
            raise UnsupportedRequest("--backend llama.cpp does not report logprobs; use --backend pt or vllm")
        if params.seed is not None:
            self.llama.set_seed(params.seed)
        grammar = None
        if params.json_object:
            from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

            grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        stops = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids)
        if params.max_new_tokens <= 0:
            request.emit(StepOutput(finish_reason="length"))
            return
        count = 0
        for token in self.llama.generate(request.prompt, grammar=grammar, **sample_kwargs(params)):
            if request.id in self._cancelled:
                return
            if token in stops:
                request.emit(StepOutput(finish_reason="stop"))
                return
            count += 1
            full = count >= params.max_new_tokens or len(request.prompt) + count >= self.max_context
            request.emit(StepOutput(token_id=token, finish_reason="length" if full else None))
            if full:
                return


def build(model_args: ModelArgs, options):
    llama_cpp = require("llama_cpp", "llama-cpp-python", "llamacpp", "--backend llama.cpp")
    from tunestack.inference.loading import resolve_for_inference

    resolved, adapter_dirs, tokenizer = resolve_for_inference(model_args, options.adapters)
    if adapter_dirs or options.named_adapters:
        raise ConfigError(["--backend llama.cpp serves a GGUF file without adapters: merge them first with "
                           "`tunestack export --to gguf` and serve that file"])
    path = gguf_file(model_args, resolved)
    llama = llama_cpp.Llama(model_path=str(path), n_ctx=options.max_context or 0, n_batch=512, verbose=False,
                            logits_all=False)
    return LlamaCppEngine(llama, sorted({tokenizer.eos_token_id, llama.token_eos()} - {None, -1})), tokenizer
