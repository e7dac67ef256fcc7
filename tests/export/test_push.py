"""`tunestack export --push_to_hub` through the real CLI against fake Hugging Face Hub and ModelScope servers."""

import importlib.util
from pathlib import Path

import pytest

from fake_hubs import FakeHub, hugging_face_app, modelscope_app, serving
from helpers import cli, make_adapter

needs_modelscope = pytest.mark.skipif(importlib.util.find_spec("modelscope") is None,
                                      reason="modelscope is not installed (pip install 'tunestack[modelscope]')")
EXPORT_FILES = {"README.md", "chat_template.jinja", "config.json", "export.json", "generation_config.json",
                "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
REFUSED = 403
"""The failing commit's status: a 5xx would be retried with backoff for 15-25 s by both libraries first."""


def hub_env(hub: str, url: str, token: str, tmp_path: Path) -> dict:
    """Point the CLI's hub library at `url` with `token`, keeping its config and cache inside tmp_path."""
    if hub == "hf":
        return {"HF_ENDPOINT": url, "HF_TOKEN": token, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}
    return {"MODELSCOPE_ENDPOINT": url, "MODELSCOPE_API_TOKEN": token,
            "MODELSCOPE_HOME": str(tmp_path / "ms-home"), "MODELSCOPE_CACHE": str(tmp_path / "ms-cache")}


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), seed=1)


def export_and_push(model: Path, adapter: Path, out: Path, hub: str, env: dict, *flags: str):
    return cli("export", "--model", str(model), "--adapter", str(adapter), "--hub", hub, "--push_to_hub",
               "my-org/tiny", *flags, "--eval_ppl", "false", "--output_dir", str(out), check=False, env=env)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """The export's files, less its progress events (events.jsonl), which stay local."""
    assert (folder / "events.jsonl").is_file()
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "events.jsonl"}


HUBS = [pytest.param("hf", hugging_face_app, "hf_test", id="hugging-face"),
        pytest.param("modelscope", modelscope_app, "ms_test", id="modelscope", marks=needs_modelscope)]


@pytest.mark.parametrize(("hub", "app", "token"), HUBS)
def test_push_uploads_every_file_of_the_export(hub, app, token, tiny_model_dir, adapter, tmp_path):
    fake = FakeHub(token=token)
    with serving(app(fake)) as url:
        env = hub_env(hub, url, token, tmp_path)
        result = export_and_push(tiny_model_dir, adapter, tmp_path / "tiny", hub, env, "--private")
    assert result.returncode == 0, result.stderr
    local = folder_bytes(tmp_path / "tiny")
    assert set(local) == EXPORT_FILES
    assert fake.files["my-org/tiny"] == local  # every file, byte for byte, and nothing written beside them
    assert 'from_pretrained("my-org/tiny")' in local["README.md"].decode()
    first = fake.created[0]
    assert (first["visibility"] == "private") if hub == "hf" else (first["Visibility"] == 1), fake.created
    assert result.stdout.strip() == str(tmp_path / "tiny")
    expected_url = f"{url}/my-org/tiny" if hub == "hf" else f"{url}/models/my-org/tiny"
    assert result.stderr.strip().splitlines()[-1] == f"uploaded: {expected_url}", result.stderr


@pytest.mark.parametrize(("hub", "app", "token"), HUBS)
def test_failed_upload_leaves_the_export_complete_and_says_how_to_retry(hub, app, token, tiny_model_dir,
                                                                        adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    fake = FakeHub(token=token, fail_commits=REFUSED)
    out = tmp_path / "tiny"
    with serving(app(fake)) as url:
        result = export_and_push(tiny_model_dir, adapter, out, hub, hub_env(hub, url, token, tmp_path))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and not fake.files["my-org/tiny"]
    retry = "hf upload" if hub == "hf" else "modelscope upload"
    assert last.startswith("tunestack export: error: --push_to_hub my-org/tiny: upload failed ("), last
    assert hub != "hf" or f"{REFUSED} Forbidden" in last, last  # ModelScope's own error names only a file count
    assert last.endswith(f"the export itself is complete in {out}; retry with `{retry} my-org/tiny {out}`"), last
    assert set(folder_bytes(out)) == EXPORT_FILES
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2


@pytest.mark.parametrize(("hub", "app"), [pytest.param("hf", hugging_face_app, id="hugging-face"),
                                          pytest.param("modelscope", modelscope_app, id="modelscope",
                                                       marks=needs_modelscope)])
def test_push_with_a_rejected_token_fails_before_any_work(hub, app, tiny_model_dir, adapter, tmp_path):
    fake = FakeHub(token="the-right-token")
    with serving(app(fake)) as url:
        env = hub_env(hub, url, "a-wrong-token", tmp_path)
        result = export_and_push(tiny_model_dir, adapter, tmp_path / "o", hub, env)
    place = "the Hugging Face Hub" if hub == "hf" else "ModelScope"
    assert result.returncode != 0 and f"cannot reach {place} as a logged-in user" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not fake.created and not (tmp_path / "o").exists()


@needs_modelscope
@pytest.mark.parametrize(("env", "expected"), [
    ({"MODELSCOPE_ENDPOINT": "http://127.0.0.1:9", "MODELSCOPE_API_TOKEN": "ms_test"}, "Connection error"),
    ({"MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"}, "Missing API token"),
], ids=["unreachable", "not logged in"])
def test_push_to_modelscope_fails_before_any_work(env, expected, tiny_model_dir, adapter, tmp_path, monkeypatch):
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    env = {"MODELSCOPE_API_MAX_RETRIES": "1", "MODELSCOPE_HOME": str(tmp_path / "ms-home"), **env}
    result = export_and_push(tiny_model_dir, adapter, tmp_path / "o", "modelscope", env)
    assert result.returncode != 0 and "cannot reach ModelScope as a logged-in user" in result.stderr, result.stderr
    assert expected in result.stderr and "modelscope login --token" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()
