"""Argument group of `tunestack ui`: where the web UI listens, who may use it and which files it may read."""

from __future__ import annotations

from dataclasses import dataclass

from tunestack.config.args import PORT, arg


@dataclass
class UiArgs:
    """The web UI: address, access and the folders it may read."""

    host: str = arg("127.0.0.1", "address to bind; anything but loopback exposes the UI (and every command it runs) "
                    "to the network, so give --auth with it")
    port: int = arg(7860, "port to listen on", check=PORT)
    share: bool = arg(False, "also open a public link through Gradio's share servers (give --auth with it)")
    auth: str | None = arg(None, "USER:PASSWORD required to open the UI")
    auth_file: str | None = arg(None, "file of accepted USER:PASSWORD lines (with or instead of --auth)")
    allowed_paths: list[str] = arg(
        [], "folders whose files the UI's path fields and pickers may read, besides --runs_dir (default: the "
        "working folder)")
    runs_dir: str = arg("runs", "folder runs started from the UI go to, and that the Runs tab lists")
