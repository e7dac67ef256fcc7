"""Check the messages inside a row and bring them to one shape: `{"role": ..., "content": "..."}` dicts."""

from __future__ import annotations

import json

from tunestack.data.readers import describe
from tunestack.errors import DataError
from tunestack.media import MEDIA_COLUMNS, media_kind, media_part, placeholder_text

ROLES = ("system", "user", "assistant", "tool")
# How a message names its role and content, and what each role name means: (role key, content key, roles).
# Gemma's templates call the assistant `model`; data written for them says so.
OPENAI = ("role", "content", {**{r: r for r in ROLES}, "model": "assistant"})
SHAREGPT = ("from", "value", {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                              "assistant": "assistant", "model": "assistant", "tool": "tool"})  # fmt: skip


def message_list(value, field: str, where: str, style=OPENAI) -> list[dict]:
    """The messages of `field`, a non-empty list; a message with a "role" key is read as OpenAI style."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {field} is {describe(value)}; expected a non-empty list of messages")
    return [_message(item, f"{field}[{i}]", where, style) for i, item in enumerate(value)]


def _message(item, at: str, where: str, style) -> dict:
    if not isinstance(item, dict):
        raise DataError(f"{where}: {at} is {describe(item)}; expected an object with role and content")
    role_key, content_key, roles = style if "role" not in item else OPENAI
    role = item.get(role_key)
    if not isinstance(role, str) or role not in roles:
        allowed = list(roles)
        raise DataError(
            f"{where}: {at}.{role_key} is {describe(role)}; expected {', '.join(allowed[:-1])} or {allowed[-1]}"
        )
    role = roles[role]
    if role == "assistant" and item.get("tool_calls"):
        return {"role": role, "content": _content(item.get(content_key) or "", f"{at}.{content_key}", where),
                "tool_calls": _tool_calls(item["tool_calls"], f"{at}.tool_calls", where)}
    media = {kind: [] for kind in MEDIA_COLUMNS} if role == "user" else None
    message = {"role": role, "content": _content(item.get(content_key), f"{at}.{content_key}", where, media)}
    for kind, refs in (media or {}).items():
        if refs:
            message[MEDIA_COLUMNS[kind]] = refs
    if role == "tool":
        message.update({k: str(item[k]) for k in ("tool_call_id", "name") if item.get(k) is not None})
    return message


def _tool_calls(value, at: str, where: str) -> str:
    """An assistant's OpenAI `tool_calls` (a list of {"function": {"name", "arguments"}}), kept as JSON text."""
    try:
        calls = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        calls = None
    if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("function", c).get("name"), str) for c in calls):
        raise DataError(f'{where}: {at} is {describe(value)}; expected a list of '
                        '{"type": "function", "function": {"name": ..., "arguments": {...}}}')
    return json.dumps(calls, ensure_ascii=False)


def _content(value, at: str, where: str, media: dict | None = None) -> str:
    """A string, or a list of text, image, audio and video parts as one string (`placeholder_text`); each media part's
    reference goes to `media[kind]`, in order (without `media`, such parts are refused)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise DataError(f"{where}: {at} is {describe(value)}; expected a string")
    pieces = []
    for i, part in enumerate(value):
        kind = media_kind(part)
        if kind is not None:
            if media is None:
                raise DataError(f"{where}: {at}[{i}]: {kind}s are not supported here; only user turns of "
                                "conversations to fine-tune on (sft) may hold them")
            media[kind].append(media_part(part, f"{where}: {at}[{i}]")[kind])
            pieces.append({"type": kind})
            continue
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise DataError(f'{where}: {at}[{i}] is {describe(part)}; expected {{"type": "text", "text": "..."}}, '
                            '{"type": "image", "image": "PATH"}, {"type": "audio", "audio": "PATH"} or '
                            '{"type": "video", "video": "PATH"}')
        pieces.append(part["text"])
    return placeholder_text(pieces)


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """`messages` led by a `system` message, unless there is no system text or they already start with one."""
    if system and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}, *messages]
    return messages


def conversation(messages: list[dict], where: str, system: str | None) -> list[dict]:
    """A conversation to train on: it must hold an assistant turn; `system` leads it as in `with_system`."""
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: conversation has no assistant turn; add the answer the model should learn")
    return with_system(messages, system)


def history_messages(value, where: str) -> list[dict]:
    """The user and assistant turns of a `history` field, a list of [question, answer] pairs."""
    if value is None or value == "":  # an empty CSV cell is no history
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}: history is {describe(value)}; expected a list of [question, answer] pairs")
    turns = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise DataError(f"{where}: history[{i}] is {describe(pair)}; expected a [question, answer] pair")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns


def prompt_messages(value, field: str, where: str) -> list[dict]:
    """A prompt given as a string (one user turn) or as messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return message_list(value, field, where)


def completion_messages(value, field: str, where: str, prompt: list[dict]) -> list[dict]:
    """A string answer, assistant messages, or a full conversation that starts with `prompt`."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = message_list(value, field, where)
    if len(messages) > len(prompt) and messages[: len(prompt)] == prompt:
        messages = messages[len(prompt) :]
    if messages[0]["role"] != "assistant":
        role = messages[0]["role"]
        raise DataError(f"{where}: {field} starts with a {role} message; expected the assistant's answer")
    return messages


def split_shared_prompt(chosen, rejected, where: str) -> tuple[list, list, list]:
    """Split two full conversations into their shared prompt and the two differing answers."""
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise DataError(f'{where}: string chosen/rejected need a "prompt" field; add one, or give full conversations')
    chosen, rejected = message_list(chosen, "chosen", where), message_list(rejected, "rejected", where)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise DataError(f"{where}: chosen and rejected share no prompt; expected both to start with the same user turn")
    ends = [c[shared:] for c in (chosen, rejected)]
    if not all(end and end[0]["role"] == "assistant" for end in ends):
        raise DataError(
            f"{where}: after the {shared} shared message(s), chosen and rejected must each continue with a "
            "different assistant answer"
        )
    return chosen[:shared], ends[0], ends[1]
