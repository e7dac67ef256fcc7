"""Test helpers: a tiny tokenizer with a chat template, tiny random Llama models and adapters, data, the real CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CHATML_WITH_SYSTEM = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "What is your name? I am a tiny model made for tests.",
    "Who made you? The tunestack developers made me.",
    "What is 12 + 30? 12 + 30 = 42. Numbers 0 1 2 3 4 5 6 7 8 9.",
    "The quick brown fox jumps over the lazy dog. 你好，世界。你是谁？",
    "system user assistant hello world answer question help",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_WITH_SYSTEM
    return tokenizer


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def make_adapter(base_dir, out, seed: int, dora: bool = False, rank: int = 4):
    """A LoRA (or DoRA) adapter with random A and B, so that it changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False,
                        use_dora=dora, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    return out


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


CHAT_ROWS = [
    {"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                  {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]}
    for a in range(1, 9) for b in range(1, 5)
]


PREFERENCE_ROWS = [
    {"prompt": f"What is {a} + {b}?", "chosen": f"{a} + {b} = {a + b}.", "rejected": "hello world"}
    for a in range(1, 9) for b in range(1, 5)
]
"""Pairs a tiny model learns in a few steps: the sum chosen, the same unrelated words rejected."""

KTO_ROWS = [
    {"prompt": row["prompt"], "completion": row[answer], "label": answer == "chosen"}
    for row in PREFERENCE_ROWS for answer in ("chosen", "rejected")
]
"""The same as labelled completions, desirable and undesirable alternating."""


def method_trainer(command: str, argv: list[str], run):
    """The ready trainer of a training command, as `tunestack COMMAND ARGV --output_dir RUN` builds it, untrained."""
    from importlib import import_module

    from tunestack.cli.commands import COMMANDS
    from tunestack.config import parse_groups
    from tunestack.run import RunDir
    from tunestack.train.lifecycle import build_trainer

    parsed = parse_groups(COMMANDS[command].groups, [*argv, "--output_dir", str(run)])
    method = getattr(import_module(f"tunestack.train.{command}"), command.upper())
    model, data, tuner, train, parallel, *method_args = parsed
    return build_trainer(method, model, data, tuner, train, RunDir(run), *method_args, parallel=parallel)


USER_HF_HOME = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
"""The Hugging Face cache of whoever runs the tests, which no subprocess of theirs may read or write."""
HUB_CACHE_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE", "HF_ASSETS_CACHE")
session_hf_home: Path | None = None
"""The temporary HF_HOME that every subprocess of this test session shares; set by conftest for the session."""


def cli_env(env: dict | None = None, drop: tuple[str, ...] = ()) -> dict:
    """The environment of every subprocess the tests start: the hub off and HF_HOME the session's temporary one
    (so the embedded model's conversion into the cache happens at most once a session, and never in the user's)."""
    if session_hf_home is None:
        raise RuntimeError("helpers.session_hf_home is unset: conftest's session fixture sets it")
    full = {key: value for key, value in os.environ.items() if key not in (*HUB_CACHE_VARIABLES, *drop)}
    full.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(session_hf_home)})
    full.update({key: str(value) for key, value in (env or {}).items()})
    if os.path.abspath(full["HF_HOME"]) == os.path.abspath(USER_HF_HOME):
        raise RuntimeError(f"a test subprocess would use the user's HF_HOME {USER_HF_HOME}")
    return full


def cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None, input: str | None = None):
    """Run the real `tunestack` CLI in a subprocess; returns the CompletedProcess."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "tunestack", *args], capture_output=True, text=True,
                            timeout=timeout, env=cli_env(env), input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"tunestack {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result
