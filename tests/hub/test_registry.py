"""The model aliases: every family listed by `tunestack models`, what each alias records, and ModelScope ids."""

from __future__ import annotations

import json
import re

import pytest
from helpers import cli

from tunestack.data.templates import CHAT_TEMPLATES
from tunestack.errors import ModelNotFoundError
from tunestack.hub import ALIASES, download_model, lookup_alias, resolve_model

FAMILIES = {  # family: Hugging Face ids it must offer an alias for
    "SmolLM2": ["HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
                "HuggingFaceTB/SmolLM2-1.7B-Instruct"],
    "Qwen3": ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B"],
    "Qwen2.5": ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct"],
    "Llama 3": ["meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
                "meta-llama/Llama-3.1-8B-Instruct"],
    "Gemma": ["google/gemma-3-1b-it", "google/gemma-3-4b-it"],
    "Mistral": ["mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Ministral-8B-Instruct-2410"],
    "Phi": ["microsoft/phi-4", "microsoft/Phi-4-mini-instruct"],
    "GLM-4": ["zai-org/GLM-4-9B-0414"],
    "DeepSeek": ["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-V2-Lite-Chat"],
    "MoE": ["Qwen/Qwen3-30B-A3B", "mistralai/Mixtral-8x7B-Instruct-v0.1", "openai/gpt-oss-20b"],
    "TinyLlama": ["TinyLlama/TinyLlama-1.1B-Chat-v1.0"],
}
LICENCES = {"apache-2.0", "mit", "llama3.1", "llama3.2", "gemma", "mrl", "deepseek"}
SIZE = re.compile(r"\d+(\.\d+)?[MB](-A\d+(\.\d+)?B)?")
"""`0.6B`, `135M`, or total and active parameters of a mixture of experts: `30B-A3B`."""
WITH_MODELSCOPE = [name for name, alias in ALIASES.items() if alias.modelscope]


def families_in_table(text: str) -> dict[str, list[str]]:
    """The aliases under each family heading of `tunestack models`' table (headings are the unindented lines)."""
    families, aliases = {}, None
    for line in text.splitlines()[1:]:
        if line and not line.startswith(" ") and not line.startswith("No known"):
            aliases = families.setdefault(line, [])
        elif line.startswith("  ") and not line.startswith("    "):
            aliases.append(line.split()[0])
    return families


def test_models_lists_every_family_with_its_aliases():
    text = cli("models").stdout
    listed = families_in_table(text)
    assert list(listed) == list(FAMILIES)
    for family, hf_ids in FAMILIES.items():
        assert {ALIASES[name].hf for name in listed[family]} >= set(hf_ids), family
    assert sorted(name for names in listed.values() for name in names) == sorted(ALIASES)
    assert all(len(line) <= 100 for line in text.splitlines() if not line.startswith("    now:")), text
    assert "No known ModelScope id (use --hub hf): tinyllama-chat" in text


def test_models_table_shows_size_licence_gating_and_both_ids():
    lines = cli("models").stdout.splitlines()
    llama = lines.index(next(line for line in lines if line.split()[:1] == ["llama3.1-8b-instruct"]))
    assert lines[llama].split() == ["llama3.1-8b-instruct", "8B", "llama3.1", "yes", "meta-llama/Llama-3.1-8B-Instruct"]
    assert lines[llama + 1].split() == ["modelscope:", "LLM-Research/Meta-Llama-3.1-8B-Instruct"]
    tiny = lines.index(next(line for line in lines if line.split()[:1] == ["tinyllama-chat"]))
    assert lines[tiny + 1].split() == ["modelscope:", "-"]


