"""Trainer callbacks that keep the run directory current: metrics, sealed checkpoints, progress bar, plot."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from tunestack.run.plot import plot_loss
from tunestack.run.rundir import RunDir


def _memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss() / 2**20


def peak_rss() -> int:
    """Peak resident bytes of this process's own memory since it started.

    On Linux, VmHWM: getrusage's ru_maxrss would also count the parent's pages that the child saw between fork and
    exec, so a run started from a large process (a test session, a notebook) would report that process's size."""
    import resource

    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


_NOT_METRICS = {"epoch", "step", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
                "num_input_tokens_seen", "train_tokens_per_second",  # tokens_seen and tokens_per_s say it
                "num_tokens"}  # TRL's own running count, which restarts at 0 on --resume


class RunDirCallback(TrainerCallback):
    """Appends each log to metrics.jsonl, seals checkpoints once written, and plots the loss at the end."""

    def __init__(self, run: RunDir, keep: int):
        self.run = run
        self.keep = keep
        self._last = (time.perf_counter(), 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not state.is_world_process_zero or ("loss" not in logs and "eval_loss" not in logs):
            return
        # TRL's trainers count the tokens they train on themselves, as a running `num_tokens`.
        now, tokens = time.perf_counter(), state.num_input_tokens_seen or int(logs.get("num_tokens", 0))
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
        # Every figure the method logs (DPO's rewards and margins, GRPO's reward spread, ...), not only the loss.
        record.update({k: v for k, v in logs.items() if k not in _NOT_METRICS and isinstance(v, (int, float))})
        if "loss" in logs and tokens:
            record["tokens_per_s"] = round((tokens - self._last[1]) / max(now - self._last[0], 1e-9), 1)
            record["tokens_seen"] = tokens
            record["memory_mb"] = round(_memory_mb(), 1)
            self._last = (now, tokens)
        self.run.append_metrics(record)

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        _barrier()  # every process has written its part (sharded engines write one each)
        if state.is_world_process_zero and checkpoint.is_dir():
            self.run.mark_checkpoint_complete(checkpoint, state.global_step, self.keep)
        _barrier()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_loss(self.run.read_metrics(), self.run.path / "loss.png")


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


HEADLINE = ("rewards/margins", "rewards/accuracies", "accuracy", "reward", "kl")
"""Figures the progress bar shows beside the loss when a method logs them."""


class ProgressBar(TrainerCallback):
    """One tqdm bar on stderr showing step, loss, tokens/s and the time left."""

    def __init__(self):
        self.bar = None
        self._start = (0.0, 0)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                        file=sys.stderr, dynamic_ncols=True)
        self._start = (time.perf_counter(), state.num_input_tokens_seen)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "loss" not in logs:
            return
        elapsed = max(time.perf_counter() - self._start[0], 1e-9)
        speed = (state.num_input_tokens_seen - self._start[1]) / elapsed
        shown = {"loss": f"{logs['loss']:.4f}"}
        shown.update({key.rsplit("/", 1)[-1]: f"{logs[key]:.3f}" for key in HEADLINE if key in logs})
        if speed:
            shown["tok_s"] = f"{speed:,.0f}"
        self.bar.set_postfix(shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
