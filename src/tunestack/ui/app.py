"""`tunestack ui`: the Gradio app (one tab per part of a model's life) and its launch on a checked address."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
import sys
from importlib import import_module
from pathlib import Path

from tunestack.config import UiArgs
from tunestack.errors import ConfigError, MissingExtraError, TunestackError
from tunestack.ui.context import UiContext

TABS = (("Train", "train_tab"), ("Chat", "chat_tab"), ("Evaluate", "eval_tab"), ("Export", "export_tab"),
        ("Serve", "serve_tab"), ("Runs", "runs_tab"))
CSS = """
.field-error { color: var(--error-text-color, #b91c1c); font-size: 0.9em; }
.field-error:empty { display: none; }
"""


def build_app(ctx: UiContext):
    """The Blocks of the whole UI: each tab module's `build(ctx)` fills its own `gr.Tab`."""
    import gradio as gr

    with gr.Blocks(title="tunestack", analytics_enabled=False) as demo:
        gr.Markdown("## tunestack\nEvery action runs a `tunestack` command, shown beside it ready to copy. "
                    f"Runs go to `{ctx.runs_root}`.")
        with gr.Tabs():
            for title, module in TABS:
                with gr.Tab(title, id=module.removesuffix("_tab")):
                    import_module(f"tunestack.ui.{module}").build(ctx)
    return demo


def run_ui(args: UiArgs) -> None:
    """Check the address, access and folders, then serve the UI until Ctrl-C."""
    if importlib.util.find_spec("gradio") is None:  # found, not imported: a bad flag is reported at once
        raise MissingExtraError("gradio", "ui", "the web UI")
    auth = read_auth(args.auth, args.auth_file)
    if not auth and (args.share or not is_loopback(args.host)):
        where = "a public share link" if args.share else f"{args.host}:{args.port}"
        print(f"tunestack ui: warning: serving on {where} without --auth: anyone who can reach it can run commands "
              "on this machine and read the files in --allowed_paths; pass --auth USER:PASSWORD", file=sys.stderr,
              flush=True)
    missing = [p for p in args.allowed_paths if not Path(p).expanduser().is_dir()]
    if missing:
        raise ConfigError([f"--allowed_paths: {p} is not a folder" for p in missing])
    check_port_free(args.host, args.port)
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    ctx = UiContext(runs_root=runs, allowed_paths=[Path(p) for p in args.allowed_paths])
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth or None,
                show_error=True, ssr_mode=False, mcp_server=False, theme="soft", css=CSS,
                footer_links=["gradio", "settings"])


def read_auth(auth: str | None, auth_file: str | None) -> list[tuple[str, str]]:
    """The accepted (user, password) pairs from --auth USER:PASSWORD and the lines of --auth_file."""
    entries = [("--auth", auth)] if auth else []
    if auth_file:
        try:
            lines = Path(auth_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError([f"--auth_file {auth_file}: cannot read it ({exc.strerror})"]) from None
        entries += [(f"--auth_file {auth_file}, line {n}", line.strip()) for n, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#")]
    pairs, problems = [], []
    for where, text in entries:
        user, colon, password = text.partition(":")
        if not (user and colon and password):
            problems.append(f"{where}: expected USER:PASSWORD")
        pairs.append((user, password))
    if problems:
        raise ConfigError(problems)
    return pairs


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line error when `host:port` cannot be bound (another server holds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise TunestackError(f"--port {port}: {host}:{port} is already in use; stop what holds it or pass "
                                     "another --port") from None
            raise TunestackError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
