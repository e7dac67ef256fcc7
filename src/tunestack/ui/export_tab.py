"""The Export tab: `tunestack export` as a job, its progress from the events, then the export's size on disk and
the perplexity change export.json reports."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import gradio as gr

from tunestack.config import ExportArgs
from tunestack.errors import TunestackError
from tunestack.ui.widgets import command_box, job_status, model_flag, model_picker, output_dir, problem, start_job

NO_QUANT = "none"
QUANTS = next(f.metadata["choices"] for f in fields(ExportArgs) if f.name == "quant")


def export_argv(ctx, model, merge: bool, quant: str, to: str, out: Path) -> list[str]:
    argv = ["export", "--model", model_flag(ctx, model), "--output_dir", str(out)]
    if not merge:
        argv += ["--merge", "false"]
    if quant and quant != NO_QUANT:
        argv += ["--quant", quant]
    return argv + (["--to", to] if to != "hf" else [])


def summary(out: Path) -> str:
    """Markdown: the folder, its size on disk, and the perplexity before and after when export.json has it."""
    if not out.is_dir():
        return ""
    files = [p for p in out.rglob("*") if p.is_file()]
    lines = [f"**{out}**: {_size(sum(p.stat().st_size for p in files))} on disk in {len(files)} files"]
    record_path = out / "export.json"
    ppl = json.loads(record_path.read_text()).get("perplexity") if record_path.is_file() else None
    if ppl:
        lines.append(f"perplexity on {ppl['text']} ({ppl['tokens']} tokens): source {ppl['source']:.4f}, "
                     f"export {ppl['export']:.4f} ({ppl['change_pct']:+.2f}%)")
    return "\n\n".join(lines)


def _size(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            break
    return f"{n:.1f} {unit}"


def build(ctx) -> None:
    model = model_picker(ctx, "export-model")
    with gr.Row():
        merge = gr.Checkbox(True, label="Merge adapters", info="into the weights: a plain Hugging Face model")
        quant = gr.Dropdown([NO_QUANT, *QUANTS], value=NO_QUANT, label="Quantize", elem_id="export-quant")
        to = gr.Radio(["hf", "gguf"], value="hf", label="Format", elem_id="export-to")
    output = gr.Textbox(label="Output folder", placeholder=f"empty: a new folder under {ctx.runs_root}",
                        elem_id="export-output")
    with gr.Row():
        run = gr.Button("Export", variant="primary", elem_id="export-start")
        stop = gr.Button("Stop", elem_id="export-stop")
    status = gr.Markdown(elem_id="export-status")
    command = command_box()
    result = gr.Markdown(elem_id="export-result")
    job_id = gr.State(None)
    timer = gr.Timer(1.0, active=False)

    def on_run(model_text, merge_on, quant_name, fmt, out_text):
        try:
            out = output_dir(ctx, out_text, "export")
            job = start_job(ctx, "export", export_argv(ctx, model_text, merge_on, quant_name, fmt, out), out)
        except TunestackError as exc:
            return None, problem(exc), "", "", gr.Timer(active=False)
        return job.id, "**starting**", job.command, "", gr.Timer(active=True)

    def on_tick(current):
        job = ctx.jobs.get(current)
        if job.alive():
            return job_status(job, job.directory), gr.skip(), gr.Timer(active=True)
        done = job.status() == "completed"
        return job_status(job, job.directory), summary(job.directory) if done else "", gr.Timer(active=False)

    def on_stop(current):
        if current and (job := ctx.jobs.get(current)):
            job.stop(timeout=30)

    run.click(on_run, [model, merge, quant, to, output], [job_id, status, command, result, timer])
    timer.tick(on_tick, job_id, [status, result, timer])
    stop.click(on_stop, job_id)
