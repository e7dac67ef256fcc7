"""The tokenizer part of a GGUF file: a byte-level BPE vocabulary (GPT-2, Llama 3 / tiktoken or Qwen2 splitting) or a
SentencePiece-style one (byte fallback, as Gemma and Mistral ship), its merges, special tokens and chat template."""

from __future__ import annotations

import json
from pathlib import Path

from tunestack.errors import TunestackError

_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 3, 4, 5, 6
"""gguf.TokenType values, spelled out so that reading a tokenizer does not need the gguf package."""


def gguf_vocab(folder: Path, vocab_size: int) -> dict:
    """The tokenizer saved in `folder` as GGUF fields, padded to the model's `vocab_size` with unused tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    kind = spec.get("model", {}).get("type")
    sentencepiece = kind == "BPE" and bool(spec["model"].get("byte_fallback"))
    if kind != "BPE" or not (sentencepiece or _byte_level(spec.get("pre_tokenizer"))):
        found = f"{kind} with pre-tokenizer {(spec.get('pre_tokenizer') or {}).get('type')}" if kind else "slow"
        raise TunestackError(f"GGUF export supports BPE tokenizers, byte-level (as GPT-2, Llama 3, Qwen and SmolLM "
                             f"use) or with byte fallback (as Gemma and Mistral use); the tokenizer in {folder} is "
                             f"{found}")
    ids = tokenizer.get_vocab()
    if len(ids) > vocab_size:
        raise TunestackError(f"the tokenizer in {folder} has {len(ids)} tokens but the model's vocab_size is "
                             f"{vocab_size}; export a model whose embeddings cover the tokenizer")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [_UNUSED] * vocab_size
    added = {t.content: t for t in backend.get_added_tokens_decoder().values()}
    for token, index in ids.items():
        tokens[index] = token
        if token in added:
            types[index] = _CONTROL if added[token].special else _USER_DEFINED
        else:
            types[index] = _BYTE if sentencepiece and _is_byte(token) else _NORMAL
    probe = tokenizer("a")["input_ids"]
    return {
        "model": "llama" if sentencepiece else "gpt2",
        "pre": "default" if sentencepiece else _pre_tokenizer_name(spec["pre_tokenizer"], folder),
        "tokens": tokens, "types": types, "merges": [_merge(m) for m in spec["model"].get("merges", [])],
        # SentencePiece vocabularies rank merges by score; a BPE vocabulary's later tokens come from later merges.
        "scores": [-float(i) for i in range(vocab_size)] if sentencepiece else None,
        "special": {name: getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "unk", "pad")},
        "add_bos": tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id],
        "add_eos": tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id],
        "chat_template": _chat_template(tokenizer.chat_template),
    }


def _is_byte(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def _byte_level(pre: dict | None) -> bool:
    parts = (pre or {}).get("pretokenizers", [pre or {}])
    return any(part.get("type") == "ByteLevel" for part in parts)


_SPLITS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+",
}
"""llama.cpp's names for the split patterns of Llama 3 (tiktoken style) and Qwen2, spelled as in tokenizer.json."""


def _pre_tokenizer_name(pre: dict, folder: Path) -> str:
    """llama.cpp's name for how text is split before the merges: GPT-2's regex, it with digits split singly, or
    Llama 3's / Qwen2's split pattern followed by byte-level mapping."""
    parts = pre.get("pretokenizers", [pre])
    shape = [(p["type"], p.get("individual_digits"), p.get("use_regex")) for p in parts]
    if shape == [("ByteLevel", None, True)]:
        return "gpt-2"
    if shape == [("Digits", True, None), ("ByteLevel", None, True)]:
        return "smollm"
    if shape == [("Split", None, None), ("ByteLevel", None, False)]:
        pattern = parts[0].get("pattern", {}).get("Regex")
        for name, split in _SPLITS.items():
            if pattern == split:
                return name
    raise TunestackError(f"GGUF export supports byte-level pre-tokenizers that split text as GPT-2, SmolLM, Llama 3 "
                         f"or Qwen2 do; the tokenizer in {folder} uses {[p['type'] for p in parts]}")


def _merge(merge) -> str:
    return merge if isinstance(merge, str) else " ".join(merge)


def _chat_template(template) -> str | None:
    """The default template; a tokenizer with several named ones keeps the one named "default"."""
    if isinstance(template, dict):
        return template.get("default")
    return template
