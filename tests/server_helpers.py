"""Serving helpers for tests: a real uvicorn server on a free loopback port, a Serving over a tiny model."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app):
    """Run `app` under uvicorn in a background thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def multimodal_client(model_dir, max_batch: int = 4):
    """The openai client of a uvicorn server on loopback serving the multimodal model in `model_dir` as `tiny`
    (pt engine, fp32), built as `tunestack serve` builds it."""
    import openai

    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    parts = build_engine(ModelArgs(model=str(model_dir), dtype="fp32"), "pt", EngineOptions(max_batch=max_batch))
    assert parts.processor is not None
    serving = Serving(parts.engine, parts.tokenizer, "tiny", ServeLimits(max_batch, 16, 64), processor=parts.processor)
    try:
        with running_server(build_app(serving)) as url:
            yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    finally:
        parts.engine.close()


@contextmanager
def serve_subprocess(model_dir, *flags: str, env: dict | None = None):
    """`tunestack serve --model MODEL_DIR FLAGS` in a subprocess on a free loopback port, served as `tiny` (with
    `env` added to the tests' environment); yields (base URL, process) once /health answers, and stops it after."""
    import httpx

    from helpers import cli_env

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tunestack", "serve", "--model", str(model_dir), "--port",
                                str(port), "--served_model_name", "tiny", "--dtype", "fp32", *flags],
                               env=cli_env(env), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def make_serving(model_dir, named_adapters=None, max_concurrency=8, max_queue=16, max_context=None):
    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, create_engine
    from tunestack.serve.serving import ServeLimits, Serving

    options = EngineOptions(named_adapters=named_adapters or {}, max_batch=max_concurrency, max_context=max_context)
    engine, tokenizer = create_engine(ModelArgs(model=str(model_dir), dtype="fp32"), "pt", options)
    return Serving(engine, tokenizer, "tiny", ServeLimits(max_concurrency, max_queue, 64))


class FakeEngine:
    """An engine on token ids that emits `tokens` in turn, one every `delay` seconds per running request, with
    `max_batch` running at once and the rest waiting: protocol tests without a model, at a pace they control."""

    adapters = ("fake-adapter",)
    mixed_adapter_batches = True

    def __init__(self, tokens: list[int], delay: float = 0.02, max_batch: int = 1, max_context: int = 4096):
        from tunestack.inference.engine import StepOutput

        self.StepOutput = StepOutput
        self.tokens, self.delay, self.max_batch, self.max_context = tokens, delay, max_batch, max_context
        self.vocab_size = 1000
        self.lock = threading.Lock()
        self.queue, self.active, self.cancelled = [], {}, set()
        self.submitted = []
        self.closed = False
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, request):
        with self.lock:
            self.submitted.append(request)
            self.queue.append(request)

    def cancel(self, request_id):
        with self.lock:
            self.cancelled.add(request_id)

    def waiting(self):
        return len(self.queue)

    def running(self):
        return len(self.active)

    def close(self):
        self.closed = True

    def _loop(self):
        while not self.closed:
            with self.lock:
                self.queue = [r for r in self.queue if r.id not in self.cancelled]
                self.active = {k: v for k, v in self.active.items() if k not in self.cancelled}
                while self.queue and len(self.active) < self.max_batch:
                    request = self.queue.pop(0)
                    self.active[request.id] = [request, 0]
                for key, state in list(self.active.items()):
                    request, count = state
                    limit = request.params.max_new_tokens
                    out = self.StepOutput(token_id=self.tokens[count % len(self.tokens)] if limit else None)
                    state[1] = count + 1
                    if state[1] >= limit:
                        out.finish_reason = "length"
                        del self.active[key]
                    request.emit(out)
            time.sleep(self.delay)
