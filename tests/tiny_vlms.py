"""Tiny random vision-language models for tests, built on the spot (about a second, never a download).

- `save_tiny_llava(path)`: a LLaVA-style model (tiny CLIP vision tower, tiny Llama) with its LlavaProcessor, saved
  the way a hub checkpoint is, so `AutoProcessor` / `AutoModelForImageTextToText` and the CLI load it.
- `save_tiny_llava_next(path)`, `save_tiny_gemma3(path)`: LLaVA-NeXT (any-resolution tiles) and Gemma 3 (SigLIP,
  pooled soft tokens, image tokens marked in `token_type_ids`) the same way.
- `build_tiny_qwen2_vl()`: a Qwen2-VL-style model (or Qwen2.5-VL, `version="2.5"`, `save_tiny_qwen2_5_vl`; Qwen3-VL,
  `version="3"`, `save_tiny_qwen3_vl`) (M-RoPE) with its PIL image processor and tokenizer, in memory;
  `qwen2_vl_inputs` expands its image tokens by hand, since `Qwen2VLProcessor` needs torchvision (not installed);
  `save_tiny_qwen2_vl(path)` saves the three as a checkpoint (no processor: AutoProcessor would need torchvision).
- `reference_generate(model_dir, messages, images, n)`: what plain transformers generates greedily on the processor's
  own inputs, the yardstick for tunestack's answers.
- `image(color, size)`, `png_data_url(img)`, `save_png(img, path)`: images to send; `save_mp4(path, colours)`: a
  video to send.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from helpers import build_tokenizer

SYSTEM = "You are a tiny test assistant."


def vision_chat_template(image_text: str, video_text: str | None = None) -> str:
    """A chatml template (with the tiny models' default system prompt) whose content is a string or a list of
    `{"type": "text"}` / `{"type": "image"}` parts, each image rendered as `image_text` (and `{"type": "video"}`
    parts as `video_text`, when given)."""
    video = "{% elif part['type'] == 'video' %}{{ '" + video_text + "' }}" if video_text else ""
    return (
        "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
        "{{ '<|im_start|>system\n" + SYSTEM + "<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '" + image_text + "' }}" + video +
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


def vision_tokenizer(special: list[str]):
    """The tests' tiny chatml tokenizer (helpers.build_tokenizer) with the image tokens `special` added."""
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    return tokenizer


def _tiny_llama_text(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)


LLAVA_IMAGE_TOKENS = 4
"""Image tokens per image of the tiny LLaVA: a 16x16 picture in 8x8 patches, the CLS feature dropped."""


def save_tiny_llava(path, seed: int = 0) -> Path:
    """Save a tiny LLaVA (CLIP vision tower 2 x 32, Llama 2 x 64, 4 tokens per image) with a LlavaProcessor
    (CLIPImageProcessorPil at 16x16, the tiny tokenizer plus `<image>`, an image-aware chatml template) in `path`."""
    return _save_tiny_llava_family(path, seed, grid=None)


def save_tiny_llava_next(path, seed: int = 0) -> Path:
    """Save a tiny LLaVA-NeXT (the tiny LLaVA's tower and language model; any-resolution tiling over 16 px tiles on
    a grid of up to 2 x 2, so the number of image tokens follows the picture's shape) with its LlavaNextProcessor."""
    return _save_tiny_llava_family(path, seed, grid=[[16, 16], [16, 32], [32, 16], [32, 32]])


def _save_tiny_llava_family(path, seed: int, grid: list | None) -> Path:
    """The tiny LLaVA (`grid` None) or LLaVA-NeXT (tiles on `grid`), saved with its processor in `path`."""
    import torch
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig

    kind = "LlavaNext" if grid else "Llava"
    image_class = transformers.LlavaNextImageProcessorPil if grid else transformers.CLIPImageProcessorPil
    tiles = {"image_grid_pinpoints": grid} if grid else {}
    path = Path(path)
    tokenizer = vision_tokenizer(["<image>"])
    image_processor = image_class(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, **tiles)
    processor = getattr(transformers, f"{kind}Processor")(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=vision_chat_template("<image>"))
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=32)
    config = getattr(transformers, f"{kind}Config")(
        vision_config=vision, text_config=LlamaConfig(**_tiny_llama_text(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=False, **tiles)
    torch.manual_seed(seed)
    getattr(transformers, f"{kind}ForConditionalGeneration")(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


GEMMA3_IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")


def save_tiny_gemma3(path, seed: int = 0) -> Path:
    """Save a tiny Gemma 3 (SigLIP tower 2 x 32 on 16 px pictures in 4 px patches, pooled to 4 soft tokens; a Gemma 3
    text model 2 x 64 with sliding-window layers) with its Gemma3Processor, which wraps each picture in
    `<start_of_image>`/`<end_of_image>` and blank lines, and marks image tokens in `token_type_ids`."""
    import torch
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor,
                              Gemma3TextConfig, SiglipVisionConfig)

    path = Path(path)
    start, end, soft = GEMMA3_IMAGE_TOKENS
    tokenizer = vision_tokenizer(list(GEMMA3_IMAGE_TOKENS))
    # the named image tokens Gemma3Processor reads (a Gemma tokenizer's own config declares them)
    tokenizer._set_model_specific_special_tokens({"boi_token": start, "eoi_token": end, "image_token": soft})
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 16, "width": 16}),
                                tokenizer=tokenizer, image_seq_length=4, chat_template=vision_chat_template(start))
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                            sliding_window=64, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=16, patch_size=4)
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids(start),
                          eoi_token_index=ids(end), image_token_index=ids(soft), tie_word_embeddings=False)
    torch.manual_seed(seed)
    Gemma3ForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def build_tiny_qwen2_vl(seed: int = 0, version: str = "2"):
    """(model, image processor, tokenizer) of a tiny Qwen2-VL (`version` "2.5": Qwen2.5-VL, whose tower has window
    attention and an RMSNorm merger; "3": Qwen3-VL, 16 px patches, learned position embeddings, a DeepStack merger
    feeding a middle layer and interleaved M-RoPE) with M-RoPE sections 2/3/3 and a vision tower of 2 blocks: images
    of 28x28 to 56x56 pixels (32x32 to 64x64 for Qwen3-VL) become 1 to 4 tokens."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration)

    tokenizer = vision_tokenizer(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    tokenizer.chat_template = vision_chat_template(QWEN_IMAGE, QWEN_VIDEO)
    patch = 16 if version == "3" else 14
    image_processor = Qwen2VLImageProcessorPil(min_pixels=(2 * patch) ** 2, max_pixels=(4 * patch) ** 2,
                                               patch_size=patch, merge_size=2, temporal_patch_size=2)
    text = {**_tiny_llama_text(tokenizer),
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}}
    ids = tokenizer.convert_tokens_to_ids
    tokens = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                  vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    shared = dict(patch_size=patch, spatial_merge_size=2, temporal_patch_size=2)
    if version == "3":
        text["head_dim"] = 16
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      num_position_embeddings=16, deepstack_visual_indexes=[1], **shared)
        config, model_class = Qwen3VLConfig(text_config=text, tie_word_embeddings=False, vision_config=vision,
                                            **tokens), Qwen3VLForConditionalGeneration
    elif version == "2.5":
        vision = dict(depth=2, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=2, window_size=56,
                      fullatt_block_indexes=[1], **shared)
        config, model_class = Qwen2_5_VLConfig(text_config=text, tie_word_embeddings=False, vision_config=vision,
                                               **tokens), Qwen2_5_VLForConditionalGeneration
    else:
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, **shared)
        config, model_class = Qwen2VLConfig(text_config=text, tie_word_embeddings=False, vision_config=vision,
                                            **tokens), Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    return model_class(config).eval(), image_processor, tokenizer


def save_tiny_qwen2_vl(path, seed: int = 0, version: str = "2") -> Path:
    """`build_tiny_qwen2_vl()` saved in `path` as a hub checkpoint is: weights, tokenizer, image processor and chat
    template."""
    path = Path(path)
    model, image_processor, tokenizer = build_tiny_qwen2_vl(seed, version)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    (path / "chat_template.jinja").write_text(tokenizer.chat_template)
    budget = {"shortest_edge": image_processor.size.shortest_edge, "longest_edge": image_processor.size.longest_edge}
    (path / "video_preprocessor_config.json").write_text(json.dumps({  # videos at the images' pixel budget
        "video_processor_type": "Qwen2VLVideoProcessor", "size": budget, "patch_size": image_processor.patch_size,
        "temporal_patch_size": 2, "merge_size": 2}))
    return path


def save_tiny_qwen2_5_vl(path, seed: int = 0) -> Path:
    return save_tiny_qwen2_vl(path, seed, version="2.5")


def save_tiny_qwen3_vl(path, seed: int = 0) -> Path:
    return save_tiny_qwen2_vl(path, seed, version="3")


def qwen2_vl_inputs(tokenizer, image_processor, messages: list[dict], images: list,
                    add_generation_prompt: bool = True) -> dict:
    """What Qwen2VLProcessor would return for `messages` (image parts in order of `images`): input_ids with each
    image's pad token repeated once per merged patch, attention_mask, mm_token_type_ids, pixel_values and
    image_grid_thw."""
    import torch

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    inputs = {}
    if images:
        inputs = dict(image_processor(images=images, return_tensors="pt"))
        for grid in inputs["image_grid_thw"]:
            text = text.replace("<|image_pad|>", "<|placeholder|>" * (int(grid.prod()) // 4), 1)
        text = text.replace("<|placeholder|>", "<|image_pad|>")
    encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return {**encoded, "mm_token_type_ids": (encoded["input_ids"] == image_pad).to(torch.int32), **inputs}


def image(color=(200, 30, 40), size=(20, 24)):
    """A PIL image of one colour with a lighter square in its corner (so that resizing and cropping matter)."""
    from PIL import Image

    picture = Image.new("RGB", size, color)
    picture.paste((255, 255, 255), (0, 0, size[0] // 3, size[1] // 3))
    return picture


def png_bytes(picture) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_url(picture) -> str:
    """`data:image/png;base64,...` of the picture, as OpenAI clients send images."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(picture)).decode()


