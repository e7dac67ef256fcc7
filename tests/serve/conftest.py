"""A real uvicorn server on a free loopback port, serving a tiny model (and two adapters) to the openai client."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest


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


def make_serving(model_dir, named_adapters=None, max_concurrency=8, max_queue=16, max_context=None):
    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, create_engine
    from tunestack.serve.serving import ServeLimits, Serving

    options = EngineOptions(named_adapters=named_adapters or {}, max_batch=max_concurrency, max_context=max_context)
    engine, tokenizer = create_engine(ModelArgs(model=str(model_dir), dtype="fp32"), "pt", options)
    return Serving(engine, tokenizer, "tiny", ServeLimits(max_concurrency, max_queue, 64))


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    from helpers import make_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {"alpha": str(make_adapter(tiny_model_dir, root / "alpha", seed=1)),
            "beta": str(make_adapter(tiny_model_dir, root / "beta", seed=2))}


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapters):
    """(base URL, Serving) of a server with the tiny model as `tiny` and adapters `alpha` and `beta`."""
    from tunestack.serve.app import build_app

    serving = make_serving(tiny_model_dir, adapters)
    with running_server(build_app(serving)) as url:
        yield url, serving
    serving.engine.close()


@pytest.fixture()
def client(server):
    import openai

    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)
