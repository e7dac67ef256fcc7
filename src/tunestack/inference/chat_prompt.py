"""Conversations to prompt token ids through the chat template: the one renderer that the server, the terminal chat
and evaluation share, so each endpoint feeds the model the same tokens. A vision-language model's conversation goes
through its processor, which also turns the images into the tensors its prompt ids stand for."""

from __future__ import annotations

from tunestack.media import content_parts, image_part, is_image_part, load_image, placeholder_text
from tunestack.message_text import content_text


def _role(role: str) -> str:
    return "system" if role == "developer" else role


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates expect them: OpenAI's `developer` role read as `system`, content as one string
    (text parts joined by `join_text_parts`, the rule training data follows)."""
    return [{**m, "role": _role(m["role"]), "content": content_text(m.get("content"))} for m in messages]


def chat_prompt_ids(tokenizer, messages: list[dict], template_kwargs: dict | None = None) -> list[int]:
    """The token ids of `messages` rendered with the tokenizer's chat template, ready for the assistant's answer.

    `template_kwargs` go to the template (e.g. {"enable_thinking": False} for Qwen3). A template that refuses the
    messages (say, roles that do not alternate) raises its own exception; callers say which input was at fault.
    """
    text = tokenizer.apply_chat_template(template_messages(messages), tokenize=False, add_generation_prompt=True,
                                         **(template_kwargs or {}))
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def has_images(messages: list[dict]) -> bool:
    """Whether any message holds an image part (ours, OpenAI's `image_url` or `input_image`)."""
    return any(is_image_part(part) for m in messages if isinstance(m.get("content"), list) for part in m["content"])


def vision_prompt(processor, messages: list[dict], template_kwargs: dict | None = None
                  ) -> tuple[list[int], dict | None]:
    """(prompt ids, media) of `messages` for a vision-language model: rendered with the processor's chat template
    and tokenized by the processor with the images, so each image's placeholder is expanded to its tokens. `media`
    is the processor's output without input_ids and attention_mask (pixel_values, image_grid_thw, ...), or None
    when the conversation holds no image.

    Content becomes `{"type": "image"}` / `{"type": "text"}` parts exactly as training data's does
    (media.placeholder_text, then media.content_parts), so a fine-tuned model reads the text around its images as
    it was trained on. An image part's `image` is a path, data URL or http(s) URL (loaded here; a MediaError names
    `messages[i].content[j]`) or an image already loaded (a PIL image). A template that refuses the messages raises
    its own exception, as in `chat_prompt_ids`.
    """
    rendered, images = [], []
    for i, message in enumerate(messages):
        content = message.get("content")
        text = _placeholder_text(content, i, images) if isinstance(content, list) else content
        rendered.append({**message, "role": _role(message["role"]), "content": content_parts(text or "")})
    text = processor.apply_chat_template(rendered, tokenize=False, add_generation_prompt=True,
                                         **(template_kwargs or {}))
    inputs = processor(text=[text], images=[images] if images else None, return_tensors="pt",
                       add_special_tokens=False)
    media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")} if images else None
    return inputs["input_ids"][0].tolist(), media


def _placeholder_text(parts: list, index: int, images: list) -> str:
    """Message `index`'s list of parts as one placeholder string (media.placeholder_text), its images read, in
    order, onto `images`."""
    pieces = []
    for j, part in enumerate(parts):
        if is_image_part(part):
            images.append(_image(part, f"messages[{index}].content[{j}]"))
            pieces.append(None)
        elif isinstance(part, dict) and isinstance(part.get("text"), str) and part.get("type", "text") == "text":
            pieces.append(part["text"])
    return placeholder_text(pieces)


def _image(part: dict, where: str):
    """The picture of an image part: one already loaded as it is, a reference read through media.load_image."""
    value = part.get("image")
    if value is not None and not isinstance(value, str | dict):
        return value
    return load_image(image_part(part, where)["image"], where)
