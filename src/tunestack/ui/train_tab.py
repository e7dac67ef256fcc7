"""The Train tab: a training command's form, its data preview and estimate, and the run it starts (Start, Stop,
Resume), followed live: progress, loss curve and log, refreshed by a timer, found again when the page reopens."""

from __future__ import annotations

import shlex

import gradio as gr

from tunestack.cli.commands import COMMANDS
from tunestack.errors import TunestackError
from tunestack.ui import train_actions as act
from tunestack.ui.train_form import FIELDS, TRAINING_COMMANDS, choices, default, help_text

MARKS = {"trained": "#22c55e", "chosen": "#22c55e", "desirable": "#22c55e", "rejected": "#ef4444",
         "undesirable": "#ef4444", "gold answer": "#3b82f6"}
NUMBERS = {"lora_rank": 0, "num_train_epochs": None, "max_steps": 0, "per_device_train_batch_size": 0,
           "max_length": 0, "logging_steps": 0, "save_steps": 0}
"""Number fields and their decimal places (None: any)."""
LABELS = {"lora_rank": "LoRA rank", "learning_rate": "Learning rate", "num_train_epochs": "Epochs",
          "max_steps": "Max steps", "per_device_train_batch_size": "Batch size", "max_length": "Max length",
          "logging_steps": "Logging steps", "save_steps": "Save steps", "output_dir": "Output dir"}


