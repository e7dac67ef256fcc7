"""Shared fixtures: tiny models and data built on the spot (seconds, never a download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import helpers
from helpers import CHAT_ROWS, build_model, build_tokenizer, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def session_hf_home(tmp_path_factory) -> Path:
    """One temporary HF_HOME for every subprocess of the session (see helpers.cli_env), never the user's cache."""
    helpers.session_hf_home = tmp_path_factory.mktemp("hf-home")
    return helpers.session_hf_home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved 2-layer Llama (hidden size 64) with a chatml tokenizer: loads in well under a second."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(path)
    build_model(tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory) -> Path:
    """A saved tiny LLaVA with its processor (tiny_vlms.save_tiny_llava)."""
    from tiny_vlms import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def llava(llava_dir):
    """(model, processor) of the tiny LLaVA through plain transformers."""
    from tiny_vlms import load_reference

    return load_reference(llava_dir)


@pytest.fixture()
def chat_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
