"""A model of a family tunestack is not tested with still loads, and the run says so once, naming what was not
verified; the tested families say nothing."""

import torch

from tunestack.model.families import TESTED_MODEL_TYPES
from tunestack.model.load import load_model


def _save_tiny(config_class, path, **extra):
    from transformers import AutoModelForCausalLM

    config = config_class(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, **extra)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def test_an_untested_family_loads_and_is_named_once(tmp_path, capsys):
    from transformers import StableLmConfig

    assert "stablelm" not in TESTED_MODEL_TYPES
    path = _save_tiny(StableLmConfig, tmp_path / "stablelm")
    for _ in range(2):
        model = load_model(path, torch.float32)
    err = capsys.readouterr().err
    assert err.count("model type 'stablelm' is not among the families") == 1
    assert "loss mask" in err and "GGUF" in err
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 128)


def test_a_tested_family_loads_without_a_notice(tmp_path, capsys):
    from transformers import Qwen2Config

    load_model(_save_tiny(Qwen2Config, tmp_path / "qwen2"), torch.float32)
    assert "not among the families" not in capsys.readouterr().err