def test_models_json_records_size_licence_gating_and_template_for_every_alias():
    rows = json.loads(cli("models", "--json").stdout)["models"]
    assert [row["alias"] for row in rows] == list(ALIASES)
    for row in rows:
        assert SIZE.fullmatch(row["params"]) and row["licence"] in LICENCES, row
        assert isinstance(row["gated"], bool) and row["template"] in CHAT_TEMPLATES, row
        assert row["hf_id"].count("/") == 1 and (row["modelscope_id"] or "a/b").count("/") == 1, row
    by_alias = {row["alias"]: row for row in rows}
    assert by_alias["qwen3-30b-a3b"]["params"] == "30B-A3B" and by_alias["gemma3-1b-it"]["gated"] is True
    assert by_alias["phi4"]["licence"] == "mit" and by_alias["llama3.2-3b-instruct"]["licence"] == "llama3.2"


def test_alias_names_are_lowercase_so_lookups_ignore_case():
    assert all(name == name.lower() for name in ALIASES)
    assert lookup_alias(" GPT-OSS-20B ") is ALIASES["gpt-oss-20b"]


@pytest.mark.parametrize("name, modelscope_id", [
    ("llama3.1-8b-instruct", "LLM-Research/Meta-Llama-3.1-8B-Instruct"),
    ("gemma3-4b-it", "LLM-Research/gemma-3-4b-it"),
    ("ministral-8b-instruct", "AI-ModelScope/Ministral-8B-Instruct-2410"),
    ("mixtral-8x7b-instruct", "AI-ModelScope/Mixtral-8x7B-Instruct-v0.1"),
    ("phi4", "LLM-Research/phi-4"),
    ("glm4-9b-0414", "ZhipuAI/GLM-4-9B-0414"),
    ("gpt-oss-20b", "openai-mirror/gpt-oss-20b"),
])
def test_modelscope_ids_that_differ_from_the_hugging_face_ones(name, modelscope_id):
    assert ALIASES[name].modelscope == modelscope_id


@pytest.fixture
def modelscope_calls(monkeypatch, tmp_path):
    """Every ModelScope id that resolving or downloading asks ModelScope for, answered with an empty directory."""
    calls = []

    def snapshot(repo_id, revision=None):
        calls.append(repo_id)
        return tmp_path

    monkeypatch.setattr("tunestack.hub.resolve.modelscope_snapshot", snapshot)
    monkeypatch.setattr("tunestack.hub.download.modelscope_snapshot", snapshot)
    monkeypatch.setattr("tunestack.hub.resolve.embedded_gguf_path", lambda: None)
    return calls


@pytest.mark.parametrize("name", WITH_MODELSCOPE)
def test_hub_modelscope_resolves_and_downloads_the_recorded_id(name, modelscope_calls):
    resolved = resolve_model(name.upper(), hub="modelscope")
    assert (resolved.kind, resolved.template) == ("modelscope", ALIASES[name].template)
    download_model(name, hub="modelscope")
    assert modelscope_calls == [ALIASES[name].modelscope] * 2


def test_alias_without_modelscope_id_names_it_and_suggests_hf(modelscope_calls):
    with pytest.raises(ModelNotFoundError, match=r"model 'tinyllama-chat'.*--hub hf"):
        resolve_model("tinyllama-chat", hub="modelscope")
    assert modelscope_calls == []
    result = cli("download", "--model", "tinyllama-chat", "--hub", "modelscope", check=False)
    assert result.returncode == 2
    assert "tinyllama-chat" in result.stderr and "no ModelScope id" in result.stderr and "--hub hf" in result.stderr


def test_estimate_follows_the_same_rule_for_an_alias_without_modelscope_id(modelscope_calls):
    """`estimate` reads a config without downloading weights, but picks the hub id by the same rule: no silent
    fall back to the Hugging Face id when ModelScope was asked for."""
    from tunestack.config import ModelArgs
    from tunestack.plan.source import model_source

    with pytest.raises(ModelNotFoundError, match=r"model 'tinyllama-chat'.*--hub hf"):
        model_source(ModelArgs(model="tinyllama-chat", hub="modelscope"))
    assert modelscope_calls == []
