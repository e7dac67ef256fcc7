"""The model families users pick, as tiny random models: each family's own config class (2 layers, small widths)
and a tokenizer built here with the family's real special tokens, tokenizer kind and chat template."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from helpers import CORPUS

SMALL = dict(vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
MOE = dict(num_experts_per_tok=2)


@dataclass(frozen=True)
class Family:
    """One family: the transformers config class, its extra settings, and the tokenizer it ships."""

    name: str
    config: str
    """transformers config class name."""
    template: str
    """tunestack's chat template for the family (data/templates.py)."""
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    tokenizer: str = "bpe"
    """bpe (byte-level, GPT-2 split), llama3 (byte-level, Llama 3 / tiktoken split) or spm (SentencePiece-style)."""
    extra: dict = field(default_factory=dict)
    gguf: bool = True
    """Whether `--to gguf` writes this family (an architecture llama.cpp's GGUF defines and tunestack converts)."""
    gguf_loader: bool = True
    """Whether transformers' GGUF loader reads the family back (else the gguf package's reader does)."""


QWEN = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FAMILIES = {f.name: f for f in [
    # Qwen3's head_dim is 128 in every size, and transformers' GGUF loader assumes it
    Family("qwen3", "Qwen3Config", "qwen3", QWEN, None, "<|im_end|>", "<|endoftext|>", extra=dict(head_dim=128)),
    Family("qwen2.5", "Qwen2Config", "qwen", QWEN, None, "<|im_end|>", "<|endoftext|>"),
    Family("llama3", "LlamaConfig", "llama3",
           ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
           "<|begin_of_text|>", "<|eot_id|>", None, tokenizer="llama3"),
    Family("gemma3", "Gemma3TextConfig", "gemma",
           ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"), "<bos>", "<end_of_turn>", "<pad>",
           tokenizer="spm", extra=dict(head_dim=256, query_pre_attn_scalar=256, sliding_window=64, rope_parameters={
               # transformers' GGUF loader reads one RoPE base for both layer kinds
               kind: {"rope_type": "default", "rope_theta": 10000.0}
               for kind in ("full_attention", "sliding_attention")})),
    Family("mistral", "MistralConfig", "mistral", ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"), "<s>", "</s>", None,
           tokenizer="spm", extra=dict(head_dim=16)),
    Family("phi4", "Phi3Config", "phi4", ("<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"), None,
           "<|im_end|>", "<|endoftext|>"),
    Family("glm4", "Glm4Config", "glm4",
           ("<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"), None,
           "<|endoftext|>", "<|endoftext|>", extra=dict(head_dim=16), gguf_loader=False),
    Family("deepseek-v3", "DeepseekV3Config", "deepseek",
           ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜▁pad▁｜>"),
           "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", gguf_loader=False,
           extra=dict(num_key_value_heads=4,  # MLA: as many key as query heads
                      kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                      n_routed_experts=4, moe_intermediate_size=32, first_k_dense_replace=1, n_group=1, topk_group=1,
                      **MOE)),
    Family("qwen3-moe", "Qwen3MoeConfig", "qwen3", QWEN, None, "<|im_end|>", "<|endoftext|>",
           # norm_topk_prob and the experts' width as Qwen3-30B-A3B has them, which transformers' GGUF loader assumes
           extra=dict(head_dim=16, num_experts=4, moe_intermediate_size=768, norm_topk_prob=True, **MOE)),
    Family("mixtral", "MixtralConfig", "mistral", ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"), "<s>", "</s>", None,
           tokenizer="spm", extra=dict(head_dim=16, num_local_experts=4, **MOE), gguf_loader=False),
    Family("gpt-oss", "GptOssConfig", "gpt-oss",
           ("<|startoftext|>", "<|endoftext|>", "<|start|>", "<|message|>", "<|end|>", "<|channel|>", "<|return|>"),
           # transformers 5.24's GGUF loader reads gpt-oss's YaRN keys wrongly and expects other expert names
           None, "<|return|>", "<|endoftext|>", gguf_loader=False,
           extra=dict(head_dim=16, num_local_experts=4, sliding_window=64, **MOE)),
]}

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")


def build_family_tokenizer(family: Family):
    """A ~500-token tokenizer of the family's kind, with its special tokens and tunestack's template for it."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tunestack.data.templates import CHAT_TEMPLATES

    if family.tokenizer == "spm":
        core = Tokenizer(models.BPE(unk_token="<unk>" if "<unk>" in family.specials else None, byte_fallback=True))
        core.normalizer = normalizers.Replace(" ", "▁")
        core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        alphabet = [f"<0x{b:02X}>" for b in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=[*family.specials, *alphabet])
    else:
        core = Tokenizer(models.BPE())
        if family.tokenizer == "llama3":
            core.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        else:
            core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=list(family.specials),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=family.bos, eos_token=family.eos,
                                        pad_token=family.pad, unk_token="<unk>" if "<unk>" in family.specials else None)
    tokenizer.chat_template = CHAT_TEMPLATES[family.template]
    return tokenizer


def build_family_model(family: Family, tokenizer, seed: int = 0):
    """A random 2-layer model of the family's own class, sized to the tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, family.config)(**{
        **SMALL, **family.extra, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id})
    return transformers.AutoModelForCausalLM.from_config(config)


def save_family(family: Family, folder: Path) -> Path:
    tokenizer = build_family_tokenizer(family)
    tokenizer.save_pretrained(folder)
    build_family_model(family, tokenizer).save_pretrained(folder)
    return folder
