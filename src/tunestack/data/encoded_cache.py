"""Encoded training data kept by its fingerprint: a run over the same rows, with the same tokenizer, chat template
and encoding flags, reads the token ids its method wrote last time instead of tokenizing again.

The fingerprint is a SHA-256 over the rows as read (training and validation, every column), the tokenizer whole
(its serialised vocabulary, merges, normaliser and pre-tokeniser, its special tokens and its chat template), the data
flags that shape encoding, the method, and the source code that encodes (so a changed encoder never reads an old
entry). Rows with images are not cached: their pictures live in files the fingerprint does not read.

An entry is a folder under `$HF_HOME/tunestack/encoded/`, written under a temporary name and renamed into place once
complete, so a killed run leaves no half entry and two runs storing the same fingerprint keep one. An entry that
cannot be read is encoded afresh; an entry that cannot be written (a full disk) costs only the cache, never the run.
`--data_cache false` neither reads nor writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

from tunestack.hub.cache import cache_dir

FORMAT = 1
"""Raised when what an entry holds changes shape."""
NOT_KEYED = ("dataset", "val_dataset", "dataset_info", "num_proc", "streaming", "data_cache", "on_bad_media")
"""Data flags left out of the fingerprint: the rows they lead to are hashed instead, or they do not change the
encoding."""


def encoded_dir() -> Path:
    return cache_dir() / "encoded"


def fingerprint(method: str, encode, splits, tokenizer, data_args) -> str:
    """The key of what `encode` (the method's encoder) makes of `splits` with `tokenizer` and `data_args`."""
    digest = hashlib.sha256()
    flags = {k: v for k, v in asdict(data_args).items() if k not in NOT_KEYED}
    digest.update(json.dumps({"format": FORMAT, "method": method, "flags": flags}, sort_keys=True,
                             default=str).encode())
    digest.update(_code_digest(encode))
    digest.update(_tokenizer_digest(tokenizer))
    for name, rows in (("train", splits.train), ("val", splits.val)):
        digest.update(f"\0{name}\0".encode())
        for row in rows if rows is not None else ():
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
            digest.update(b"\n")
    return digest.hexdigest()[:32]


def _code_digest(encode) -> bytes:
    """The source of the data package and of the module that holds the method's encoder."""
    import tunestack.data

    module = sys.modules[getattr(encode, "func", encode).__module__]  # functools.partial keeps the function in .func
    files = sorted(Path(tunestack.data.__file__).parent.rglob("*.py")) + [Path(module.__file__)]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.digest()


def _tokenizer_digest(tokenizer) -> bytes:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    whole = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    described = json.dumps({"class": type(tokenizer).__name__, "chat_template": tokenizer.chat_template,
                            "special": tokenizer.special_tokens_map,
                            "added": {i: str(t) for i, t in tokenizer.added_tokens_decoder.items()},
                            "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
                            "pad": tokenizer.pad_token_id}, sort_keys=True, default=str)
    return hashlib.sha256(whole.encode() + b"\0" + described.encode()).digest()


def load(key: str):
    """(train, val, report, messages) stored under `key`, or None when there is no readable entry."""
    folder = encoded_dir() / key
    try:
        info = json.loads((folder / "entry.json").read_text())
        if info.get("format") != FORMAT:
            return None
        train = _read(folder / "train", info["train"])
        val = _read(folder / "val", info["val"]) if info["val"] else None
    except (OSError, ValueError, KeyError):  # absent, or damaged: encode afresh
        return None
    return train, val, info["report"], info["messages"]


def store(key: str, train, val, report: dict, messages: list[str]) -> str | None:
    """Keep an encoding under `key`; returns why it could not be kept (the run goes on without it), or None."""
    root = encoded_dir()
    temporary = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        temporary.mkdir(parents=True)
        info = {"format": FORMAT, "train": _write(temporary / "train", train),
                "val": _write(temporary / "val", val) if val is not None else None,
                "report": report, "messages": messages}
        (temporary / "entry.json").write_text(json.dumps(info))
        try:
            temporary.rename(root / key)
        except OSError:  # another run stored the same key first: its entry is this one
            if not (root / key / "entry.json").exists():
                raise
        return None
    except (OSError, TypeError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _write(path: Path, rows) -> str:
    """Encoded rows into `path`: a list of dicts as JSON lines (read back exactly), a datasets.Dataset as Arrow."""
    if isinstance(rows, list):
        path.mkdir()
        with open(path / "rows.jsonl", "w") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        return "list"
    rows.save_to_disk(str(path))
    return "dataset"


def _read(path: Path, kind: str):
    if kind == "list":
        with open(path / "rows.jsonl") as rows:
            return [json.loads(line) for line in rows]
    from datasets import load_from_disk

    return load_from_disk(str(path))
