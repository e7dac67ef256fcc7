"""tunestack: fine-tune, align, export, serve and evaluate language models with one tool.

`import tunestack` is light: the functions of the Python API (`tunestack.sft`, `tunestack.chat`, ...; see
tunestack/api.py) load torch and the rest only when called."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("sft", "pt", "dpo", "kto", "orpo", "simpo", "cpo", "grpo", "rloo", "rm", "ppo", "chat", "export", "evaluate",
        "estimate", "serve", "Server", "Run", "Export", "EvalReport")

if TYPE_CHECKING:
    from tunestack.api import (EvalReport, Export, Run, Server, chat, cpo, dpo, estimate, evaluate, export, grpo,
                               kto, orpo, ppo, pt, rloo, rm, serve, sft, simpo)


def __getattr__(name: str) -> Any:
    if name in _API:
        from tunestack import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunestack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
