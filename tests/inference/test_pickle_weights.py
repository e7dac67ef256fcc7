"""Models and adapters load from safetensors only; pickle weight files need --allow_pickle, and the error names both."""

from __future__ import annotations

import shutil

import pytest
import torch

from helpers import cli, make_adapter


@pytest.fixture(scope="module")
def pickled(tiny_model_dir, tmp_path_factory):
    """(model folder, adapter folder) holding the tiny model's and an adapter's weights as pickle .bin files only."""
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("pickled")
    model = shutil.copytree(tiny_model_dir, root / "model")
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    adapter = make_adapter(tiny_model_dir, root / "adapter", seed=3)
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    return model, adapter


def test_pickle_model_and_adapters_are_refused_unless_allowed(pickled, tiny_model_dir):
    from tunestack.config import ModelArgs
    from tunestack.errors import TunestackError
    from tunestack.inference.loading import load_for_inference

    model, adapter = pickled
    with pytest.raises(TunestackError, match="pytorch_model.bin: pickle weights .* --allow_pickle"):
        load_for_inference(ModelArgs(model=str(model), dtype="fp32"))
    safe = ModelArgs(model=str(tiny_model_dir), dtype="fp32")
    with pytest.raises(TunestackError, match="adapter_model.bin: pickle weights .* --allow_pickle"):
        load_for_inference(safe, adapters=[str(adapter)])
    with pytest.raises(TunestackError, match="adapter_model.bin"):
        load_for_inference(safe, named_adapters={"a": str(adapter)})
    loaded = load_for_inference(ModelArgs(model=str(model), dtype="fp32"), named_adapters={"a": str(adapter)},
                                allow_pickle=True)
    assert loaded.model.peft_config["a"].r == 4


def test_serve_refuses_a_pickle_model_in_one_line(pickled):
    result = cli("serve", "--model", str(pickled[0]), "--port", "0", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pytorch_model.bin: pickle weights can run code" in result.stderr.strip().splitlines()[-1]


def test_training_and_export_refuse_pickle_weights_unless_allowed(pickled, tmp_path):
    from helpers import CHAT_ROWS, write_jsonl

    model, adapter = pickled
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    refused = cli("sft", "--model", str(model), "--dataset", str(data), "--max_steps", "1",
                  "--output_dir", str(tmp_path / "run"), check=False)
    assert refused.returncode == 2 and "pytorch_model.bin: pickle weights" in refused.stderr
    assert not (tmp_path / "run").exists()
    exported = cli("export", "--model", str(model), "--adapter", str(adapter), "--output_dir", str(tmp_path / "out"),
                   check=False)
    assert exported.returncode == 2 and "pickle weights" in exported.stderr and "--allow_pickle" in exported.stderr
    cli("sft", "--model", str(model), "--dataset", str(data), "--max_steps", "1", "--allow_pickle",
        "--output_dir", str(tmp_path / "run"))
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
