"""JSON mode for the pt engine: a character-level JSON parser that tells which tokens keep the output a valid
prefix of one JSON object, so that sampling only ever picks those (OpenAI's `response_format: json_object`)."""

from __future__ import annotations

import re

_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9]\d*)(?:\.\d*)?(?:(?<=\d)[eE][+-]?\d*)?)?")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_LITERALS = ("true", "false", "null")


class JsonPrefix:
    """Immutable parser state; `feed` returns the state after some text, or None if the text breaks the JSON."""

    __slots__ = ("stack", "mode", "buffer")

    def __init__(self, stack: str = "", mode: str = "start", buffer: str = ""):
        self.stack = stack  # open containers, "{" or "["
        self.mode = mode  # start, value, key_or_end, key, colon, after, string, key_string, escape..., number, literal, done
        self.buffer = buffer  # number or literal so far, escape progress

    @property
    def done(self) -> bool:
        return self.mode == "done"

    def feed(self, text: str) -> JsonPrefix | None:
        stack, mode, buffer = self.stack, self.mode, self.buffer
        for char in text:
            step = _step(stack, mode, buffer, char)
            if step is None:
                return None
            stack, mode, buffer = step
        return JsonPrefix(stack, mode, buffer)


def _step(stack: str, mode: str, buffer: str, char: str):
    """One character; returns the new (stack, mode, buffer) or None."""
    if mode in ("string", "key_string"):
        if char == '"':
            return (stack, "colon", "") if mode == "key_string" else _after_value(stack)
        if char == "\\":
            return stack, "escape_" + mode, ""
        return None if ord(char) < 0x20 else (stack, mode, "")
    if mode.startswith("escape_"):
        inner = mode[len("escape_"):]
        if buffer.startswith("u"):
            if char not in "0123456789abcdefABCDEF":
                return None
            return (stack, inner, "") if len(buffer) == 4 else (stack, mode, buffer + char)
        if char == "u":
            return stack, mode, "u"
        return (stack, inner, "") if char in '"\\/bfnrt' else None
    if mode == "number":
        if _NUMBER_PREFIX.fullmatch(buffer + char):
            return stack, mode, buffer + char
        if not _NUMBER.fullmatch(buffer):
            return None
        return _step(*_after_value(stack), char)
    if mode == "literal":
        candidates = [w for w in _LITERALS if w.startswith(buffer + char)]
        if not candidates:
            return None
        return _after_value(stack) if buffer + char in _LITERALS else (stack, mode, buffer + char)
    if char in " \t\n\r":
        return stack, mode, buffer
    if mode == "done":
        return None
    if mode == "start":
        return (stack + "{", "key_or_end", "") if char == "{" else None
    if mode in ("key_or_end", "key"):
        if char == '"':
            return stack, "key_string", ""
        return _close(stack, char) if mode == "key_or_end" and char == "}" else None
    if mode == "colon":
        return (stack, "value", "") if char == ":" else None
    if mode == "after":
        if char == ",":
            return stack, ("key" if stack[-1] == "{" else "value"), ""
        return _close(stack, char)
    if mode in ("value", "value_or_end"):
        return _start_value(stack, mode, char)
    return None


def _start_value(stack: str, mode: str, char: str):
    if char == "{":
        return stack + "{", "key_or_end", ""
    if char == "[":
        return stack + "[", "value_or_end", ""
    if char == '"':
        return stack, "string", ""
    if char in "-0123456789":
        return stack, "number", char
    if any(w.startswith(char) for w in _LITERALS):
        return stack, "literal", char
    return _close(stack, char) if mode == "value_or_end" and char == "]" else None


def _close(stack: str, char: str):
    if not stack or {"{": "}", "[": "]"}[stack[-1]] != char:
        return None
    return _after_value(stack[:-1])


def _after_value(stack: str):
    return (stack, "after", "") if stack else (stack, "done", "")
