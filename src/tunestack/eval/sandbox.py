"""Run model-written programs (humaneval) in a subprocess: own temp folder, time and memory limits, no network."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

MEMORY_LIMIT = 2 * 1024 ** 3
"""Address space each program may use, in bytes."""
NO_SOCKETS = (
    "import socket as _s\n"
    "def _no_network(*args, **kwargs):\n    raise OSError('network access is disabled in the evaluation sandbox')\n"
    "_s.socket = _s.create_connection = _s.socketpair = _no_network\ndel _s\n"
)
"""Prepended to each program where no network namespace is available: sockets cannot be opened."""


@functools.cache
def isolation() -> str:
    """How programs are kept off the network: a fresh network namespace (unshare) where the kernel allows it,
    else sockets disabled inside the program."""
    unshare = shutil.which("unshare")
    if unshare and sys.platform.startswith("linux"):
        try:
            ok = subprocess.run([unshare, "--net", "--map-root-user", "true"], capture_output=True, timeout=10)
            if ok.returncode == 0:
                return "network namespace"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "sockets disabled"


def _limits() -> None:  # runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_program(source: str, timeout: float) -> tuple[bool, str]:
    """(passed, what happened): the program passes when it exits 0 within `timeout` seconds."""
    mode = isolation()
    with tempfile.TemporaryDirectory(prefix="tunestack-sandbox-") as folder:
        path = os.path.join(folder, "program.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write((NO_SOCKETS if mode == "sockets disabled" else "") + source)
        command = [sys.executable, "-I", "-B", path]
        if mode == "network namespace":
            command = [shutil.which("unshare"), "--net", "--map-root-user"] + command
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0", "HOME": folder}
        process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True,
                                   preexec_fn=_limits if sys.platform != "win32" else None)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return False, f"timed out after {timeout:g} s"
    if process.returncode == 0:
        return True, "passed"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {process.returncode}"
    return False, f"failed: {last}"


def score_code(docs, contexts: list[str], outputs: list[str | None], timeout: float) -> list[dict]:
    """pass@1 per problem: the prompt, the completion and the problem's tests run as one program."""
    def one(item):
        doc, context, output = item
        sample = {"prompt": context, "raw": output, "gold": doc.target, "task_id": doc.extra.get("task_id"),
                  "sandbox": isolation()}
        if output is None:
            return {**sample, "error": "request failed"}
        passed, result = run_program(f"{doc.text}{output}\n\n{doc.target}\n", timeout)
        return {**sample, "result": result, "pass@1": float(passed)}

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, zip(docs, contexts, outputs)))
