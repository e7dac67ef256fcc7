"""Detect each file's row format and convert its rows to the canonical columns of a task."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from tunestack.data.messages import (
    OPENAI,
    SHAREGPT,
    completion_messages,
    conversation,
    history_messages,
    message_list,
    prompt_messages,
    split_shared_prompt,
    with_system,
)
from tunestack.data.grounding import parse_objects
from tunestack.data.readers import LocatedRow, describe
from tunestack.errors import DataError
from tunestack.media import (MEDIA_COLUMNS, PLACEHOLDERS, MediaError, image_reference, load_audio, load_image,
                             load_video)

TASKS = ("sft", "pt", "preference", "kto", "prompts")

# Format name -> the keys that identify it, tried in this order.
FORMATS = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "preference": ("chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "alpaca": ("instruction", "output"),
    "query": ("query", "response"),
    "text": ("text",),
    "prompt": ("prompt",),
    "query_prompt": ("query",),
    "instruction_prompt": ("instruction",),
    "question": ("question",),
}
DESCRIBE = {
    "messages": 'a "messages" list',
    "sharegpt": 'a "conversations" list',
    "preference": '"prompt"/"chosen"/"rejected" fields',
    "kto": '"prompt"/"completion"/"label" fields',
    "alpaca": '"instruction"/"output" fields',
    "query": '"query"/"response" fields',
    "text": 'a "text" field',
    "prompt": 'a "prompt" field',
    "query_prompt": 'a "query" field',
    "instruction_prompt": 'an "instruction" field',
    "question": 'a "question" field',
}
TASK_FORMATS = {
    "sft": ("messages", "sharegpt", "alpaca", "query"),
    "pt": ("text",),
    "preference": ("preference",),
    "kto": ("kto",),
    "prompts": ("prompt", "messages", "query_prompt", "instruction_prompt", "question"),
}
_USE_WITH = {
    "sft": "conversations, which `tunestack sft` trains on",
    "pt": "raw text, which `tunestack pt` trains on",
    "preference": "preference pairs, which `tunestack dpo` (or orpo, simpo, cpo, rm) trains on",
    "kto": "labelled completions, which `tunestack kto` trains on",
    "prompts": "prompts to sample answers for, which `tunestack grpo` (or rloo) trains on",
}
# Column names the converters read; a registration's column mapping must map onto these.
FIELDS = ("messages", "conversations", "system", "instruction", "input", "output", "history", "query", "response",
          "prompt", "chosen", "rejected", "completion", "label", "text", "question", "answer", "solution",
          "tools", "images", "audios", "videos", "objects")  # fmt: skip


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
    rows: Iterable[LocatedRow], task: str, system: str | None = None, columns: dict | None = None, stats=None,
    base_dir=None, on_bad_media: str | None = None,
) -> Iterator[dict]:
    """Convert rows lazily; the first row fixes the format and every later row must match it.

    `stats`, a dict, receives the detected "format" and counts the rows in "rows" as they pass. Media paths are
    taken relative to `base_dir` (the data file's folder). With `on_bad_media` (fail or skip) every image, audio
    and video file is read once: an unreadable one raises naming the file and line, or drops its row (counted in
    stats["skipped_media"], the first reason in stats["media_problem"]).
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
        out = (_prompt_row if task == "prompts" else _CONVERTERS[fmt])(row, where, system)
        for kind, column in MEDIA_COLUMNS.items():
            out = _gather_media(out, kind, row.get(column), where, task, base_dir)
        if row.get("objects") not in (None, "", {}) and task == "sft":
            out["objects"] = parse_objects(row["objects"], out.get("messages", []), out.get("images", []), where)
        if on_bad_media and uses_media(out):
            try:
                for ref in out.get("images", ()):
                    load_image(ref, where)
                for ref in out.get("audios", ()):
                    load_audio(ref, where)
                for ref in out.get("videos", ()):
                    load_video(ref, where, max_frames=2)
            except MediaError as exc:
                if on_bad_media == "fail":
                    raise MediaError(f"{exc} (--on_bad_media skip drops such rows instead)") from None
                stats["skipped_media"] = stats.get("skipped_media", 0) + 1
                stats.setdefault("media_problem", str(exc))
                continue
        yield out


def _gather_media(out: dict, kind: str, column, where: str, task: str, base_dir) -> dict:
    """The row's images (or audio clips, videos: `kind`) as one `images` (`audios`, `videos`) list, in the order
    their <image> (<audio>, <video>) placeholders appear: from media parts in its user turns, or from that column
    (LLaMA-Factory / ms-swift style) beside the placeholders."""
    key, placeholder = MEDIA_COLUMNS[kind], PLACEHOLDERS[kind]
    messages = out.get("messages", [])
    from_parts = [ref for field in ("messages", "prompt", "chosen", "rejected", "completion")
                  if isinstance(out.get(field), list) for m in out[field] for ref in m.pop(key, ())]
    if column in (None, "", []) and not from_parts:
        return out  # text that happens to hold "<image>" (HTML, say) stays text
    if task != "sft":
        raise DataError(f"{where}: {key} in {task} data are not supported yet; only sft trains on images and audio")
    if from_parts and column not in (None, "", []):
        raise DataError(f'{where}: {key} come both as {kind} parts and in an "{key}" column; use one')
    refs = from_parts or _media_column(column, key, where)
    placed = sum(m["content"].count(placeholder) for m in messages if m["role"] == "user")
    if any(placeholder in m["content"] for m in messages if m["role"] != "user"):
        raise DataError(f"{where}: {placeholder} outside a user turn; {key} belong in the user's messages")
    if placed != len(refs):
        raise DataError(f"{where}: {len(refs)} {kind}(s) but {placed} {placeholder} placeholder(s) in the "
                        f"user turns; each {kind} needs one placeholder where it appears")
    return {**out, key: [image_reference(ref, base_dir) for ref in refs]}


def _media_column(value, key: str, where: str) -> list[str]:
    """An `images`, `audios` or `videos` column: paths, URLs, or objects holding one."""
    kind = key[:-1]
    values = [value] if isinstance(value, str | dict) else value
    if not isinstance(values, list):
        raise DataError(f"{where}: {key} is {describe(value)}; expected a list of {kind} paths or URLs")
    refs = []
    for i, item in enumerate(values):
        if isinstance(item, dict):  # {"path": ...} / {"url": ...} / a media part
            item = (item.get("path") or item.get("url") or item.get(kind) or item.get(f"{kind}_url"))
            item = item.get("url") if isinstance(item, dict) else item
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{where}: {key}[{i}] is {describe(values[i])}; expected {'an' if kind == 'image' else 'a'}"
                            f" {kind} path or URL")
        refs.append(item.strip())
    return refs


