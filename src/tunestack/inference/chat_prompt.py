"""Conversations to prompt token ids through the chat template: the one renderer that the server, the terminal chat
and evaluation share, so each endpoint feeds the model the same tokens. A vision-language model's conversation goes
through its processor, which also turns the images, audio or videos into the tensors its prompt ids stand for."""

from __future__ import annotations

from tunestack.media import (MediaError, content_parts, load_audio, load_image, load_video, media_kind, media_part,
                             placeholder_text)
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


def has_media(messages: list[dict]) -> bool:
    """Whether any message holds an image part (ours, OpenAI's `image_url` or `input_image`), an audio part (ours,
    OpenAI's `input_audio`, `audio_url`) or a video part (ours, `video_url`)."""
    return any(media_kind(part) for m in messages if isinstance(m.get("content"), list) for part in m["content"])


def vision_prompt(processor, messages: list[dict], template_kwargs: dict | None = None, raw: bool = False
                  ) -> tuple[list[int], dict | None]:
    """(prompt ids, media) of `messages` for a multimodal model: rendered with the processor's chat template and
    tokenized by the processor with the images, audio and videos, so each placeholder is expanded to its tokens.
    `media` is the processor's output without input_ids and attention_mask (pixel_values, image_grid_thw,
    input_features, ...), or None when the conversation holds no media.

    Content becomes `{"type": "image"}` / `{"type": "audio"}` / `{"type": "video"}` / `{"type": "text"}` parts exactly
    as training data's does (media.placeholder_text, then media.content_parts), so a fine-tuned model reads the text
    around its media as it was trained on. A media part holds a path, data URL or http(s) URL (loaded here; a
    MediaError names `messages[i].content[j]`), or media already loaded (a PIL image, a numpy array of samples at
    the processor's rate, media.VideoFrames). A template that refuses the messages raises its own exception, as in `chat_prompt_ids`.

    `raw=True` is for engines that expand placeholders themselves (vLLM): the ids are the rendered text's own, one
    placeholder token per image, clip or video, and `media` holds the media as read (`{"image": [PIL images],
    "audio": [(samples, rate)], "video": [frames]}`, kinds present only).
    """
    from tunestack.model.vision import media_kinds, video_inputs

    rendered, loaded = [], {"image": [], "audio": [], "video": []}
    rate = getattr(getattr(processor, "feature_extractor", None), "sampling_rate", None)
    reads = media_kinds(processor)
    settings = {"audio": rate, "video": getattr(processor, "video_sampling", {})}
    for i, message in enumerate(messages):
        content = message.get("content")
        text = _placeholder_text(content, i, loaded, settings, reads) if isinstance(content, list) else content
        rendered.append({**message, "role": _role(message["role"]), "content": content_parts(text or "")})
    text = processor.apply_chat_template(rendered, tokenize=False, add_generation_prompt=True,
                                         **(template_kwargs or {}))
    if raw:
        ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        data = {"image": loaded["image"], "audio": [(clip, rate) for clip in loaded["audio"]],
                "video": [video.frames for video in loaded["video"]]}
        return ids, {kind: items for kind, items in data.items() if items} or None
    kwargs = {"images": [loaded["image"]]} if loaded["image"] else {}
    if loaded["audio"]:
        kwargs.update(audio=loaded["audio"], sampling_rate=rate)
    if loaded["video"]:
        kwargs.update(video_inputs(processor, loaded["video"]))
    inputs = processor(text=[text], return_tensors="pt", add_special_tokens=False, **kwargs)
    media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")} if kwargs else None
    return inputs["input_ids"][0].tolist(), media


def _placeholder_text(parts: list, index: int, loaded: dict, settings: dict, reads: list[str]) -> str:
    """Message `index`'s list of parts as one placeholder string (media.placeholder_text), its media read, in order,
    onto `loaded[kind]`; a kind of media the processor does not read (`reads`) is a MediaError naming the part."""
    pieces = []
    for j, part in enumerate(parts):
        kind = media_kind(part)
        if kind is not None:
            where = f"messages[{index}].content[{j}]"
            if kind not in reads:
                raise MediaError(f"{where}: this model reads {' and '.join(reads)} but not {kind}; drop the "
                                 f"{kind} part")
            loaded[kind].append(_media(part, kind, where, settings.get(kind)))
            pieces.append({"type": kind})
        elif isinstance(part, dict) and isinstance(part.get("text"), str) and part.get("type", "text") == "text":
            pieces.append(part["text"])
    return placeholder_text(pieces)


def _media(part: dict, kind: str, where: str, setting):
    """The picture, samples or frames of a media part: media already loaded as they are, a reference read through
    media.load_image / load_audio (resampled to the processor's rate, `setting`) / load_video (sampled as
    `setting`, the processor's video_sampling, says)."""
    value = part.get(kind)
    if value is not None and not isinstance(value, str | dict):
        return value
    ref = media_part(part, where)[kind]
    if kind == "audio":
        return load_audio(ref, where, setting)
    return load_video(ref, where, **setting) if kind == "video" else load_image(ref, where)
