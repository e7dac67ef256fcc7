"""Hub access: how each failure reads, how fast an unreachable hub fails, and downloads served from the cache."""

from __future__ import annotations

import time

import pytest

from tunestack.errors import DataError, ModelNotFoundError
from tunestack.hub import download_dataset, download_model, resolve_model


def test_silent_hub_fails_in_seconds(online, silent_hub, monkeypatch):
    monkeypatch.setattr("tunestack.hub.fetch.PROBE_TIMEOUT_S", 1.0)
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("org/name")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "could not be reached" in message and "Timeout" in message and "\n" not in message
    assert "`tunestack download --model org/name`" in message


def test_repository_not_found(online, fake_hub):
    fake_hub.headers = {"X-Error-Code": "RepoNotFound"}
    with pytest.raises(ModelNotFoundError, match="has no model repository 'org/name' \\(or it is private\\)"):
        resolve_model("org/name")


def test_gated_repository(online, fake_hub):
    fake_hub.status, fake_hub.headers = 403, {"X-Error-Code": "GatedRepo"}
    with pytest.raises(ModelNotFoundError, match=r"'org/name' is gated.*terms at http://127.0.0.1:\d+/org/name"):
        resolve_model("org/name")


def test_missing_revision(online, fake_hub):
    fake_hub.headers = {"X-Error-Code": "RevisionNotFound"}
    with pytest.raises(ModelNotFoundError, match="'org/name' has no revision 'v9'"):
        resolve_model("org/name", revision="v9")


def test_hub_server_error(online, fake_hub, monkeypatch):
    fake_hub.status = 418
    with pytest.raises(ModelNotFoundError, match="answered with an error"):
        resolve_model("org/name")


def test_cache_is_used_before_the_network(online, silent_hub, hub_cache, tiny_model_dir):
    snapshot = hub_cache("org/tiny", tiny_model_dir)
    assert resolve_model("org/tiny").path == snapshot


def test_download_model_offline_is_served_by_the_cache(hub_cache, tiny_model_dir):
    snapshot = hub_cache("Qwen/Qwen2.5-0.5B-Instruct", tiny_model_dir)
    assert download_model("qwen2.5-0.5b-instruct") == snapshot


def test_download_model_offline_without_cache():
    with pytest.raises(ModelNotFoundError, match="cannot download model 'org/name': not in the Hugging Face cache"):
        download_model("org/name")


def test_download_model_of_a_local_directory_resolves_it(tiny_model_dir):
    assert download_model(str(tiny_model_dir)) == tiny_model_dir


def test_download_model_refuses_names_that_are_not_hub_ids():
    with pytest.raises(ModelNotFoundError, match="nothing to download"):
        download_model("no such thing")


def test_download_dataset_from_cache(hub_cache, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "hi"}\n')
    snapshot = hub_cache("org/data", tmp_path / "data", repo_type="dataset")
    assert download_dataset("org/data") == snapshot


def test_download_dataset_errors():
    with pytest.raises(DataError, match="not a hub id"):
        download_dataset("train.jsonl")
    with pytest.raises(DataError, match="`tunestack download --dataset org/data`"):
        download_dataset("org/data")
