"""What the Train tab's buttons and timer do, on the form's values `(task, *FIELDS, more flags)`: start, resume
and stop runs as jobs, preview the data, estimate, and follow a job (progress, loss, log, the error it ended with)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading

import gradio as gr
import pandas as pd

from tunestack.errors import ConfigError, TunestackError
from tunestack.ui import train_checks as checks
from tunestack.ui import train_form as form
from tunestack.ui.runs import loss_points, progress, progress_text
from tunestack.ui.train_form import FIELDS, dataset_choices, model_choices


def _argv(values, output_dir: str | None = None) -> list[str]:
    task, *settings, more = values
    fields = dict(zip(FIELDS, settings))
    if output_dir:
        fields["output_dir"] = output_dir
    return form.build_argv(task, fields, more)


def form_updates(ctx, job) -> list:
    """Updates of the form `(task, *FIELDS, more)` when the page opens: the pickers' choices, and the settings of
    the run the page follows, so that what it shows is the command that run is."""
    task, values, more = form.form_values(job.argv) if job is not None else (None, {}, None)
    updates = {name: gr.update(value=_shown_value(name, values[name])) if name in values else gr.update()
               for name in FIELDS}
    updates["model"] = gr.update(choices=model_choices(ctx), **({"value": values["model"]} if "model" in values
                                                                 else {}))
    updates["dataset"] = gr.update(choices=dataset_choices(ctx), **({"value": values["dataset"]}
                                                                     if "dataset" in values else {}))
    return [gr.update(value=task) if task else gr.update(), *(updates[name] for name in FIELDS),
            gr.update(value=more) if more is not None else gr.update()]


def _shown_value(name: str, text: str):
    if isinstance(form.default(name), (int, float)) and not isinstance(form.default(name), bool):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def presets_note(task: str, dataset: str | None) -> str:
    """What a built-in data set's recommended settings change, for the settings left at their default."""
    from tunestack.cli.commands import training_presets

    presets = training_presets(task)
    found = presets({"dataset": dataset or ""}) if presets else {}
    if not found:
        return ""
    settings = ", ".join(f"`--{name} {value:g}`" if isinstance(value, float) else f"`--{name} {value}`"
                         for name, value in found.items())
    return f"{dataset}'s recommended settings apply where a setting is left at its default: {settings}"


def form_command(ctx, values) -> str:
    return shlex.join(["tunestack", *_argv(values)])


def start(ctx, values):
    """(problems per field, the new job or None, an update of the Output dir field); the checks run first and
    nothing starts on a problem."""
    task = values[0]
    given = dict(zip(FIELDS, values[1:-1]))["output_dir"]
    output = (given or "").strip() or str(ctx.new_output_dir(task))
    return _launch(ctx, task, _argv(values, output), output, keep_output=not given)


def resume(ctx, job_id: str | None, values):
    """Continue the run in Output dir (the page's run when the field is empty): the form's command with --resume,
    the run's recorded flags under the ones the form changes."""
    task, *settings, more = values
    fields = dict(zip(FIELDS, settings))
    job = ctx.jobs.get(job_id) if job_id else None
    output = (fields["output_dir"] or "").strip() or (str(job.directory) if job and job.directory else "")
    if not output:
        return {"output_dir": ["--output_dir: name the run to resume"]}, None, gr.skip()
    argv = form.build_argv(task, {**fields, "output_dir": output}, more, always=("output_dir",))
    return _launch(ctx, task, form.resume_argv(argv), output, keep_output=not fields["output_dir"])


def _launch(ctx, task: str, argv: list[str], output: str, keep_output: bool):
    for running in ctx.jobs.running(directory=output):
        return {"output_dir": [f"--output_dir {output}: {running.command} is still running there; Stop it first"]}, \
            None, gr.skip()
    problems = checks.check(ctx, argv)
    if problems:
        return problems, None, gr.skip()
    job = ctx.jobs.start(task, argv, directory=output)
    return {}, job, output if keep_output else gr.skip()


