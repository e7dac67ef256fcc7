"""Graceful shutdown: on SIGTERM (or Ctrl-C) the server drains instead of stopping. /health answers 503
"draining" and new requests get 503 while running ones finish, for at most the drain timeout; then open streams end
with a final error event, unfinished requests get 503, and the process exits 0. A second signal skips the wait; a
third Ctrl-C stops at once."""

from __future__ import annotations

import signal
import sys
import time

import uvicorn

_GRACE_S = 5.0
"""After cutting requests off, how long their final events may take to go out before the server stops anyway."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining `serving` on SIGINT / SIGTERM before it stops."""

    def __init__(self, config: uvicorn.Config, serving, drain_timeout: float):
        super().__init__(config)
        self.serving = serving
        self.drain_timeout = drain_timeout
        self.drain_deadline: float | None = None
        self.cut_at: float | None = None
        self.signals = 0

    def handle_exit(self, sig: int, frame) -> None:  # runs in the main thread, between two steps of the event loop
        self.signals += 1  # not recorded in uvicorn's list, which it would raise again on exit (status 143, not 0)
        if self.signals == 1:
            self.serving.draining = True
            self.drain_deadline = time.monotonic() + self.drain_timeout
            print(f"draining: {self.serving.in_flight} requests running, finishing them for at most "
                  f"{self.drain_timeout:g} s (--drain_timeout); signal again to stop sooner", file=sys.stderr,
                  flush=True)
        elif self.signals == 2:
            self.drain_deadline = time.monotonic()
        elif sig == signal.SIGINT:
            self.should_exit = self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            self.should_exit = self._drained()
        return await super().on_tick(counter)

    def _drained(self) -> bool:
        """Whether the drain is over: nothing left running, or cut off and given its grace to say so."""
        if self.serving.in_flight == 0:
            return True
        now = time.monotonic()
        if now < self.drain_deadline:
            return False
        if self.cut_at is None:
            print(f"draining: cutting off {self.serving.in_flight} unfinished requests", file=sys.stderr, flush=True)
            self.serving.cut_off()
            self.cut_at = now
        return now > self.cut_at + _GRACE_S
