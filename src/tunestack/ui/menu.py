"""The wizard's terminal questions: a menu picked with the arrow keys or a number, and a typed value with a default.

On a terminal the menu reads single keys (termios cbreak mode); otherwise it prints numbered choices and reads lines,
so that answers can also be piped in. `q` answers BACK everywhere. With `auto`, every question takes its default.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
from dataclasses import dataclass

from tunestack.errors import TunestackError


class _Back:
    def __repr__(self) -> str:
        return "BACK"


BACK = _Back()
"""The answer `q`: go back one question."""


class Stop(TunestackError):
    """An answer that --yes cannot correct by asking again; the message says what was wrong."""


@dataclass
class Option:
    label: str
    value: object
    note: str = ""


class Terminal:
    """Asks questions on stdin/stdout, or (auto) takes every default and stops at the first error."""

    def __init__(self, auto: bool = False):
        self.auto = auto
        self.keys = not auto and sys.stdin.isatty() and sys.stdout.isatty()

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def error(self, message: str) -> None:
        """Show a problem with an answer; the caller asks again, which --yes cannot."""
        if self.auto:
            raise Stop(message)
        self.say(f"error: {message}")

    def ask(self, title: str, default: str | None = None) -> str | _Back:
        """A typed value; empty takes the default, `q` goes back."""
        if self.auto:
            self.say(f"{title}: {default}")
            return default or ""
        while True:
            text = input(f"{title} [{default}]: " if default else f"{title}: ").strip()
            if text.lower() == "q":
                return BACK
            if text or default:
                return text or default
            self.say("error: type a value (q goes back)")

    def choose(self, title: str, options: list[Option], default: int = 0):
        """The value of the option picked; `q` goes back."""
        if self.auto:
            self.say(f"{title}: {options[default].label}")
            return options[default].value
        picked = self._pick_with_keys(title, options, default) if self.keys else \
            self._pick_by_number(title, options, default)
        if picked is BACK:
            return BACK
        return options[picked].value

    def _pick_by_number(self, title: str, options: list[Option], default: int):
        self.say(title)
        for number, option in enumerate(options, 1):
            self.say(_line(number, option, marked=False))
        while True:
            text = input(f"number (q: back) [{default + 1}]: ").strip().lower()
            if text == "q":
                return BACK
            if not text:
                return default
            if text.isdigit() and 1 <= int(text) <= len(options):
                return int(text) - 1
            self.say(f"error: {text!r}: type a number from 1 to {len(options)}, or q to go back")

    def _pick_with_keys(self, title: str, options: list[Option], current: int):
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        typed, shown = "", 0
        self.say(f"{title}  (arrows or a number, Enter picks, q goes back)")
        try:
            tty.setcbreak(fd, termios.TCSANOW)  # TCSANOW: keys typed ahead are kept, not flushed
            while True:
                shown = _draw(options, current, shown)
                key = _read_key(fd)
                if key in ("\r", "\n"):
                    break
                if key in ("q", "Q", "\x1b"):
                    current = BACK
                    break
                if key in ("\x1b[A", "\x1bOA"):
                    current, typed = (current - 1) % len(options), ""
                elif key in ("\x1b[B", "\x1bOB"):
                    current, typed = (current + 1) % len(options), ""
                elif key.isdigit():
                    typed = typed + key if typed and int(typed + key) <= len(options) else key
                    if 1 <= int(typed) <= len(options):
                        current = int(typed) - 1
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        _erase(shown)
        self.say(f"  -> {options[current].label}" if current is not BACK else "  -> back")
        return current


def _line(number: int, option: Option, marked: bool) -> str:
    note = f"  ({option.note})" if option.note else ""
    return f"{'>' if marked else ' '} {number:>2}. {option.label}{note}"


def _draw(options: list[Option], current: int, shown: int) -> int:
    """Redraw the options (a window around `current` when they do not fit); returns the lines drawn."""
    columns, rows = shutil.get_terminal_size()
    height = max(3, min(len(options), rows - 4))
    first = min(max(0, current - height // 2), len(options) - height)
    _erase(shown)
    lines = [_line(n + 1, options[n], n == current)[: columns - 1] for n in range(first, first + height)]
    if height < len(options):
        lines.append(f"    ({current + 1} of {len(options)})")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return len(lines)


def _erase(lines: int) -> None:
    if lines:
        sys.stdout.write(f"\x1b[{lines}F\x1b[J")
        sys.stdout.flush()


def _read_key(fd: int) -> str:
    """One key: a character, or a whole escape sequence (arrow keys send ESC [ A)."""
    key = os.read(fd, 1).decode(errors="replace")
    if key != "\x1b":
        return key
    while select.select([fd], [], [], 0.05)[0]:
        key += os.read(fd, 1).decode(errors="replace")
        if len(key) >= 3:
            break
    return key
