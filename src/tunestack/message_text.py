"""The one rule that turns a message's content into text: a string as it is, text parts joined by newlines.

Training data, the server, the terminal chat and evaluation all render messages through these functions, so a
model is served exactly the text it was trained on. The module sits at the top of the package, beside `errors`,
because `data` may not import `inference` and `serve` and `eval` may not import `data`.
"""

from __future__ import annotations

from collections.abc import Iterable

PART_SEPARATOR = "\n"
"""Between the text parts of one message, as vLLM joins them."""


def join_text_parts(texts: Iterable[str]) -> str:
    """The text of a message whose content is the text parts `texts`, in order."""
    return PART_SEPARATOR.join(texts)


def content_text(content) -> str:
    """The text of a message's content: a string, None (empty), or a list of `{"type": "text", "text": ...}` parts
    (dicts or objects with a `text` attribute). Parts of other types carry no text and are skipped here; training
    data refuses them with the row's location before joining."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return join_text_parts(text for text in map(_part_text, content) if text is not None)


def _part_text(part) -> str | None:
    """The text of one content part, or None for a part of another type (an image, audio)."""
    if isinstance(part, dict):
        kind, text = part.get("type", "text"), part.get("text")
    else:
        kind, text = getattr(part, "type", "text"), getattr(part, "text", None)
    return text if kind == "text" and isinstance(text, str) else None
