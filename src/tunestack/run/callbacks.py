"""Trainer callbacks that keep the run directory current (metrics, sealed checkpoints, progress events, plot) and
stop the run cleanly when asked."""

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
        if state.is_world_process_zero:
            from tunestack.train.lifecycle import say
            from tunestack.train.startup import describe, startup_seconds

            parts = startup_seconds()
            self.run.update(startup_seconds=parts)
            say(describe(parts))

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


FIGURES = ("loss", "learning_rate", "rewards/margins", "rewards/accuracies", "accuracy", "reward", "kl",
           "eval_loss", "eval_accuracy", "eval_rewards/accuracies")
"""What a training progress event carries beside the step: the loss and the method's headline figures, as logged."""


class ProgressEvents(TrainerCallback):
    """The "train" phase as progress events (rank 0): a start with the step to reach and the step it resumes from,
    then one small event per optimizer step with tokens/s and the learning rate, and on logging steps the loss and
    the method's own figures (DPO's margins, GRPO's reward and KL, ...). The terminal bar is drawn from them."""

    def __init__(self, progress):
        self.progress = progress
        self._pending: tuple[int, dict] | None = None  # a logging step's event, waiting for its log
        self._began = (0.0, 0)
        self._logged_tokens: tuple[float, int] | None = None  # TRL's own running count, first seen
        self._speed: float | None = None
        self._rate: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.start("train", total=state.max_steps, step=state.global_step, unit="step")
        self._began = (time.perf_counter(), state.num_input_tokens_seen)

    def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self._rate = _learning_rate(lr_scheduler)  # the rate this step uses; the scheduler moves on before its end

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._flush()
        figures = {"learning_rate": self._rate}
        began, tokens = self._began
        if state.num_input_tokens_seen > tokens:
            self._speed = (state.num_input_tokens_seen - tokens) / max(time.perf_counter() - began, 1e-9)
        self._pending = (state.global_step, figures)
        if not control.should_log:  # no log comes for this step: its event goes now
            self._flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "num_tokens" in logs and not state.num_input_tokens_seen:  # TRL's trainers count tokens as they log
            now, seen = time.perf_counter(), int(logs["num_tokens"])
            if self._logged_tokens is None:
                self._logged_tokens = (now, seen)
            elif seen > self._logged_tokens[1]:
                self._speed = (seen - self._logged_tokens[1]) / max(now - self._logged_tokens[0], 1e-9)
        figures = {key: logs[key] for key in FIGURES if key in logs}
        if self._pending is not None and self._pending[0] == state.global_step:
            self._pending[1].update(figures)
            self._flush()
        elif any(key.startswith("eval_") for key in figures):  # an evaluation between two steps
            self.progress.step(state.global_step, **figures)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._flush()
            self.progress.message(f"saved checkpoint-{state.global_step}")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._flush()

    def _flush(self) -> None:
        if self._pending is not None:
            step, figures = self._pending
            self._pending = None
            self.progress.step(step, tokens_per_s=round(self._speed, 1) if self._speed else None, **figures)


def _learning_rate(scheduler) -> float | None:
    try:
        return float(scheduler.get_last_lr()[0])
    except (AttributeError, IndexError, TypeError, ValueError):  # DeepSpeed's stand-in scheduler, or none
        return None


class StopAtStepEnd(TrainerCallback):
    """Reads the stop request (train/stopping.py) at each optimizer step's end: once set, in any process of the run,
    the Trainer saves a checkpoint and stops. `say` tells the user."""

    def __init__(self, stop, say):
        self.stop = stop
        self.say = say

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop.agreed(args.device) and not control.should_training_stop:
            control.should_save = True
            control.should_training_stop = True
            self.say(f"SIGTERM: stopping after step {state.global_step}, saving checkpoint-{state.global_step}")
