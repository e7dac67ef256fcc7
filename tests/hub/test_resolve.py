"""Model name resolution: local, run and adapter directories, aliases, hub ids in the cache, and the errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from helpers import cli_env
from tunestack.errors import ConfigError, MissingExtraError, ModelNotFoundError
from tunestack.hub import ALIASES, list_models, lookup_alias, resolve_model


def write_run(run, base_model, final_from=None, status="finished", template="chatml", **more):
    """A tunestack run directory with run.json and, optionally, final/ copied from a model or adapter directory."""
    run.mkdir()
    meta = {"base_model": base_model, "tuner": "lora", "template": template, "status": status, **more}
    (run / "run.json").write_text(json.dumps(meta))
    if final_from is not None:
        shutil.copytree(final_from, run / "final")
    return run


def test_local_directory(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    assert (resolved.path, resolved.kind, resolved.adapter, resolved.run_dir) == (tiny_model_dir, "local", None, None)
    assert resolved.name == str(tiny_model_dir)
    assert str(tiny_model_dir) in resolved.source


def test_directory_without_config_names_what_is_missing(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model(str(tmp_path))
    message = str(error.value)
    assert "no config.json" in message and "weights.bin" in message and "\n" not in message


def test_run_directory_with_adapter_gives_base_and_adapter(tiny_model_dir, tiny_adapter, tmp_path):
    run = write_run(tmp_path / "run", str(tiny_model_dir), final_from=tiny_adapter)
    resolved = resolve_model(str(run))
    assert resolved.kind == "run"
    assert resolved.path == tiny_model_dir
    assert resolved.adapter == run / "final"
    assert resolved.run_dir == run
    assert resolved.template == "chatml"


def test_run_directory_base_may_be_a_hub_id_in_the_cache(tiny_model_dir, tiny_adapter, tmp_path, hub_cache):
    snapshot = hub_cache("org/tiny", tiny_model_dir)
    run = write_run(tmp_path / "run", "org/tiny", final_from=tiny_adapter, template=None)
    resolved = resolve_model(str(run))
    assert (resolved.path, resolved.adapter, resolved.template) == (snapshot, run / "final", None)
    assert "org/tiny" in resolved.source


def test_run_directory_falls_back_to_the_recorded_base_path(tiny_model_dir, tiny_adapter, tmp_path):
    run = write_run(tmp_path / "run", "models/base", final_from=tiny_adapter, base_model_path=str(tiny_model_dir))
    assert resolve_model(str(run)).path == tiny_model_dir


def test_run_directory_base_uses_the_hub_it_was_trained_with(tiny_adapter, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)
    config = {"model": {"hub": "modelscope", "revision": None}}
    run = write_run(tmp_path / "run", "Qwen/Qwen2.5-0.5B-Instruct", final_from=tiny_adapter, config=config)
    with pytest.raises(MissingExtraError):
        resolve_model(str(run))


def test_run_directory_full_fine_tune(tiny_model_dir, tmp_path):
    run = write_run(tmp_path / "run", "smollm2-135m-instruct", final_from=tiny_model_dir)
    resolved = resolve_model(str(run))
    assert (resolved.kind, resolved.path, resolved.adapter, resolved.run_dir) == ("run", run / "final", None, run)


def test_run_directory_without_final(tmp_path):
    run = write_run(tmp_path / "run", "smollm2-135m-instruct", status="running")
    with pytest.raises(ModelNotFoundError, match=r"has no final/ model yet \(status: running\).*checkpoint"):
        resolve_model(str(run))


def test_run_directory_whose_base_is_gone(tiny_adapter, tmp_path):
    run = write_run(tmp_path / "run", str(tmp_path / "deleted"), final_from=tiny_adapter)
    with pytest.raises(ModelNotFoundError, match="base model does not resolve.*no such file or directory"):
        resolve_model(str(run))


def test_adapter_directory(tiny_model_dir, tiny_adapter):
    resolved = resolve_model(str(tiny_adapter))
    assert (resolved.kind, resolved.path, resolved.adapter) == ("local", tiny_model_dir, tiny_adapter)


def test_alias_lookup_ignores_case():
    assert lookup_alias("SmolLM2-135M-Instruct") is ALIASES["smollm2-135m-instruct"]
    assert lookup_alias("QWEN2.5-0.5B-INSTRUCT").hf == "Qwen/Qwen2.5-0.5B-Instruct"
    assert lookup_alias("Llama3.2-1B-Instruct").modelscope == "LLM-Research/Llama-3.2-1B-Instruct"
    assert lookup_alias("no-such-model") is None


def test_alias_served_from_hub_cache_carries_its_template(tiny_model_dir, hub_cache):
    snapshot = hub_cache("Qwen/Qwen2.5-0.5B-Instruct", tiny_model_dir)
    resolved = resolve_model("Qwen2.5-0.5B-Instruct")
    assert (resolved.path, resolved.kind, resolved.template) == (snapshot, "hub", "qwen")
    assert resolved.source == "hub Qwen/Qwen2.5-0.5B-Instruct (cache)"


def test_hub_id_served_from_cache_offline(tiny_model_dir, hub_cache):
    snapshot = hub_cache("org/tiny", tiny_model_dir)
    resolved = resolve_model("org/tiny")
    assert (resolved.path, resolved.kind, resolved.template) == (snapshot, "hub", None)


def test_hub_id_offline_fails_fast_with_the_fix():
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("nobody/nothing")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "\n" not in message
    assert "not a local directory, .gguf file or alias" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "`tunestack download --model nobody/nothing`" in message


def test_alias_offline_error_names_the_hub_id():
    with pytest.raises(ModelNotFoundError, match=r"'qwen2.5-7b-instruct' \(alias of Qwen/Qwen2.5-7B-Instruct\)"):
        resolve_model("qwen2.5-7b-instruct")


def test_unknown_name_is_one_line_saying_what_was_tried():
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("not a model")
    message = str(error.value)
    assert "\n" not in message
    for tried in ("local directory", ".gguf file", "alias", "hub id"):
        assert tried in message


def test_missing_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file or directory"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_modelscope_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # makes `import modelscope` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'tunestack\[modelscope\]'"):
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct", hub="modelscope")


def test_alias_without_modelscope_id(monkeypatch):
    monkeypatch.setattr("tunestack.hub.resolve.embedded_gguf_path", lambda: None)
    with pytest.raises(ModelNotFoundError, match="no ModelScope id"):
        resolve_model("tinyllama-chat", hub="modelscope")


def test_unknown_hub_is_a_config_error():
    with pytest.raises(ConfigError, match="--hub 'github'"):
        resolve_model("org/name", hub="github")


def test_list_models_covers_every_alias(tiny_model_dir, hub_cache):
    hub_cache("Qwen/Qwen2.5-0.5B-Instruct", tiny_model_dir)
    rows = {row["alias"]: row for row in list_models()}
    assert set(rows) == set(ALIASES)
    qwen = rows["qwen2.5-0.5b-instruct"]
    assert (qwen["kind"], qwen["template"]) == ("hub", "qwen") and "cached" in qwen["resolves_to"]
    assert rows["qwen2.5-7b-instruct"]["path"] is None
    assert "tunestack download --model qwen2.5-7b-instruct" in rows["qwen2.5-7b-instruct"]["resolves_to"]


def test_import_loads_neither_torch_nor_transformers():
    code = "import sys, tunestack.hub; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=cli_env())
    assert result.stdout.strip() == "[]"