def _messages(row: dict, where: str, system: str | None) -> dict:
    messages = message_list(row["messages"], "messages", where, OPENAI)
    out = {"messages": conversation(messages, where, system)}
    if row.get("tools") not in (None, "", []):
        out["tools"] = _tools(row["tools"], where)
    return out


def _tools(value, where: str) -> str:
    """The row's `tools`: OpenAI function schemas (a list, or JSON text of one), kept as JSON text."""
    try:
        tools = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        tools = None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise DataError(f'{where}: tools is {describe(value)}; expected a list of function schemas '
                        '({"type": "function", "function": {"name": ..., "parameters": {...}}})')
    return json.dumps(tools, ensure_ascii=False)


def uses_media(row: dict) -> bool:
    """Whether a canonical sft row carries images, audio or videos."""
    return bool(row.get("images") or row.get("audios") or row.get("videos"))


def uses_tools(row: dict) -> bool:
    """Whether a canonical sft row carries tool schemas or tool messages (which need the wider features)."""
    return "tools" in row or any(len(m) > 2 for m in row.get("messages", ()))


def _sharegpt(row: dict, where: str, system: str | None) -> dict:
    messages = message_list(row["conversations"], "conversations", where, SHAREGPT)
    return {"messages": conversation(messages, where, _system(row, where, system))}


def _alpaca(row: dict, where: str, system: str | None) -> dict:
    instruction = _text_field(row, "instruction", where)
    extra = _text_field(row, "input", where, optional=True)
    prompt = f"{instruction}\n{extra}" if extra else instruction
    return _single_turn(row, where, system, prompt, _text_field(row, "output", where))


def _query(row: dict, where: str, system: str | None) -> dict:
    prompt, answer = _text_field(row, "query", where), _text_field(row, "response", where)
    return _single_turn(row, where, system, prompt, answer)


def _single_turn(row: dict, where: str, system: str | None, prompt: str, answer: str) -> dict:
    messages = history_messages(row.get("history"), where)
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"messages": conversation(messages, where, _system(row, where, system))}


