"""A tiny random Idefics3 / SmolVLM-style model with its processor (about a second, never a download); the LLaVA and
Qwen2-VL ones are in tiny_vlms.py."""

from __future__ import annotations

from pathlib import Path

from tiny_vlms import _tiny_llama_text, vision_chat_template, vision_tokenizer


def save_tiny_idefics3(path, seed: int = 0) -> Path:
    """Save a tiny Idefics3 (SigLIP tower 1 x 32 on 32 px images, pixel shuffle by 2: 4 image tokens framed by
    <fake_token_around_image> and <global-img>; no image splitting; Llama 2 x 64) with its Idefics3Processor
    (Idefics3ImageProcessorPil) in `path`."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3 import Idefics3ImageProcessorPil

    path = Path(path)
    tokenizer = vision_tokenizer(["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"])
    images = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                       do_image_splitting=False)
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=vision_chat_template("<image>"))
    config = Idefics3Config(
        text_config=_tiny_llama_text(tokenizer),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    Idefics3ForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path
