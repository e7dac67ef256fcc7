"""The Serve tab: `tunestack serve` as a job, its status, URL and ready-to-copy client snippets, and Stop.

The Chat tab runs its model through the same functions (`start_server`, `server_url`, `ready`)."""

from __future__ import annotations

import json
import shlex

import gradio as gr

from tunestack.errors import TunestackError
from tunestack.ui.widgets import command_box, free_port, job_status, model_flag, model_picker, problem, start_job

HOST = "127.0.0.1"


def start_server(ctx, kind: str, model: str, port: int | None = None):
    """Start `tunestack serve --model MODEL --port PORT` (a free port when none is given) as a job of `kind`."""
    argv = ["serve", "--model", model, "--host", HOST, "--port", str(port or free_port())]
    return start_job(ctx, kind, argv)


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def server_url(job) -> str:
    return f"http://{flag(job.argv, '--host') or HOST}:{flag(job.argv, '--port') or 8000}"


def ready(job) -> bool:
    """Whether the job's server answers /v1/models with its model (not some other server on the same port)."""
    import httpx

    try:
        listed = httpx.get(server_url(job) + "/v1/models", timeout=1.0).json().get("data", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return any(entry.get("id") == flag(job.argv, "--model") for entry in listed if isinstance(entry, dict))


def snippets(url: str, model: str) -> tuple[str, str]:
    """A `curl` command and a Python `openai` script that ask the server one question."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    curl = (f"curl {url}/v1/chat/completions \\\n  -H 'Content-Type: application/json' \\\n"
            f"  -d {shlex.quote(body)}")
    python = (f'from openai import OpenAI\n\nclient = OpenAI(base_url="{url}/v1", api_key="none")\n'
              f"reply = client.chat.completions.create(\n    model={json.dumps(model)},\n"
              '    messages=[{"role": "user", "content": "Hello!"}],\n)\nprint(reply.choices[0].message.content)\n')
    return curl, python


def _view(job) -> tuple:
    """status, command, URL, curl, python and whether to keep polling, for the server `job` (None: no server)."""
    if job is None:
        return "No server running.", "", "", "", "", False
    url = server_url(job)
    curl, python = snippets(url, flag(job.argv, "--model"))
    if not job.alive():
        return "**stopped**" if job.stopped else job_status(job), job.command, url, curl, python, False
    status = f"**ready** at {url}/v1" if ready(job) else "**loading the model…**"
    return status, job.command, url, curl, python, True


def build(ctx) -> None:
    with gr.Row():
        model = model_picker(ctx, "serve-model")
        port = gr.Number(0, precision=0, label="Port", info="0: a free port",
                         elem_id="serve-port")
    with gr.Row():
        start = gr.Button("Start server", variant="primary", elem_id="serve-start")
        stop = gr.Button("Stop", elem_id="serve-stop")
    status = gr.Markdown(elem_id="serve-status")
    command = command_box()
    url = gr.Textbox(label="URL", interactive=False, buttons=["copy"], elem_id="serve-url")
    with gr.Row():
        curl = gr.Code(label="curl", language="shell", interactive=False, wrap_lines=True)
        python = gr.Code(label="Python (openai)", language="python", interactive=False, wrap_lines=True)
    job_id = gr.State(None)
    timer = gr.Timer(1.0)  # the first tick finds a server started earlier (another page, a reload)
    shown = [status, command, url, curl, python]

    def on_start(model_text, port_number):
        try:
            job = start_server(ctx, "serve", model_flag(ctx, model_text), int(port_number or 0))
        except TunestackError as exc:
            return None, problem(exc), "", "", "", "", gr.Timer(active=False)
        *view, polling = _view(job)
        return job.id, *view, gr.Timer(active=polling)

    def on_tick(current):
        job = ctx.jobs.get(current) if current else next(iter(ctx.jobs.running("serve")), None)
        *view, polling = _view(job)
        return (job.id if job else None), *view, gr.Timer(active=polling)

    def on_stop(current):
        job = ctx.jobs.get(current) if current else None
        if job is not None:
            job.stop(timeout=30)
        *view, _ = _view(job)
        return (*view, gr.Timer(active=False))

    start.click(on_start, [model, port], [job_id, *shown, timer])
    timer.tick(on_tick, job_id, [job_id, *shown, timer])
    stop.click(on_stop, job_id, [*shown, timer])
