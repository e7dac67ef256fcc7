"""The Chat tab: streaming replies from a run or model, which runs in a `tunestack serve` job on a loopback port
(started on the first message, reused after), read with the `openai` client; beside it the same chat as a
`tunestack infer` command."""

from __future__ import annotations

import time

import gradio as gr

from tunestack.errors import TunestackError
from tunestack.message_text import content_text
from tunestack.ui.serve_tab import flag, ready, server_url, start_server
from tunestack.ui.widgets import cli_command, command_box, job_status, model_flag, model_picker, problem

START_TIMEOUT_S = 600


def infer_argv(model: str, system: str, temperature: float, top_p: float, max_new_tokens: int) -> list[str]:
    argv = ["infer", "--model", model]
    if (system or "").strip():
        argv += ["--system", system]
    return argv + ["--temperature", f"{temperature:g}", "--top_p", f"{top_p:g}",
                   "--max_new_tokens", str(int(max_new_tokens))]


def chat_server(ctx, model: str):
    """The running chat server of `model`, or a new one (chat servers of other models are stopped first: the
    page chats with one model at a time)."""
    for job in ctx.jobs.running("chat"):
        if flag(job.argv, "--model") == model:
            return job
        job.stop(timeout=30)
    return start_server(ctx, "chat", model)


def _messages(system: str, history: list[dict]) -> list[dict]:
    """The conversation as the OpenAI API takes it (the Chatbot hands content over as text parts)."""
    system_turn = [{"role": "system", "content": system}] if (system or "").strip() else []
    return system_turn + [{"role": m["role"], "content": content_text(m["content"])} for m in history]


def build(ctx) -> None:
    with gr.Row():
        model = model_picker(ctx, "chat-model")
        system = gr.Textbox(label="System prompt", lines=2, scale=2, elem_id="chat-system")
    with gr.Row():
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature", info="0: greedy")
        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top_p")
        max_new_tokens = gr.Number(256, precision=0, label="max_new_tokens",
                                   elem_id="chat-max-new-tokens")
    chatbot = gr.Chatbot(label="Chat", height=380, elem_id="chat-history")
    message = gr.Textbox(label="Message", placeholder="Type and press Enter", elem_id="chat-message")
    send = gr.Button("Send", variant="primary")
    status = gr.Markdown(elem_id="chat-status")
    settings = [model, system, temperature, top_p, max_new_tokens]

    def show_command(model_text, system_text, temp, p, tokens):
        return cli_command(infer_argv((model_text or "").strip() or "MODEL", system_text, temp, p, tokens or 0))

    command = command_box("The same chat in a terminal", show_command(*(c.value for c in settings)))

    def reply(text, history, model_text, system_text, temp, p, tokens):
        history = list(history or [])
        if not (text or "").strip():
            yield text, history, ""
            return
        try:
            model_name = model_flag(ctx, model_text)
            job = chat_server(ctx, model_name)
        except TunestackError as exc:
            yield text, history, problem(exc)
            return
        history.append({"role": "user", "content": text})
        yield "", history, "" if ready(job) else f"starting the model: `{job.command}`"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready(job):
            if not job.alive() or time.monotonic() > deadline:
                yield "", history, job_status(job)
                return
            time.sleep(0.5)
        yield from _stream(job, model_name, _messages(system_text, history), history,
                           dict(temperature=temp, top_p=p, max_tokens=int(tokens or 0)))

    gr.on([c.change for c in settings], show_command, settings, command)
    gr.on([message.submit, send.click], reply, [message, chatbot, *settings], [message, chatbot, status])
    chatbot.clear(lambda: "", outputs=status)


def _stream(job, model: str, messages: list[dict], history: list[dict], sampling: dict):
    """Yield (message box, history, status) as the answer's tokens arrive."""
    import openai

    client = openai.OpenAI(base_url=server_url(job) + "/v1", api_key="none", max_retries=0)
    answer = ""
    try:
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **sampling):
            if chunk.choices and chunk.choices[0].delta.content:
                answer += chunk.choices[0].delta.content
                yield "", [*history, {"role": "assistant", "content": answer}], ""
    except openai.APIError as exc:
        yield "", [*history, {"role": "assistant", "content": answer}], problem(getattr(exc, "message", exc))
        return
    yield "", [*history, {"role": "assistant", "content": answer}], ""
