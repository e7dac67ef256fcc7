"""Rewrite the weights of architectures that llama.cpp lays out differently from Hugging Face (MoE experts,
gpt-oss, DeepSeek-V3) into the names and shapes GGUF export writes, and the metadata only they need."""

from __future__ import annotations

import re

from tunestack.errors import TunestackError

_EXPERT = re.compile(r"(?P<layer>.+\.(?:mlp|block_sparse_moe)\.experts)\.(?P<index>\d+)\."
                     r"(?P<proj>gate_proj|up_proj|down_proj|w1|w2|w3)\.weight")
_MIXTRAL_NAMES = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
"""Mixtral's checkpoints call an expert's gate, down and up projections w1, w2 and w3."""
_LAYER = re.compile(r"model\.layers\.(\d+)\.")


def expert_count(config: dict) -> int | None:
    """How many routed experts each MoE layer holds, under whichever name the model type uses."""
    return config.get("num_experts") or config.get("num_local_experts") or config.get("n_routed_experts")


def stacked_experts(weights, config: dict):
    """GGUF holds an MoE layer's experts as one [experts, rows, columns] tensor per projection: stack the
    per-expert weights a saved folder holds, and split transformers' fused gate-and-up tensor when it holds that."""
    experts = expert_count(config)
    pending: dict[str, dict[int, object]] = {}
    for name, tensor in weights:
        if name.endswith("mlp.experts.gate_up_proj"):
            gate, up = tensor.chunk(2, dim=1)
            yield name.replace("gate_up_proj", "gate_proj.weight"), gate
            yield name.replace("gate_up_proj", "up_proj.weight"), up
        elif name.endswith("mlp.experts.down_proj"):
            yield f"{name}.weight", tensor
        elif experts and (match := _EXPERT.fullmatch(name)):
            proj = _MIXTRAL_NAMES.get(match["proj"], match["proj"])
            key = f"{match['layer'].replace('block_sparse_moe', 'mlp')}.{proj}.weight"
            pending.setdefault(key, {})[int(match["index"])] = tensor
            if len(pending[key]) == experts:
                import torch

                stack = pending.pop(key)
                yield key, torch.stack([stack[i] for i in range(experts)])
        else:
            yield name, tensor
    if pending:
        raise TunestackError(f"--to gguf: incomplete experts in the model folder: {sorted(pending)}")


def gpt_oss_tensors(weights, config: dict):
    """gpt-oss keeps each layer's experts as [experts, in, out] tensors with gate and up columns interleaved;
    llama.cpp wants [experts, out, in] per projection, biases split alike, and the attention sinks as a weight."""
    for name, tensor in weights:
        if name.endswith("experts.gate_up_proj"):
            rows = tensor.transpose(1, 2)
            yield name.replace("gate_up_proj", "gate_proj.weight"), rows[:, ::2]
            yield name.replace("gate_up_proj", "up_proj.weight"), rows[:, 1::2]
        elif name.endswith("experts.gate_up_proj_bias"):
            yield name.replace("gate_up_proj_bias", "gate_proj.bias"), tensor[:, ::2]
            yield name.replace("gate_up_proj_bias", "up_proj.bias"), tensor[:, 1::2]
        elif name.endswith("experts.down_proj"):
            yield f"{name}.weight", tensor.transpose(1, 2)
        elif name.endswith("experts.down_proj_bias"):
            yield name.replace("down_proj_bias", "down_proj.bias"), tensor
        elif name.endswith("self_attn.sinks"):
            yield f"{name}.weight", tensor
        else:
            yield name, tensor


def deepseek_tensors(weights, config: dict):
    """DeepSeek-V3 for llama.cpp's DEEPSEEK2: experts stacked, the multi-token-prediction layers past
    num_hidden_layers left out, and kv_b_proj split per head into k_b (transposed) and v_b, as llama.cpp's
    absorbed latent attention reads them."""
    heads, nope, value = config["num_attention_heads"], config["qk_nope_head_dim"], config["v_head_dim"]
    kept = ((n, t) for n, t in weights
            if not (m := _LAYER.match(n)) or int(m[1]) < config["num_hidden_layers"])
    for name, tensor in stacked_experts(kept, config):
        if name.endswith("kv_b_proj.weight"):
            per_head = tensor.reshape(heads, nope + value, tensor.shape[-1])
            yield name.replace("kv_b_proj", "k_b_proj"), per_head[:, :nope].transpose(1, 2)
            yield name.replace("kv_b_proj", "v_b_proj"), per_head[:, nope:]
        elif name.endswith("gate.e_score_correction_bias"):
            yield name.replace("e_score_correction_bias", "e_score_correction.bias"), tensor
        else:
            yield name, tensor


def add_deepseek_hyperparameters(writer, config: dict) -> None:
    """Multi-head latent attention, which llama.cpp runs as one shared key-value head of kv_lora_rank + rope
    width, and DeepSeek-V3's router: sigmoid scores, grouped top-k, shared experts, leading dense layers."""
    import gguf

    if not config.get("rope_interleave", True):
        raise TunestackError("--to gguf: DeepSeek-V3 with rope_interleave false rotates halves of each head; "
                             "llama.cpp rotates adjacent pairs, and GGUF export does not reorder them; use --to hf")
    rope, kv_rank = config["qk_rope_head_dim"], config["kv_lora_rank"]
    writer.add_head_count_kv(1)
    writer.add_key_length(kv_rank + rope)
    writer.add_value_length(kv_rank)
    writer.add_key_length_mla(config["qk_nope_head_dim"] + rope)
    writer.add_value_length_mla(config["v_head_dim"])
    writer.add_kv_lora_rank(kv_rank)
    if config.get("q_lora_rank"):
        writer.add_q_lora_rank(config["q_lora_rank"])
    writer.add_rope_dimension_count(rope)
    writer.add_leading_dense_block_count(config.get("first_k_dense_replace") or 0)
    writer.add_expert_shared_count(config.get("n_shared_experts") or 0)
    writer.add_expert_weights_scale(float(config.get("routed_scaling_factor", 1.0)))
    if config.get("norm_topk_prob"):
        writer.add_expert_weights_norm(True)
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)  # transformers' DeepSeek-V3 router
    writer.add_expert_group_count(config.get("n_group") or 1)
    writer.add_expert_group_used_count(config.get("topk_group") or 1)


def check_gpt_oss(config: dict) -> None:
    """llama.cpp runs gpt-oss with fixed settings: sliding-window attention on even layers, full on odd ones, and
    the clamped SwiGLU of the released models."""
    kinds = config.get("layer_types") or []
    expected = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(config["num_hidden_layers"])]
    if kinds and kinds != expected:
        raise TunestackError(f"--to gguf: gpt-oss layer_types {kinds} differ from the alternating sliding/full "
                             "pattern llama.cpp assumes; use --to hf")
    if (config.get("swiglu_alpha", 1.702), config.get("swiglu_limit", 7.0)) != (1.702, 7.0):
        raise TunestackError("--to gguf: gpt-oss with swiglu_alpha/swiglu_limit other than 1.702/7.0 is not what "
                             "llama.cpp computes; use --to hf")
