"""A real uvicorn server on a free loopback port, serving a tiny model (and two adapters) to the openai client."""

from __future__ import annotations

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
