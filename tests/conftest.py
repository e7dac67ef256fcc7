"""Shared fixtures: tiny models and data built on the spot (seconds, never a download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import helpers
from helpers import CHAT_ROWS, build_model, build_tokenizer, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LONGEST_FIRST = ("integration/test_demo.py", "train/test_distributed.py", "integration/test_cli.py",
                 "export/test_quant_methods.py", "train/test_align.py")
"""Files whose tests take the longest (minutes together): with several workers they start first, so that the rest
of the suite fills the time around them instead of waiting behind them at the end."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Browser tests run in the serial part (a page waits on a server while the other worker loads the CPU), those
    that open their own page from the `browser` fixture too; with several workers, the longest files go first."""
    for item in items:
        if {"page", "browser"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.serial)
    if getattr(config.option, "numprocesses", None):
        def rank(item):
            path = item.nodeid.split("::")[0].removeprefix("tests/")
            return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

        items.sort(key=rank)  # stable: the order within each file and among the others is kept


@pytest.fixture(scope="session", autouse=True)
def session_hf_home(tmp_path_factory) -> Path:
    """One temporary HF_HOME for every subprocess of the session (see helpers.cli_env), never the user's cache."""
    helpers.session_hf_home = tmp_path_factory.mktemp("hf-home")
    from tunestack.data import encoded_cache

    with pytest.MonkeyPatch.context() as patch:  # runs in this process keep their encoded data there too
        patch.setattr(encoded_cache, "encoded_dir", lambda: helpers.session_hf_home / "tunestack" / "encoded")
        yield helpers.session_hf_home


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
