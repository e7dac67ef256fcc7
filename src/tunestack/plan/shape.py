"""A decoder's shape from its config.json alone (no weights): layer sizes, parameter counts and adapter sizes."""

from __future__ import annotations

from dataclasses import dataclass

from tunestack.errors import TunestackError

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of each decoder layer of a Llama-like model: what `--target_modules all-linear` adapts."""
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
"""Fused layers some architectures (Phi-3) use, counted as the layers they fuse."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes memory and FLOPs depend on, for a Llama-like decoder (Llama, Mistral, Qwen, SmolLM, Gemma, Phi-3)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    """Whether the output layer shares the embedding matrix."""
    checkpoint_bytes: int = 4
    """Bytes per weight in the checkpoint files (2 for bf16 / fp16 checkpoints)."""
    model_type: str = ""
    """config.json's model_type (which fused functions training uses depends on the family)."""

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        """The shape of a transformers config.json (a multimodal config's `text_config` is the decoder's)."""
        config = config.get("text_config") or config
        if any(config.get(key) for key in ("num_local_experts", "num_experts", "n_routed_experts")):
            raise TunestackError(f"model type {config.get('model_type')!r} is a mixture of experts, which the estimate "
                                 "does not model yet; it covers dense decoders")
        missing = [key for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
                   if not config.get(key)]
        if missing:
            kind = config.get("model_type", "unknown type")
            raise TunestackError(f"model config ({kind}) has no {', '.join(missing)}; the estimate needs a "
                                 "Llama-like decoder config")
        hidden, heads = config["hidden_size"], config["num_attention_heads"]
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
        return cls(
            hidden=hidden, intermediate=config.get("intermediate_size") or 4 * hidden,
            layers=config["num_hidden_layers"], heads=heads, kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads, vocab=config["vocab_size"],
            tied=bool(config.get("tie_word_embeddings", True)),
            checkpoint_bytes=2 if dtype in ("bfloat16", "float16") else 4, model_type=config.get("model_type") or "",
        )

    def linear_sizes(self) -> dict[str, tuple[int, int]]:
        """(inputs, outputs) of each linear layer in one decoder layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_linear_params(self) -> int:
        """Weights of the linear layers of one decoder layer."""
        return sum(a * b for a, b in self.linear_sizes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        """Weights of the output layer beyond the embedding (none when tied)."""
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        """All weights of the model."""
        return self.layers * self.layer_linear_params + self.embedding_params + self.head_params + self.norm_params

    def targets(self, names: list[str]) -> list[str]:
        """The decoder linear layers `--target_modules` names (all-linear: every one), or an error with the choices."""
        if names == ["all-linear"]:
            return list(LINEARS)
        unknown = [n for n in names if n not in LINEARS and n not in FUSED]
        if unknown:
            raise TunestackError(f"--target_modules: {', '.join(unknown)} is not a linear layer the estimate knows; "
                                 f"use all-linear or names from {', '.join(LINEARS + tuple(FUSED))}")
        found = [part for n in names for part in FUSED.get(n, (n,))]
        return [n for n in LINEARS if n in found]

    def adapter_params(self, targets: list[str], rank: int, dora: bool = False) -> int:
        """Weights of LoRA A and B (and DoRA's magnitudes) on `targets` in every decoder layer."""
        sizes = self.linear_sizes()
        per_layer = sum(rank * (sizes[t][0] + sizes[t][1]) + (sizes[t][1] if dora else 0) for t in targets)
        return self.layers * per_layer
