"""Render conversations with the tokenizer's own chat template and mask the loss to assistant turns."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tunestack.errors import DataError

IGNORE_INDEX = -100


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False, tools: list | None = None,
            template_kwargs: dict | None = None) -> str:
    return tokenizer.apply_chat_template(_template_messages(messages), tools=tools or None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt, **(template_kwargs or {}))


def _template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates expect them: keys that are None dropped (a dataset gives every message every
    column), `tool_calls` as a list whose `arguments` are objects (data may hold them as JSON text)."""
    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if v is not None}
        if message.get("tool_calls"):
            calls = message["tool_calls"]
            message["tool_calls"] = [_object_arguments(c) for c in (json.loads(calls) if isinstance(calls, str)
                                                                     else calls)]
        else:
            message.pop("tool_calls", None)
        out.append(message)
    return out


def _object_arguments(call: dict) -> dict:
    """An OpenAI tool call with its `arguments` JSON text parsed, as Hugging Face chat templates expect."""
    function = dict(call.get("function", call))
    if isinstance(function.get("arguments"), str):
        try:
            function["arguments"] = json.loads(function["arguments"])
        except json.JSONDecodeError:
            pass  # not JSON: the template writes it as it is
    return {**call, "function": function} if "function" in call else function


def template_kwargs(enable_thinking: bool | None) -> dict:
    """What --enable_thinking passes to chat templates (Qwen3's reads it); nothing when it is not given."""
    return {} if enable_thinking is None else {"enable_thinking": enable_thinking}


def template_name(tokenizer) -> str:
    """The tokenizer's chat template named for a message: its registry name, else the tokenizer's own."""
    from tunestack.data.templates import CHAT_TEMPLATES

    name = next((n for n, t in CHAT_TEMPLATES.items() if t == tokenizer.chat_template), None)
    if name:
        return f"the {name!r} chat template"
    return f"the chat template of {tokenizer.name_or_path or 'the tokenizer'}"


def check_tools_supported(tokenizer, tools) -> None:
    """Raise when rows carry `tools` but the chat template never reads them, so the model would not see them."""
    if tools and "tools" not in (tokenizer.chat_template or ""):
        raise DataError(f"the data has a `tools` column, but {template_name(tokenizer)} does not render tools; "
                        "use a model whose template supports tool calling, or --template with one that does")


def _agreeing_prefix(tokenizer, a: str, b: str) -> int:
    """The length of the text that `a` and `b` share, in whole tokens (so `<think>` and `<tool_call>` share none)."""
    ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
    enc_b = tokenizer(b, add_special_tokens=False, return_offsets_mapping=True)
    n = 0
    while n < min(len(ids_a), len(enc_b["input_ids"])) and ids_a[n] == enc_b["input_ids"][n]:
        n += 1
    return enc_b["offset_mapping"][n - 1][1] if n else 0


def assistant_spans(tokenizer, messages: list[dict], tools: list | None = None,
                    template_kwargs: dict | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn in it.

    A turn's span is what rendering it adds after the generation prompt that precedes it: the answer (with its
    reasoning and tool calls) plus the template's end-of-turn marker, which is what the model must learn to produce.
    `tools` and `template_kwargs` (e.g. enable_thinking) go to the template as apply_chat_template passes them.
    """
    def render(msgs, add_generation_prompt=False):
        return _render(tokenizer, msgs, add_generation_prompt, tools, template_kwargs)

    text = render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        opening = render(messages[:i], add_generation_prompt=True) if i else ""
        upto = render(messages[: i + 1])
        if text.startswith(upto):
            if not upto.startswith(opening):
                raise DataError(_opening_mismatch(tokenizer, opening, upto))
            spans.append((len(opening), len(upto)))
            continue
        # No stable prefix: the template ends a conversation differently (an EOS after the last turn), or rewrites
        # earlier turns (Qwen3 drops their reasoning and opens them without a think block). The turn starts where
        # its opening stops agreeing with the text (token by token); it ends where it stops agreeing if the answer
        # lies before that, else where the longest ending of the turn as rendered last (answer, tool calls, end of
        # turn) ends in the text.
        start = max(spans[-1][1] if spans else 0, _agreeing_prefix(tokenizer, opening, text))
        agree = _agreeing_prefix(tokenizer, upto, text)
        answer = (message.get("content") or "").split("</think>")[-1].strip()
        end = agree if answer and answer in text[start:agree] else _end_of_turn(text, upto[agree:], start)
        if end is None:
            raise DataError(f"{template_name(tokenizer)} does not render assistant turn {i} verbatim; pass --template")
        spans.append((start, end))
    return text, spans


def _end_of_turn(text: str, turn: str, start: int) -> int | None:
    """Where the longest suffix of `turn` found in `text` from `start` ends. A suffix found implies every shorter one
    is, so the longest is found by bisection."""
    low, high = 0, len(turn)  # the suffix of length `low` is found (the empty one trivially)
    while low < high:
        mid = (low + high + 1) // 2
        if text.find(turn[len(turn) - mid:], start) >= 0:
            low = mid
        else:
            high = mid - 1
    return text.find(turn[len(turn) - low:], start) + low if low else None


def _opening_mismatch(tokenizer, opening: str, upto: str) -> str:
    """Why masks cannot be trusted: the generation prompt is not how the template opens an assistant turn."""
    at = next((k for k, (a, b) in enumerate(zip(opening, upto)) if a != b), min(len(opening), len(upto)))
    window = slice(max(at - 20, 0), at + 20)
    return (f"{template_name(tokenizer)} opens an assistant turn as "
            f"{upto[window]!r} in a conversation but as {opening[window]!r} with add_generation_prompt, so the loss "
            "mask would not match what the model sees when it answers; fix the template (--template)")


def conversation_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of a whole conversation as the chat template renders it: what a reward model reads, in
    training and in scoring alike (it scores the last token)."""
    return tokenizer(_render(tokenizer, messages), add_special_tokens=False)["input_ids"]


def generation_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of a conversation followed by the template's opening of the assistant's turn: what a policy
    continues when it samples an answer."""
    return tokenizer(_render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def char_mask_to_labels(input_ids: list[int], offsets: list[tuple[int, int]], spans) -> list[int]:
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


def encode_conversation(tokenizer, messages: list[dict], max_length: int, truncation: str = "truncate",
                        tools: list | None = None, template_kwargs: dict | None = None):
    """Token ids and labels (-100 outside assistant turns) for a conversation, or None when dropped.

    The ids equal `apply_chat_template(messages, tools=tools, tokenize=True, **template_kwargs)`; tests check this
    token by token. The assistant's tool calls are trained on; tool results and the tool schemas are not.
    """
    check_tools_supported(tokenizer, tools)
    text, spans = assistant_spans(tokenizer, messages, tools, template_kwargs)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = char_mask_to_labels(enc["input_ids"], enc["offset_mapping"], spans)
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
