"""Conversations to prompt token ids through the tokenizer's chat template: the one renderer that the server, the
terminal chat and evaluation share, so each endpoint feeds the model the same tokens."""

from __future__ import annotations

from tunestack.message_text import content_text


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates expect them: OpenAI's `developer` role read as `system`, content as one string
    (text parts joined by `join_text_parts`, the rule training data follows)."""
    return [{**m, "role": "system" if m["role"] == "developer" else m["role"],
             "content": content_text(m.get("content"))} for m in messages]


def chat_prompt_ids(tokenizer, messages: list[dict], template_kwargs: dict | None = None) -> list[int]:
    """The token ids of `messages` rendered with the tokenizer's chat template, ready for the assistant's answer.

    `template_kwargs` go to the template (e.g. {"enable_thinking": False} for Qwen3). A template that refuses the
    messages (say, roles that do not alternate) raises its own exception; callers say which input was at fault.
    """
    text = tokenizer.apply_chat_template(template_messages(messages), tokenize=False, add_generation_prompt=True,
                                         **(template_kwargs or {}))
    return tokenizer(text, add_special_tokens=False)["input_ids"]
