"""Write a Hugging Face model folder (Llama, Mistral, Mixtral, Qwen2/2.5, Qwen3, Qwen3-MoE, Gemma 3, Phi-3/Phi-4,
GLM-4, gpt-oss, DeepSeek-V3) as one GGUF file that llama.cpp and its kin load."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunestack.errors import TunestackError
from tunestack.export.gguf_layouts import (
    add_deepseek_hyperparameters, check_gpt_oss, deepseek_tensors, expert_count, gpt_oss_tensors, stacked_experts,
)

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0")
_BLOCK = 32
"""Row length q8_0 and q4_0 quantize in blocks of; rows of other lengths are written in f16."""


@dataclass(frozen=True)
class _Architecture:
    """How one Hugging Face model type is written in GGUF."""

    name: str
    """gguf.MODEL_ARCH member."""
    permute_qk: bool = False
    """Llama-style RoPE: llama.cpp wants each head's rotary halves interleaved."""
    norm_plus_one: bool = False
    """Gemma's RMSNorm scales by (1 + weight); llama.cpp stores the factor itself."""
    layout: Callable = stacked_experts
    """Rewrites the folder's (name, tensor) pairs into the Hugging Face-style names and the shapes that gguf's
    tensor-name map and llama.cpp expect (export/gguf_layouts.py)."""
    yarn: bool = False
    """Whether YaRN rope scaling is written (the keys llama.cpp reads for this architecture) rather than refused."""


ARCHITECTURES = {
    "llama": _Architecture("LLAMA", permute_qk=True),
    "mistral": _Architecture("LLAMA", permute_qk=True),  # llama.cpp writes Mistral as llama
    "qwen2": _Architecture("QWEN2"),
    "qwen3": _Architecture("QWEN3"),
    "gemma3_text": _Architecture("GEMMA3", norm_plus_one=True),
    "phi3": _Architecture("PHI3"),
    "qwen3_moe": _Architecture("QWEN3MOE"),
    "mixtral": _Architecture("LLAMA", permute_qk=True),  # llama.cpp writes Mixtral as llama with experts
    "glm4": _Architecture("GLM4"),  # rotary on half of each head, on adjacent pairs: no permutation
    "gpt_oss": _Architecture("GPT_OSS", layout=gpt_oss_tensors, yarn=True),
    "deepseek_v3": _Architecture("DEEPSEEK2", layout=deepseek_tensors, yarn=True),
}
"""Model types GGUF export writes, in llama.cpp's layout for each: gpt-oss with attention sinks, biased experts
split from the interleaved gate/up tensor (in the chosen --gguf_type, not MXFP4) and YaRN; DeepSeek-V3 with
multi-head latent attention (kv_b_proj split into k_b and v_b), shared experts and the router's correction bias.
Other model types are refused, DeepSeek-V2 among them (its softmax router is not written)."""


def gguf_architecture_problem(folder: Path) -> str | None:
    """Why the model in `folder` cannot be written as GGUF, or None."""
    try:
        model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as error:
        return f"{folder}/config.json cannot be read ({error}); GGUF export needs a Hugging Face model folder"
    if model_type not in ARCHITECTURES:
        return (f"--to gguf: the model is {model_type!r} architecture; GGUF export supports "
                f"{', '.join(sorted(ARCHITECTURES))}; use --to hf (llama.cpp's own convert_hf_to_gguf.py covers "
                "more architectures)")
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
    arch = ARCHITECTURES[config["model_type"]]
    vocab = gguf_vocab(Path(folder), config["vocab_size"])
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.name]])
        _add_hyperparameters(writer, config, arch, gguf_type, name=Path(folder).name)
        _add_vocab(writer, vocab)
        fallback = _add_tensors(writer, Path(folder), config, arch, gguf_type)
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


def _add_hyperparameters(writer, config: dict, arch: _Architecture, gguf_type: str, name: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    if config["model_type"] == "deepseek_v3":
        add_deepseek_hyperparameters(writer, config)
    else:
        _add_attention(writer, config)
    if experts := expert_count(config):
        writer.add_expert_count(experts)
        writer.add_expert_used_count(config["num_experts_per_tok"])
        writer.add_expert_feed_forward_length(config.get("moe_intermediate_size") or config["intermediate_size"])
    _add_rope(writer, config, arch)
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    file_types = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
    writer.add_file_type(gguf.LlamaFileType[file_types[gguf_type]])


def _add_attention(writer, config: dict) -> None:
    """Key-value heads, head width, rotary width and sliding window of standard (grouped-query) attention."""
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    rope = _rope_parameters(config)
    rotary = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))  # GLM-4, Phi-4-mini
    writer.add_rope_dimension_count(int(head_dim * rotary))
    if head_dim != hidden // heads or config["model_type"] == "gemma3_text":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if config["model_type"] == "gpt_oss":
        check_gpt_oss(config)
    if config.get("sliding_window") and config["model_type"] in ("gemma3_text", "gpt_oss"):
        writer.add_sliding_window(config["sliding_window"])


def _rope_parameters(config: dict) -> dict:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return rope.get("full_attention", rope)  # Gemma 3 keys RoPE by layer kind; llama.cpp fixes the sliding one


def _add_rope(writer, config: dict, arch: _Architecture) -> None:
    """RoPE base, and YaRN scaling where llama.cpp reads it for the architecture; other scaling is refused."""
    import gguf

    rope = _rope_parameters(config)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "yarn" and arch.yarn:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        for key, add in (("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", writer.add_rope_scaling_yarn_beta_slow),
                         ("attention_factor", writer.add_rope_scaling_yarn_attn_factor),
                         ("extrapolation_factor", writer.add_rope_scaling_yarn_ext_factor)):
            if rope.get(key) is not None:
                add(float(rope[key]))
        if rope.get("mscale_all_dim"):  # DeepSeek: llama.cpp's converter stores a tenth of it
            writer.add_rope_scaling_yarn_log_mul(0.1 * float(rope["mscale_all_dim"]))
    elif kind != "default":
        supported = ", ".join(sorted(t for t, a in ARCHITECTURES.items() if a.yarn))
        raise TunestackError(f"--to gguf: rope scaling {kind!r} of {config['model_type']} is not supported; GGUF "
                             f"export writes plain RoPE, and YaRN for {supported}; use --to hf")
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))


def _add_vocab(writer, vocab: dict) -> None:
    writer.add_tokenizer_model(vocab["model"])
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    if vocab["scores"] is not None:
        writer.add_token_scores(vocab["scores"])
    writer.add_token_merges(vocab["merges"])
    for name, token_id in vocab["special"].items():
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(token_id)
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])


def _add_tensors(writer, folder: Path, config: dict, arch: _Architecture, gguf_type: str) -> list[str]:
    """Every weight under its GGUF name, in the layout llama.cpp expects; returns the f16 fallbacks."""
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.name], config["num_hidden_layers"])
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    fallback = []
    for hf_name, tensor in arch.layout(_weights(folder), config):
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd.weight for a tied output
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TunestackError(f"--to gguf: weight {hf_name} in {folder} has no GGUF name for "
                                 f"{config['model_type']}")
        data = tensor.float().numpy()
        if arch.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads)
        elif arch.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, kv_heads)
        elif arch.norm_plus_one and hf_name.endswith("norm.weight"):
            data = data + 1
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
