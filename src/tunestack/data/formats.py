"""Detect each file's row format and convert its rows to the canonical columns of a task."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tunestack.data.readers import LocatedRow, describe
from tunestack.errors import DataError

TASKS = ("sft", "pt", "preference", "kto")

# Format name -> the keys that identify it, tried in this order.
FORMATS = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "preference": ("chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "alpaca": ("instruction", "output"),
    "query": ("query", "response"),
    "text": ("text",),
}
DESCRIBE = {
    "messages": 'a "messages" list',
    "sharegpt": 'a "conversations" list',
    "preference": '"prompt"/"chosen"/"rejected" fields',
    "kto": '"prompt"/"completion"/"label" fields',
    "alpaca": '"instruction"/"output" fields',
    "query": '"query"/"response" fields',
    "text": 'a "text" field',
}
TASK_FORMATS = {
    "sft": ("messages", "sharegpt", "alpaca", "query"),
    "pt": ("text",),
    "preference": ("preference",),
    "kto": ("kto",),
}
_USE_WITH = {
    "sft": "conversations, which `tunestack sft` trains on",
    "pt": "raw text, which `tunestack pt` trains on",
    "preference": "preference pairs, which `tunestack dpo` (or orpo, simpo, cpo, rm) trains on",
    "kto": "labelled completions, which `tunestack kto` trains on",
}
# Column names the converters read; a registration's column mapping must map onto these.
FIELDS = ("messages", "conversations", "system", "instruction", "input", "output", "history", "query", "response",
          "prompt", "chosen", "rejected", "completion", "label", "text")  # fmt: skip


def expected_for(task: str) -> str:
    """What rows of `task` may look like, for messages: `a "messages" list or "instruction"/"output" fields`."""
    names = [DESCRIBE[f] for f in TASK_FORMATS[task]]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def detect_format(row: dict, where: str, task: str) -> str:
    """The format of `row` (named as in FORMATS); raises if it is unknown or not data for `task`."""
    found = next((name for name, keys in FORMATS.items() if all(k in row for k in keys)), None)
    if found is None:
        raise DataError(f"{where}: expected {expected_for(task)}, found keys {sorted(row)}")
    if found not in TASK_FORMATS[task]:
        family = next(t for t, formats in TASK_FORMATS.items() if found in formats)
        raise DataError(
            f"{where}: rows with {DESCRIBE[found]} are {_USE_WITH[family]}; {task} data needs {expected_for(task)}"
        )
    return found


def canonical_rows(
    rows: Iterable[LocatedRow], task: str, system: str | None = None, columns: dict | None = None, stats=None
) -> Iterator[dict]:
    """Convert rows lazily; the first row fixes the format and every later row must match it.

    `stats`, a dict, receives the detected "format" and counts the rows in "rows" as they pass.
    """
    stats = {} if stats is None else stats
    stats.setdefault("rows", 0)
    fmt = None
    for where, row in rows:
        if columns:
            row = {columns.get(key, key): value for key, value in row.items()}
        if fmt is None:
            fmt = stats["format"] = detect_format(row, where, task)
        elif not all(k in row for k in FORMATS[fmt]):
            raise DataError(f"{where}: expected {DESCRIBE[fmt]} like the first row, found keys {sorted(row)}")
        stats["rows"] += 1
        yield _CONVERTERS[fmt](row, where, system)


def _messages(row: dict, where: str, system: str | None) -> dict:
    messages = _message_list(row["messages"], "messages", where, _OPENAI)
    return {"messages": _conversation(messages, where, system)}


def _sharegpt(row: dict, where: str, system: str | None) -> dict:
    messages = _message_list(row["conversations"], "conversations", where, _SHAREGPT)
    own = _text_field(row, "system", where, optional=True)
    return {"messages": _conversation(messages, where, own or system)}


def _alpaca(row: dict, where: str, system: str | None) -> dict:
    instruction = _text_field(row, "instruction", where)
    extra = _text_field(row, "input", where, optional=True)
    prompt = f"{instruction}\n{extra}" if extra else instruction
    return _single_turn(row, where, system, prompt, _text_field(row, "output", where))


def _query(row: dict, where: str, system: str | None) -> dict:
    prompt, answer = _text_field(row, "query", where), _text_field(row, "response", where)
    return _single_turn(row, where, system, prompt, answer)


def _single_turn(row: dict, where: str, system: str | None, prompt: str, answer: str) -> dict:
    messages = _history(row.get("history"), where)
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    own = _text_field(row, "system", where, optional=True)
    return {"messages": _conversation(messages, where, own or system)}


def _preference(row: dict, where: str, system: str | None) -> dict:
    if row.get("prompt") is None:
        prompt, chosen, rejected = _split_shared_prompt(row["chosen"], row["rejected"], where)
    else:
        prompt = _prompt(row["prompt"], "prompt", where)
        chosen = _completion(row["chosen"], "chosen", where, prompt)
        rejected = _completion(row["rejected"], "rejected", where, prompt)
    own = _text_field(row, "system", where, optional=True)
    return {"prompt": _with_system(prompt, own or system), "chosen": chosen, "rejected": rejected}


def _kto(row: dict, where: str, system: str | None) -> dict:
    prompt = _prompt(row["prompt"], "prompt", where)
    completion = _completion(row["completion"], "completion", where, prompt)
    own = _text_field(row, "system", where, optional=True)
    return {"prompt": _with_system(prompt, own or system), "completion": completion, "label": _label(row, where)}


def _label(row: dict, where: str) -> bool:
    value = row["label"]
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise DataError(f"{where}: label is {describe(value)}; expected true or false")


def _text(row: dict, where: str, system: str | None) -> dict:
    return {"text": _text_field(row, "text", where)}


_CONVERTERS = {
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "query": _query,
    "preference": _preference,
    "kto": _kto,
    "text": _text,
}


# --- messages: roles, contents and the prompt/completion split ----------------------------------------------------

ROLES = ("system", "user", "assistant")
_OPENAI = ("role", "content", {r: r for r in ROLES})
_SHAREGPT = ("from", "value", {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                               "assistant": "assistant"})  # fmt: skip
_IMAGE_PARTS = ("image", "image_url", "input_image")


def _text_field(row: dict, key: str, where: str, optional: bool = False) -> str | None:
    value = row.get(key)
    if optional and value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: {key} is {describe(value)}; expected a string")
    return value


def _message_list(value, field: str, where: str, style=_OPENAI) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {field} is {describe(value)}; expected a non-empty list of messages")
    return [_message(item, f"{field}[{i}]", where, style) for i, item in enumerate(value)]


def _message(item, at: str, where: str, style) -> dict:
    if not isinstance(item, dict):
        raise DataError(f"{where}: {at} is {describe(item)}; expected an object with role and content")
    role_key, content_key, roles = style if "role" not in item else _OPENAI
    role = item.get(role_key)
    if not isinstance(role, str) or role not in roles:
        allowed = list(roles)
        raise DataError(
            f"{where}: {at}.{role_key} is {describe(role)}; expected {', '.join(allowed[:-1])} or {allowed[-1]}"
        )
    return {"role": roles[role], "content": _content(item.get(content_key), f"{at}.{content_key}", where)}


def _content(value, at: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise DataError(f"{where}: {at} is {describe(value)}; expected a string")
    texts = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _IMAGE_PARTS:
            raise DataError(f"{where}: {at}[{i}]: image content is not supported for text models yet")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise DataError(f'{where}: {at}[{i}] is {describe(part)}; expected {{"type": "text", "text": "..."}}')
        texts.append(part["text"])
    return "\n".join(texts)


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}, *messages]
    return messages


def _conversation(messages: list[dict], where: str, system: str | None) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: conversation has no assistant turn; add the answer the model should learn")
    return _with_system(messages, system)


def _history(value, where: str) -> list[dict]:
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


def _prompt(value, field: str, where: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return _message_list(value, field, where)


def _completion(value, field: str, where: str, prompt: list[dict]) -> list[dict]:
    """A string answer, assistant messages, or a full conversation that starts with `prompt`."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = _message_list(value, field, where)
    if len(messages) > len(prompt) and messages[: len(prompt)] == prompt:
        messages = messages[len(prompt) :]
    if messages[0]["role"] != "assistant":
        role = messages[0]["role"]
        raise DataError(f"{where}: {field} starts with a {role} message; expected the assistant's answer")
    return messages


def _split_shared_prompt(chosen, rejected, where: str) -> tuple[list, list, list]:
    """Split two full conversations into their shared prompt and the two differing answers."""
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise DataError(f'{where}: string chosen/rejected need a "prompt" field; add one, or give full conversations')
    chosen, rejected = _message_list(chosen, "chosen", where), _message_list(rejected, "rejected", where)
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


def features_for(task: str):
    """The `datasets.Features` of canonical rows for `task`, so that every source concatenates."""
    from datasets import Features, List, Value

    turns = List({"role": Value("string"), "content": Value("string")})
    return Features(
        {
            "sft": {"messages": turns},
            "pt": {"text": Value("string")},
            "preference": {"prompt": turns, "chosen": turns, "rejected": turns},
            "kto": {"prompt": turns, "completion": turns, "label": Value("bool")},
        }[task]
    )
