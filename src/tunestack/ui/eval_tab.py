"""The Evaluate tab: `tunestack eval` as a job, its progress from the events, then the report table; with a
second model, `--compare` and both side by side."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from tunestack.errors import TunestackError
from tunestack.eval.tasks import CUSTOM, TASKS, resolve_tasks
from tunestack.progress import events_path
from tunestack.ui.widgets import command_box, job_status, model_flag, model_picker, output_dir, problem, start_job

REPORT_HEADERS = ["task", "metric", "value", "± stderr", "n"]
COMPARE_HEADERS = ["task", "metric", "A", "B", "B - A", "± stderr", "exceeds stderr", "n"]


def task_flags(ctx, tasks: list[str]) -> list[str]:
    """--tasks entries, with the files of custom tasks and task YAMLs checked and made absolute; resolved as the
    CLI resolves them, so an unknown task is refused with its message before anything starts."""
    flags = []
    for task in (t.strip() for t in tasks or [] if t.strip()):
        kind, sep, path = task.partition(":")
        if sep and kind in CUSTOM:
            flags.append(f"{kind}:{ctx.check_path(path, what=f'--tasks {kind}')}")
        elif task.endswith((".yaml", ".yml")):
            flags.append(str(ctx.check_path(task, what="--tasks")))
        else:
            flags.append(task)
    resolve_tasks(flags)
    return flags


def eval_argv(ctx, model, compare_with, tasks, limit, max_new_tokens, out: Path) -> list[str]:
    first = model_flag(ctx, model)
    argv = ["eval", "--compare", first, model_flag(ctx, compare_with, "--compare")] if (compare_with or "").strip() \
        else ["eval", "--model", first]
    if tasks:
        argv += ["--tasks", *task_flags(ctx, tasks)]
    if limit:
        argv += ["--limit", str(int(limit))]
    if max_new_tokens:
        argv += ["--max_new_tokens", str(int(max_new_tokens))]
    return argv + ["--output_dir", str(out)]


def report_table(out: Path) -> tuple[str, list[list] | None, list[str]]:
    """A heading, the rows and the headers of what the evaluation in `out` wrote (compare.json or report.json)."""
    from tunestack.eval.report import rows_of

    if (out / "compare.json").is_file():
        comparison = json.loads((out / "compare.json").read_text())
        rows = [[r["task"], r["metric"], _num(r["a"]), _num(r["b"]), f"{r['difference']:+.4f}", _num(r["stderr"]),
                 {True: "yes", False: "no", None: "-"}[r["significant"]], r["n"]] for r in comparison["rows"]]
        return f"**A:** {comparison['a']} · **B:** {comparison['b']}", rows, COMPARE_HEADERS
    if (out / "report.json").is_file():
        summary = json.loads((out / "report.json").read_text())
        rows = [[task, name, _num(m["value"]), _num(m.get("stderr")), n] for task, name, m, n in rows_of(summary)]
        return f"Evaluation of {summary['model']} · {out / 'report.md'}", rows, REPORT_HEADERS
    return "", None, REPORT_HEADERS


def _num(value) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def _events_dir(out: Path) -> Path:
    """Where the latest events are: the second model's folder of a comparison, else the first's, else `out`."""
    return next((side for side in (out / "B", out / "A") if events_path(side).is_file()), out)


def build(ctx) -> None:
    with gr.Row():
        model = model_picker(ctx, "eval-model")
        compare_with = model_picker(ctx, "eval-compare", "Compare with (optional)", value=None)
    with gr.Row():
        tasks = gr.Dropdown(list(TASKS), multiselect=True, allow_custom_value=True, label="Tasks", scale=3,
                            info="or type custom_qa:PATH, custom_mcq:PATH, custom_gen:PATH, a tasks .yaml file",
                            elem_id="eval-tasks")
        limit = gr.Number(0, precision=0, label="Limit", info="questions per task (0: all)", elem_id="eval-limit")
        max_new_tokens = gr.Number(0, precision=0, label="max_new_tokens", info="per answer (0: the task's own)",
                                   elem_id="eval-max-new-tokens")
    output = gr.Textbox(label="Output folder", placeholder=f"empty: a new folder under {ctx.runs_root}",
                        elem_id="eval-output")
    with gr.Row():
        run = gr.Button("Evaluate", variant="primary", elem_id="eval-start")
        stop = gr.Button("Stop", elem_id="eval-stop")
    status = gr.Markdown(elem_id="eval-status")
    command = command_box()
    heading = gr.Markdown(elem_id="eval-heading")
    table = gr.Dataframe(headers=REPORT_HEADERS, interactive=False, label="Report", elem_id="eval-report")
    job_id = gr.State(None)
    timer = gr.Timer(1.0, active=False)

    def on_run(*fields):
        try:
            out = output_dir(ctx, fields[-1], "eval")
            job = start_job(ctx, "eval", eval_argv(ctx, *fields[:-1], out), out)
        except TunestackError as exc:
            return None, problem(exc), "", "", None, gr.Timer(active=False)
        return job.id, "**starting**", job.command, "", None, gr.Timer(active=True)

    def on_tick(current):
        job = ctx.jobs.get(current)
        status_text = job_status(job, _events_dir(job.directory))
        if job.alive():
            return status_text, gr.skip(), gr.skip(), gr.Timer(active=True)
        text, rows, headers = report_table(job.directory) if job.status() == "completed" else ("", None, REPORT_HEADERS)
        return status_text, text, gr.Dataframe(rows, headers=headers), gr.Timer(active=False)

    def on_stop(current):
        if current and (job := ctx.jobs.get(current)):
            job.stop(timeout=30)

    run.click(on_run, [model, compare_with, tasks, limit, max_new_tokens, output],
              [job_id, status, command, heading, table, timer])
    timer.tick(on_tick, job_id, [status, heading, table, timer])
    stop.click(on_stop, job_id)