def stop(ctx, job_id: str | None) -> str:
    """Stop the page's run in the background: SIGTERM, so that it saves a checkpoint and ends `interrupted`."""
    job = ctx.jobs.get(job_id) if job_id else None
    if job is None or not job.alive():
        return "Nothing is running."
    threading.Thread(target=job.stop, kwargs={"timeout": 120.0}, daemon=True).start()
    return "**stopping**: the run finishes its step and saves a checkpoint; Resume continues it"


def preview(ctx, task: str, model: str, dataset: str, max_length) -> list:
    from tunestack.ui.preview import preview as rows

    if not (dataset or "").strip():
        raise TunestackError("--dataset: choose a data set to preview")
    try:
        return rows(ctx, task, model, dataset, int(max_length or form.default("max_length")))
    except (OSError, ValueError) as exc:  # a tokenizer or file that cannot be read
        raise TunestackError(str(exc)) from None


def field_problems(error: TunestackError, fallback: str) -> dict[str, list[str]]:
    return checks.route(error, fallback)


def estimate(ctx, values) -> str:
    """`tunestack estimate` with the form's flags, run as the command line would, and what it printed."""
    argv = ["estimate", *_argv(values)[1:]]
    shown = shlex.join(["tunestack", *argv])
    try:
        checks.check_paths(ctx, argv)
    except TunestackError as exc:
        return f"$ {shown}\n{exc}"
    result = subprocess.run([sys.executable, "-m", "tunestack", *argv], capture_output=True, text=True,
                            timeout=900, stdin=subprocess.DEVNULL)
    return f"$ {shown}\n\n{result.stdout}{result.stderr}".rstrip()


def empty_losses() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype=float), "loss": pd.Series(dtype=float)})


def latest_job(ctx) -> str | None:
    """The training job a (re)opened page follows: the newest running one, else the newest."""
    jobs = [job for job in ctx.jobs.list() if job.kind in form.TRAINING_COMMANDS]
    running = [job for job in jobs if job.alive()]
    found = running or jobs
    return found[0].id if found else None


def tick(ctx, job_id: str | None, failure: str | None, seen: int, shown) -> list:
    """The timer's refresh: progress line, loss plot (when new points came), log tail and, once, the error a
    failed run ended with, shown next to the field it names."""
    job = ctx.jobs.get(job_id) if job_id else None
    skip_errors = [gr.skip()] * (len(FIELDS) + 1)
    if job is None:
        return [gr.skip(), gr.skip(), gr.skip(), *skip_errors, failure, seen]
    status = job.status()
    line = progress_text(progress(job.directory), status)
    losses = loss_points(job.directory) if job.directory else []
    plot = pd.DataFrame(losses) if len(losses) != seen and losses else gr.skip()
    errors = skip_errors
    if status == "failed" and failure != job.id:
        errors, failure = shown(failure_problems(job.log_tail(60), job.kind)), job.id
    return [line, plot, job.log_tail(40), *errors, failure, len(losses) if losses else seen]


def failure_problems(log: str, kind: str) -> dict[str, list[str]]:
    """The problems a failed command printed last (`tunestack KIND: error: ...`, or its list of problems), each
    under the field it names."""
    lines = log.splitlines()
    problems = [lines[-1].strip()] if lines else ["the command failed"]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(f"tunestack {kind}: error: "):
            problems = [lines[i].split(": error: ", 1)[1]]
            break
        if re.match(rf"tunestack {kind}: \d+ problems:", lines[i]):
            problems = [line.strip() for line in lines[i + 1:] if line.startswith("  ")]
            break
    routed: dict[str, list[str]] = {}
    for problem in problems:
        guess = "model" if problem.startswith("model") else \
            "dataset" if re.match(r"(file not found|dataset|.*\.(jsonl|json|csv|parquet|txt)\b)", problem) else ""
        for name, found in checks.route(ConfigError([problem]), guess).items():
            routed.setdefault(name, []).extend(found)
    return routed
