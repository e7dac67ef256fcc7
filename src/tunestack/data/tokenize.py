"""Render conversations with the tokenizer's own chat template and mask the loss to assistant turns."""

from __future__ import annotations

from dataclasses import dataclass

from tunestack.errors import DataError

IGNORE_INDEX = -100


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn in it.

    A turn's span is what rendering it adds after the generation prompt that precedes it: the answer plus the
    template's end-of-turn marker, which is what the model must learn to produce.
    """
    text = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        upto = _render(tokenizer, messages[: i + 1])
        if not text.startswith(upto):
            # Templates that rewrite earlier turns (e.g. dropping reasoning) render no stable prefix: fall back
            # to locating the answer itself, searching after the previous span.
            after = spans[-1][1] if spans else 0
            found = text.find(message["content"], after)
            if found < 0:
                raise DataError(f"chat template does not render assistant turn {i} verbatim; pass --template")
            spans.append((found, found + len(message["content"])))
            continue
        spans.append((start, len(upto)))
    return text, spans


def conversation_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of a whole conversation as the chat template renders it: what a reward model reads, in
    training and in scoring alike (it scores the last token)."""
    return tokenizer(_render(tokenizer, messages), add_special_tokens=False)["input_ids"]


def generation_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of a conversation followed by the template's opening of the assistant's turn: what a policy
    continues when it samples an answer."""
    return tokenizer(_render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def _char_mask_to_labels(input_ids: list[int], offsets: list[tuple[int, int]], spans) -> list[int]:
    labels = []
    for token, (begin, end) in zip(input_ids, offsets):
        inside = any(begin >= s and end <= e and end > begin for s, e in spans)
        labels.append(token if inside else IGNORE_INDEX)
    return labels


@dataclass
class Encoded:
    """One training example as token ids with its loss labels."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


def encode_conversation(tokenizer, messages: list[dict], max_length: int, truncation: str = "truncate"):
    """Token ids and labels (-100 outside assistant turns) for a conversation, or None when dropped.

    The ids equal `apply_chat_template(messages, tokenize=True)`; tests check this token by token.
    """
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = _char_mask_to_labels(enc["input_ids"], enc["offset_mapping"], spans)
    return _fit(list(enc["input_ids"]), labels, max_length, truncation)


def encode_text(tokenizer, text: str, max_length: int, truncation: str = "truncate"):
    """Token ids for raw-text pre-training: the loss falls on every token; an EOS closes each document."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id:
        ids = [tokenizer.bos_token_id] + ids
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return _fit(ids, list(ids), max_length, truncation)


def _fit(input_ids: list[int], labels: list[int], max_length: int, truncation: str):
    if len(input_ids) <= max_length:
        return Encoded(input_ids, labels)
    if truncation == "drop":
        return None
    return Encoded(input_ids[:max_length], labels[:max_length], truncated=True)
