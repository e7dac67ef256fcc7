"""Write a Llama-architecture Hugging Face model folder as one GGUF file that llama.cpp and its kin load."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from tunestack.errors import TunestackError

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0")
_BLOCK = 32
"""Row length q8_0 and q4_0 quantize in blocks of; rows of other lengths are written in f16."""


def gguf_architecture_problem(folder: Path) -> str | None:
    """Why the model in `folder` cannot be written as GGUF, or None."""
    try:
        model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as error:
        return f"{folder}/config.json cannot be read ({error}); GGUF export needs a Hugging Face model folder"
    if model_type != "llama":
        return (f"--to gguf: the model is {model_type!r} architecture; GGUF export supports only llama "
                "(Llama, SmolLM2, TinyLlama and the like); use --to hf")
    return None


def write_gguf(folder: Path, target: Path, gguf_type: str) -> dict:
    """Write the model and tokenizer in `folder` to the GGUF file `target`, complete or not at all.

    Returns what export.json records: file, bytes, type and the tensors kept in f16 because their rows
    do not divide into 32-value blocks."""
    import gguf

    from tunestack.export.gguf_vocab import gguf_vocab

    if problem := gguf_architecture_problem(folder):
        raise TunestackError(problem)
    config = json.loads((Path(folder) / "config.json").read_text())
    vocab = gguf_vocab(Path(folder), config["vocab_size"])
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _add_hyperparameters(writer, config, gguf_type, name=Path(folder).name)
        _add_vocab(writer, vocab)
        fallback = _add_tensors(writer, Path(folder), config, gguf_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"file": target.name, "bytes": target.stat().st_size, "type": gguf_type, "f16_fallback": fallback}


def _add_hyperparameters(writer, config: dict, gguf_type: str, name: str) -> None:
    import gguf

    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise TunestackError(f"--to gguf: rope scaling {rope.get('rope_type') or config.get('rope_scaling')} is not "
                             "supported; GGUF export writes models with plain RoPE only")
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    file_types = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
    writer.add_file_type(gguf.LlamaFileType[file_types[gguf_type]])


def _add_vocab(writer, vocab: dict) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for name, token_id in vocab["special"].items():
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(token_id)
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])


def _add_tensors(writer, folder: Path, config: dict, gguf_type: str) -> list[str]:
    """Every weight under its GGUF name, Q and K rows reordered for llama.cpp's RoPE; returns the f16 fallbacks."""
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    fallback = []
    for hf_name, tensor in _weights(folder):
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd.weight for a tied output
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TunestackError(f"--to gguf: weight {hf_name} in {folder} has no GGUF name for llama")
        data = tensor.float().numpy()
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, kv_heads)
        kind = "f32" if data.ndim == 1 else gguf_type
        if kind in ("q8_0", "q4_0") and data.shape[-1] % _BLOCK:
            kind = "f16"
            fallback.append(name)
        qtype = gguf.GGMLQuantizationType[kind.upper()]
        writer.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)
    return fallback


def _permute(weights, n_head: int):
    """Interleave each head's two rotary halves, as llama.cpp's converter does (transformers' loader undoes it)."""
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _weights(folder: Path):
    """(name, tensor) for every tensor in the folder's safetensors files, one file open at a time."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise TunestackError(f"--to gguf: {folder} holds no .safetensors weights")
    for file in files:
        with safe_open(file, "pt") as weights:
            for name in weights.keys():
                yield name, weights.get_tensor(name)