def save_png(picture, path) -> Path:
    Path(path).write_bytes(png_bytes(picture))
    return Path(path)


def load_reference(model_dir):
    """(model in float32, processor) of a saved tiny VLM through plain transformers."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return (AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval(),
            AutoProcessor.from_pretrained(model_dir))


def reference_generate(model_dir, messages: list[dict], images: list, max_new_tokens: int, loaded=None) -> list[int]:
    """Greedy token ids of `model.generate` on the processor's inputs for `messages` (content as lists of
    `{"type": "image"}` / `{"type": "text"}` parts, the images in order), the end token and what follows it cut."""
    model, processor = loaded or load_reference(model_dir)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[images] if images else None, return_tensors="pt",
                       add_special_tokens=False)
    return greedy_tokens(model, inputs, processor.tokenizer.eos_token_id, max_new_tokens)


def greedy_tokens(model, inputs: dict, end: int, max_new_tokens: int) -> list[int]:
    """The new token ids of greedy `model.generate` on one prompt's processor `inputs`, cut before the end token."""
    import torch

    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    tokens = out[0, inputs["input_ids"].shape[1]:].tolist()
    return tokens[:tokens.index(end)] if end in tokens else tokens


def save_mp4(path, colours: list, fps: int = 4, size: int = 32) -> Path:
    """An MPEG-4 video of `size` x `size` frames, one per colour in `colours`, at `fps` frames per second, each with
    a white square in its corner (written through PyAV)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for colour in colours:
            pixels = np.full((size, size, 3), colour, np.uint8)
            pixels[: size // 4, : size // 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(path)
