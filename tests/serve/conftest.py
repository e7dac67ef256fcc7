"""A real uvicorn server on a free loopback port, serving a tiny model (and two adapters) to the openai client."""

from __future__ import annotations

import json
import shutil

import pytest

from server_helpers import make_serving, running_server


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


@pytest.fixture(scope="module")
def long_context_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with room for 8192 positions, so that a long stream, left to run, outlasts any test."""
    path = tmp_path_factory.mktemp("long-context")
    for file in tiny_model_dir.iterdir():
        shutil.copy(file, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8192}))
    return path
