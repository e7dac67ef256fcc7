"""Pieces the web UI's tabs share: the model picker, the command box, output folders, and job status lines."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import gradio as gr

from tunestack.errors import TunestackError
from tunestack.progress import latest, read_events
from tunestack.ui.paths import is_path_like


def model_choices(ctx) -> list[str]:
    """Runs under the runs folder (newest first), then the model aliases."""
    from tunestack.hub import list_models

    runs = sorted((p.parent for p in ctx.runs_root.glob("*/run.json")), key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(run) for run in runs] + [row["alias"] for row in list_models()]


def model_picker(ctx, elem_id: str, label: str = "Model or run", value: str | None = "") -> gr.Dropdown:
    """A dropdown of runs and aliases that also takes a typed path or hub id; ↻ reads the runs folder again."""
    choices = model_choices(ctx)
    with gr.Row():
        picker = gr.Dropdown(choices, value=choices[0] if value == "" and choices else value, label=label,
                             allow_custom_value=True, scale=8, elem_id=elem_id,
                             info="a run, an alias, a hub id (org/name) or a path")
        refresh = gr.Button("↻", scale=0, min_width=40)
    refresh.click(lambda: gr.Dropdown(choices=model_choices(ctx)), outputs=picker)
    return picker


def model_flag(ctx, text: str | None, what: str = "--model") -> str:
    """The value --model gets: a path (checked against the folders the UI may read) or an alias or hub id."""
    text = (text or "").strip()
    if not text:
        raise TunestackError(f"{what}: empty; pick a run or a model")
    return str(ctx.check_path(text, what=what)) if is_path_like(text) else text


def output_dir(ctx, text: str | None, command: str) -> Path:
    """The --output_dir typed in (checked), or a fresh folder under the runs folder."""
    if not (text or "").strip():
        return ctx.new_output_dir(command)
    return ctx.check_path(text, must_exist=False, what="--output_dir")


def start_job(ctx, kind: str, argv: list[str], directory: Path | None = None):
    """Check `argv` as the CLI does (a ConfigError names every bad flag in its words), then start it as a job."""
    from tunestack.cli.commands import COMMANDS

    COMMANDS[argv[0]].parse(argv[1:])
    return ctx.jobs.start(kind, argv, directory)


def command_box(label: str = "Command", value: str = "") -> gr.Textbox:
    """The CLI command an action runs, ready to copy into a terminal."""
    return gr.Textbox(value, label=label, interactive=False, buttons=["copy"], elem_classes=["command"])


def cli_command(argv: list[str]) -> str:
    return shlex.join(["tunestack", *argv])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def problem(exc: Exception | str) -> str:
    """A bad input, shown in the page in the CLI's words (one line per problem)."""
    return "**error:** " + "  \n".join(str(exc).splitlines())


def job_status(job, directory: Path | None = None) -> str:
    """Markdown for a job: its progress (from the events in `directory`) while it runs; how it ended, with the
    command's own last lines when it failed."""
    state = job.status()
    events = latest(read_events(directory)) if directory else None
    if state == "running":
        return f"**running** · {progress_line(events)}" if events and events["phase"] else "**running**"
    if state == "completed":
        return "**completed**"
    code = job.returncode()
    exit_note = f" (exit {code})" if code else ""
    return f"**{state}**{exit_note}\n\n```\n{job.log_tail(15)}\n```"


def progress_line(state: dict) -> str:
    """One line from `progress.latest`: phase, step of total, ETA, the figures, the last message."""
    parts = [state["phase"]]
    if state["step"] is not None and state["total"]:
        parts.append(f"{state['step']}/{state['total']} ({100 * state['step'] / state['total']:.0f}%)")
    if state["eta_s"] is not None:
        parts.append(f"ETA {state['eta_s']:.0f}s")
    parts += [f"{name} {value:.4g}" for name, value in state["figures"].items()]
    if state["messages"]:
        parts.append(state["messages"][-1])
    return " · ".join(parts)