def _preference(row: dict, where: str, system: str | None) -> dict:
    if row.get("prompt") is None:
        prompt, chosen, rejected = split_shared_prompt(row["chosen"], row["rejected"], where)
    else:
        prompt = prompt_messages(row["prompt"], "prompt", where)
        chosen = completion_messages(row["chosen"], "chosen", where, prompt)
        rejected = completion_messages(row["rejected"], "rejected", where, prompt)
    _answer(chosen, "chosen", where)
    _answer(rejected, "rejected", where)
    if chosen == rejected:
        raise DataError(f"{where}: chosen and rejected are the same answer; a pair must prefer one answer to another")
    return {"prompt": with_system(prompt, _system(row, where, system)), "chosen": chosen, "rejected": rejected}


def _kto(row: dict, where: str, system: str | None) -> dict:
    prompt = prompt_messages(row["prompt"], "prompt", where)
    completion = _answer(completion_messages(row["completion"], "completion", where, prompt), "completion", where)
    prompt = with_system(prompt, _system(row, where, system))
    return {"prompt": prompt, "completion": completion, "label": _label(row, where)}


def _answer(messages: list[dict], field: str, where: str) -> list[dict]:
    """An answer to learn from or against: its assistant text must not be empty."""
    if not any(m["content"].strip() for m in messages if m["role"] == "assistant"):
        raise DataError(f"{where}: {field} is empty; expected the assistant's answer")
    return messages


def _text(row: dict, where: str, system: str | None) -> dict:
    return {"text": _text_field(row, "text", where)}


def _prompt_row(row: dict, where: str, system: str | None) -> dict:
    """A prompt to sample answers for (ending with the user's turn), its gold answer (or None) and where it came
    from, which reward functions receive as `answer` and `source`."""
    if "messages" in row:
        prompt = message_list(row["messages"], "messages", where)
    elif "prompt" in row:
        prompt = prompt_messages(row["prompt"], "prompt", where)
    else:
        key = next(k for k in ("query", "instruction", "question") if k in row)
        text = _text_field(row, key, where)
        extra = _text_field(row, "input", where, optional=True) if key == "instruction" else None
        prompt = history_messages(row.get("history"), where) + [
            {"role": "user", "content": f"{text}\n{extra}" if extra else text}]
    field = "messages" if "messages" in row else "prompt"
    if prompt[-1]["role"] != "user":
        raise DataError(f"{where}: {field} ends with a {prompt[-1]['role']} message; a prompt ends with the user's "
                        "turn (put a gold answer in an \"answer\" field)")
    return {"prompt": with_system(prompt, _system(row, where, system)), "answer": _gold_answer(row, where),
            "source": where}


def _gold_answer(row: dict, where: str) -> str | None:
    """The row's `answer` (or `solution`) as text; numbers are written as they were given."""
    key = "answer" if "answer" in row else "solution"
    value = row.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{where}: {key} is {describe(value)}; expected a string or a number")
    return str(value)


_CONVERTERS = {
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "query": _query,
    "preference": _preference,
    "kto": _kto,
    "text": _text,
}


def _system(row: dict, where: str, system: str | None) -> str | None:
    """The row's own "system" text, else the `system` given for every row."""
    return _text_field(row, "system", where, optional=True) or system


def _text_field(row: dict, key: str, where: str, optional: bool = False) -> str | None:
    value = row.get(key)
    if optional and value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: {key} is {describe(value)}; expected a string")
    return value


def _label(row: dict, where: str) -> bool:
    value = row["label"]
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise DataError(f"{where}: label is {describe(value)}; expected true or false")


def features_for(task: str, tools: bool = False, media: bool = False):
    """The `datasets.Features` of canonical rows for `task`, so that every source concatenates; `tools`: sft rows
    with tool schemas and tool calls (`uses_tools`), whose rows all need a "tools" key; `media`: sft rows with
    images, audio or videos (`uses_media`), whose rows all need "images", "audios" and "videos" lists and "objects"
    (grounding boxes, JSON text or None)."""
    from datasets import Features, List, Value

    turns = List({"role": Value("string"), "content": Value("string")})
    if task == "sft" and media:
        return Features({"messages": turns, "images": List(Value("string")), "audios": List(Value("string")),
                         "videos": List(Value("string")), "objects": Value("string")})
    if task == "sft" and tools:
        tool_turns = List({key: Value("string") for key in ("role", "content", "tool_calls", "tool_call_id", "name")})
        return Features({"messages": tool_turns, "tools": Value("string")})
    return Features(
        {
            "sft": {"messages": turns},
            "pt": {"text": Value("string")},
            "preference": {"prompt": turns, "chosen": turns, "rejected": turns},
            "kto": {"prompt": turns, "completion": turns, "label": Value("bool")},
            "prompts": {"prompt": turns, "answer": Value("string"), "source": Value("string")},
        }[task]
    )
