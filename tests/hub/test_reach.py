"""Hub reachability: the endpoint's own port is probed, and model, training-data and eval-task loading all ask the
same probe."""

from __future__ import annotations

import socket

import huggingface_hub.constants as hf_constants
import pytest

from tunestack.errors import DataError
from tunestack.hub.reach import endpoint_address, hub_reachable


@pytest.mark.parametrize("url, address", [
    ("http://127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("http://mirror.local", ("mirror.local", 80)),
    ("https://huggingface.co", ("huggingface.co", 443)),
    ("https://hf-mirror.example:8443/", ("hf-mirror.example", 8443)),
])
def test_endpoint_address_uses_the_port_of_the_scheme(url, address):
    assert endpoint_address(url) == address


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_a_plain_http_endpoint_is_probed_on_its_port(no_proxy, monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert hub_reachable(timeout=1.0)
    assert not hub_reachable(timeout=1.0)  # closed now: nothing listens on that port


@pytest.fixture
def probes(online, no_proxy, monkeypatch) -> list:
    """Every TCP probe's address, each refused; the hub is a plain-http endpoint on the default port."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1")
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1")
    seen = []

    def refuse(address, *args, **kwargs):
        seen.append(tuple(address))
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return seen


def test_model_snapshots_use_the_shared_probe(probes):
    from tunestack.hub.fetch import HubUnavailable, hf_snapshot

    with pytest.raises(HubUnavailable) as error:
        hf_snapshot("org/model")
    assert error.value.reason == "unreachable" and "127.0.0.1:80" in error.value.detail
    assert probes == [("127.0.0.1", 80)]


def test_training_datasets_use_the_shared_probe(probes):
    from tunestack.data.hub_datasets import hub_rows

    with pytest.raises(DataError, match="the hub is unreachable"):
        list(hub_rows("org/dataset", None, "train"))
    assert probes == [("127.0.0.1", 80)]


def test_eval_tasks_use_the_shared_probe(probes):
    from tunestack.eval.loading import read_hub

    with pytest.raises(DataError, match="the hub cannot be reached"):
        read_hub("mytask", "org/dataset", [None], ["test"])
    assert probes == [("127.0.0.1", 80)]