def build(ctx) -> None:
    inputs, errors = {}, {}

    def with_error(name: str, make):
        with gr.Column(min_width=160):
            inputs[name] = make()
            errors[name] = gr.Markdown(visible=False, elem_classes="field-error", elem_id=f"train-{name}-error")

    with gr.Row():
        with gr.Column(scale=1, min_width=160):
            task = gr.Dropdown(TRAINING_COMMANDS, value="sft", label="Task", info=COMMANDS["sft"].summary,
                               elem_id="train-task")
        with gr.Column(scale=2):
            with_error("model", lambda: gr.Dropdown([default("model")], value=default("model"), label="Model",
                                                    allow_custom_value=True, info=help_text("model"),
                                                    elem_id="train-model"))
        with gr.Column(scale=2):
            with_error("dataset", lambda: gr.Dropdown([], value=None, label="Dataset", allow_custom_value=True,
                                                      info=help_text("dataset"), elem_id="train-dataset"))
            presets = gr.Markdown(visible=False, elem_id="train-presets")
    with gr.Row():
        with_error("tuner", lambda: gr.Dropdown(list(choices("tuner")), value=default("tuner"), label="Tuner",
                                                info=help_text("tuner")))
        with_error("lora_rank", lambda: _number("lora_rank"))
        with_error("learning_rate", lambda: gr.Textbox(label=LABELS["learning_rate"], placeholder="the method's own",
                                                       info=help_text("learning_rate"), elem_id="train-learning_rate"))
        for name in ("num_train_epochs", "max_steps"):
            with_error(name, lambda name=name: _number(name))
    with gr.Row():
        for name in ("per_device_train_batch_size", "max_length"):
            with_error(name, lambda name=name: _number(name))
        with gr.Column(scale=2):
            with_error("output_dir", lambda: gr.Textbox(label=LABELS["output_dir"], info=help_text("output_dir")
                                                        .replace("runs/", f"{ctx.runs_root}/"),
                                                        elem_id="train-output_dir"))
    with gr.Accordion("More settings", open=False):
        with gr.Row():
            for name in ("logging_steps", "save_steps"):
                with_error(name, lambda name=name: _number(name))
            with gr.Column(scale=3):
                more = gr.Textbox(label="More flags", placeholder="--gradient_accumulation_steps 4 --packing",
                                  info="any other flag of the command, as on the command line",
                                  elem_id="train-more")
    with gr.Row():
        preview_btn = gr.Button("Preview data")
        estimate_btn = gr.Button("Estimate")
        start_btn = gr.Button("Start", variant="primary", elem_id="train-start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
        resume_btn = gr.Button("Resume", elem_id="train-resume")
    general = gr.Markdown(visible=False, elem_classes="field-error", elem_id="train-error")
    command = gr.Code(shlex.join(["tunestack", "sft", "--model", default("model")]), label="Command",
                      language="shell", lines=1, max_lines=4, interactive=False, buttons=["copy"], wrap_lines=True,
                      elem_id="train-command")
    status = gr.Markdown("No run started from this page yet.", elem_id="train-status")
    with gr.Row():
        plot = gr.LinePlot(act.empty_losses(), x="step", y="loss", title="Training loss", height=260,
                           elem_id="train-loss")
        log = gr.Textbox(label="Log", lines=12, max_lines=12, autoscroll=True, interactive=False,
                         elem_id="train-log")
    with gr.Accordion("Data preview and estimate", open=False) as details:
        preview = gr.HighlightedText(label="First rows as the trainer sees them (marked: the tokens the loss falls "
                                     "on)", color_map=MARKS, show_legend=True, combine_adjacent=True,
                                     elem_id="train-preview")
        estimate = gr.Code(label="Estimate", language="shell", interactive=False, elem_id="train-estimate")

    job = gr.State(None)
    failure_shown = gr.State(None)
    plotted = gr.State(-1)
    form = [task, *(inputs[name] for name in FIELDS), more]
    error_boxes = [general, *(errors[name] for name in FIELDS)]

    def shown(problems: dict[str, list[str]]) -> list:
        return [gr.update(value="\n\n".join(problems.get(key, [])), visible=bool(problems.get(key)))
                for key in ["", *FIELDS]]

    def started(problems, new, output):
        if new is None:
            return [*shown(problems), gr.skip(), output, gr.skip(), gr.skip()]
        return [*shown(problems), new.id, output, new.command, -1]

    def start(*values):
        return started(*act.start(ctx, values))

    def resume(job_id, *values):
        return started(*act.resume(ctx, job_id, values))

    def stop(job_id):
        return act.stop(ctx, job_id)

    def show_preview(task, model, dataset, max_length):
        try:
            return [*shown({}), act.preview(ctx, task, model, dataset, max_length), gr.update(open=True)]
        except TunestackError as exc:
            return [*shown(act.field_problems(exc, "dataset")), gr.skip(), gr.skip()]

    def run_estimate(*values):
        return [act.estimate(ctx, values), gr.update(open=True)]

    def tick(job_id, failure, seen):
        return act.tick(ctx, job_id, failure, seen, shown)

    def opened():
        job_id = act.latest_job(ctx)
        found = ctx.jobs.get(job_id) if job_id else None
        return [job_id, *act.form_updates(ctx, found), found.command if found else gr.skip()]

    task.change(lambda t: gr.update(info=COMMANDS[t].summary), task, task, show_progress="hidden")
    for component in (task, inputs["dataset"]):
        component.change(lambda t, d: gr.update(value=(note := act.presets_note(t, d)), visible=bool(note)),
                         [task, inputs["dataset"]], presets, show_progress="hidden")
    for component in form:
        component.change(lambda *v: act.form_command(ctx, v), form, command, show_progress="hidden")
    start_btn.click(start, form, [*error_boxes, job, inputs["output_dir"], command, plotted])
    resume_btn.click(resume, [job, *form], [*error_boxes, job, inputs["output_dir"], command, plotted])
    stop_btn.click(stop, job, status)
    preview_btn.click(show_preview, [task, inputs["model"], inputs["dataset"], inputs["max_length"]],
                      [*error_boxes, preview, details])
    estimate_btn.click(run_estimate, form, [estimate, details])
    gr.Timer(1.0).tick(tick, [job, failure_shown, plotted], [status, plot, log, *error_boxes, failure_shown, plotted],
                       show_progress="hidden")
    gr.on(None, opened, None, [job, *form, command])


def _number(name: str):
    return gr.Number(value=default(name), label=LABELS[name], info=help_text(name), precision=NUMBERS[name],
                     elem_id=f"train-{name}")
