"""A clean stop on SIGTERM: the run finishes its optimizer step, saves a sealed checkpoint and ends `interrupted`.

The web UI and the wizard stop a run by sending SIGTERM to its process group; so do schedulers (Slurm, Kubernetes)
before they kill. `StopRequest` turns the signal into a flag while the Trainer runs, and the run's callback
`StopAtStepEnd` (run/callbacks.py) reads it at the next optimizer step's end and asks the Trainer to save and stop, so
the checkpoint is written by the Trainer's own saving, like every other, and `--resume` continues from it without
losing a step. Nothing heavy is imported here.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

EXIT_CODE = 143
"""The exit code of a command stopped by SIGTERM: 128 + 15, what a shell reports for a process that SIGTERM ended.
Supervisors (the UI, systemd, Kubernetes, Slurm) read it as "stopped on request", and it keeps apart a run stopped by
SIGTERM from one interrupted with Ctrl-C, which exits with 130 (128 + SIGINT)."""


class Terminated(KeyboardInterrupt):
    """The command stopped because it received SIGTERM. A KeyboardInterrupt, so that every `except KeyboardInterrupt`
    treats it as the interruption it is; `tunestack` exits with `exit_code`."""

    exit_code = EXIT_CODE

    def __init__(self, message: str = "stopped on SIGTERM"):
        super().__init__(message)


class StopRequest:
    """While entered (in the main thread; elsewhere signals cannot be handled and it does nothing), SIGTERM sets
    `requested`. Inside `at_step_ends()` that is all it does, and the Trainer stops at the next step's end; outside it
    (loading data or the model, evaluating after training) it raises `Terminated` at once, as Ctrl-C would.

    Another SIGTERM while stopping changes nothing: torchrun forwards the signal its process group got to each worker
    that got it already, and a checkpoint being written is left to finish. Ctrl-C (SIGINT) still interrupts at once;
    a checkpoint it cuts short is never sealed, so --resume drops it and continues from the last sealed one."""

    def __init__(self):
        self.requested = False
        self._graceful = False
        self._installed = False
        self._previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            return
        self.requested = True
        if not self._graceful:
            raise Terminated()

    @contextmanager
    def at_step_ends(self):
        """SIGTERM waits for the end of the current optimizer step while this is entered."""
        if self.requested:
            raise Terminated()
        self._graceful = True
        try:
            yield self
        finally:
            self._graceful = False

    def agreed(self, device) -> bool:
        """Whether any process of the run was asked to stop. Every process of a multi-process run calls this at the
        same step's end, and they stop together; the signal may reach them a step apart."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.requested
        import torch

        flag = torch.tensor([int(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.requested = bool(flag.item())
        return self.requested
