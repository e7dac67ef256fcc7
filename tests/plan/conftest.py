"""Plan test fixtures: an empty offline Hugging Face cache, and a wider tiny model whose logits and layers weigh
enough to check memory estimates against measured runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import CHAT_ROWS, build_tokenizer, write_jsonl

WIDE = dict(vocab_size=16384, hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2)


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory) -> Path:
    """A random 3-layer Llama, hidden 128, with the tiny tokenizer under a 16384-entry vocabulary (logits matter)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("wide-llama")
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(**WIDE, max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def long_chat_file(tmp_path_factory) -> Path:
    """256 short conversations (about 40 tokens each): enough for packed rows of 512 tokens."""
    return write_jsonl(tmp_path_factory.mktemp("chat") / "chat.jsonl", CHAT_ROWS * 8)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF_HOME with the hub off (huggingface_hub's import-time constants follow it); returns its hub cache."""
    import huggingface_hub.constants as hf_constants

    home = tmp_path / "hf_home"
    for name, value in (("HF_HOME", str(home)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return home / "hub"
