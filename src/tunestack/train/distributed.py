"""Several training processes: relaunch a command under torchrun, rank-0 helpers, and the engine options
(DDP, FSDP2, DeepSpeed ZeRO) the Trainer takes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from importlib import resources
from pathlib import Path

from tunestack.config import ParallelArgs, TrainArgs, TunerArgs
from tunestack.errors import ConfigError, MissingExtraError

ZERO_PRESETS = ("zero1", "zero2", "zero3", "zero3_offload")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def in_worker() -> bool:
    """Whether this process is one that torchrun started."""
    return "LOCAL_RANK" in os.environ


def needs_launch(parallel: ParallelArgs) -> bool:
    """True in the command the user typed when it asks for several processes (or DeepSpeed, which always runs
    under a launcher); False inside torchrun's workers."""
    wanted = parallel.nproc > 1 or parallel.nnodes > 1 or parallel.deepspeed is not None
    return wanted and not in_worker()


def use_cpu_deepspeed(parallel: ParallelArgs) -> None:
    """DeepSpeed picks its accelerator from DS_ACCELERATOR; without a GPU that is its CPU accelerator."""
    import torch

    if parallel.deepspeed and not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    """End this worker's part in the process group once every rank is done: a group left to the interpreter's exit
    can abort a rank in its C++ teardown (exit code -6) after the run has already completed."""
    import torch.distributed as dist

    if in_worker() and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def from_main(make):
    """`make()` on rank 0, its result sent to every rank (data is tokenized once, not once per process)."""
    if world_size() == 1:
        return make()
    import torch.distributed as dist

    start_process_group()
    box = [make() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def start_process_group() -> None:
    """Join the process group now (the Trainer would later), with gloo on CPU and NCCL on GPUs."""
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def parallel_problems(parallel: ParallelArgs, tuner: TunerArgs, train: TrainArgs) -> list[str]:
    """Flags that cannot work together, or on this machine; each names the flags and their values."""
    import importlib.util

    problems = []
    if parallel.fsdp and parallel.deepspeed:
        problems.append(f"--fsdp and --deepspeed {parallel.deepspeed}: choose one engine")
    if parallel.tp > 1 and parallel.tp != parallel.nproc * parallel.nnodes:
        problems.append(f"--tp {parallel.tp}: tensor parallelism spans every process; set --nproc {parallel.tp} "
                        f"(now {parallel.nproc} on {parallel.nnodes} machine(s))")
    import torch

    if parallel.tp > 1 and not torch.cuda.is_available():
        problems.append(f"--tp {parallel.tp}: tensor-parallel training runs on GPUs only (accelerate has no CPU "
                        "tensor parallelism); on CPU use --nproc with DDP or --fsdp")
    if parallel.tp > 1 and (parallel.fsdp or parallel.deepspeed or tuner.tuner == "qlora"):
        problems.append(f"--tp {parallel.tp}: not combined with --fsdp, --deepspeed or --tuner qlora here")
    if parallel.fsdp_offload and not parallel.fsdp:
        problems.append("--fsdp_offload: only with --fsdp")
    if parallel.node_rank >= parallel.nnodes:
        problems.append(f"--node_rank {parallel.node_rank}: expected less than --nnodes {parallel.nnodes}")
    devices = _devices()
    if parallel.nproc > devices[0]:
        problems.append(f"--nproc {parallel.nproc}: this machine has {devices[0]} {devices[1]}; use at most "
                        f"{devices[0]}")
    if parallel.deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise MissingExtraError("deepspeed", "deepspeed", f"--deepspeed {parallel.deepspeed}")
        config, source = deepspeed_config(parallel.deepspeed)
        if config is None:
            problems.append(source)
        else:
            stage = config.get("zero_optimization", {}).get("stage", 0)
            if stage == 3 and tuner.tuner == "qlora":
                problems.append(f"--deepspeed {parallel.deepspeed} (ZeRO-3) with --tuner qlora: a 4-bit base cannot "
                                "be sharded by ZeRO-3; use --deepspeed zero2 or --tuner lora")
            problems += _contradictions(config, source, train)
    if parallel.fsdp and tuner.tuner == "qlora":
        problems.append("--fsdp with --tuner qlora: not supported here; use --tuner lora or DDP")
    return problems


def _devices() -> tuple[int, str]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA GPUs"
    return os.cpu_count() or 1, "CPU cores"


def deepspeed_config(name: str) -> tuple[dict | None, str]:
    """(the DeepSpeed config, where it came from), or (None, the problem) for a file that does not parse."""
    if name in ZERO_PRESETS:
        text = resources.files("tunestack.train").joinpath(f"deepspeed/{name}.json").read_text()
        return json.loads(text), f"--deepspeed {name}"
    path = Path(name).expanduser()
    if not path.is_file():
        return None, f"--deepspeed {name}: expected one of {', '.join(ZERO_PRESETS)} or a JSON file"
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return None, f"--deepspeed {name}: not valid JSON (line {exc.lineno}: {exc.msg})"
    if not isinstance(config, dict):
        return None, f"--deepspeed {name}: expected a JSON object"
    return config, f"--deepspeed {name}"


def _contradictions(config: dict, source: str, train: TrainArgs) -> list[str]:
    """Values the DeepSpeed file fixes that differ from the run's flags (an `auto` value is filled from the flag)."""
    pairs = [("train_micro_batch_size_per_gpu", "per_device_train_batch_size", train.per_device_train_batch_size),
             ("gradient_accumulation_steps", "gradient_accumulation_steps", train.gradient_accumulation_steps),
             ("gradient_clipping", "max_grad_norm", train.max_grad_norm)]
    problems = []
    for key, flag, value in pairs:
        if key in config and config[key] != "auto" and config[key] != value:
            problems.append(f"{source} sets {key}={config[key]} but --{flag} is {value}; make them agree or set "
                            f"{key} to \"auto\"")
    return problems


def engine_options(parallel: ParallelArgs, train: TrainArgs, layer_class: str | None) -> dict:
    """The TrainingArguments fields selecting the engine: DDP (nothing to set), FSDP2, or DeepSpeed."""
    import torch

    options = {}
    if world_size() > 1:  # every parameter takes part in each step: skip DDP's search for unused ones
        options.update(ddp_backend=None if torch.cuda.is_available() else "gloo", ddp_find_unused_parameters=False)
    if parallel.fsdp:
        fsdp_config = {"version": 2, "cpu_offload": parallel.fsdp_offload,
                       "activation_checkpointing": train.gradient_checkpointing}
        if layer_class:
            fsdp_config["transformer_layer_cls_to_wrap"] = [layer_class]
        options.update(fsdp=True, fsdp_config=fsdp_config)
    if parallel.deepspeed:
        options["deepspeed"] = deepspeed_config(parallel.deepspeed)[0]
    return options


def engine_name(parallel: ParallelArgs) -> str:
    """How the run is spread, in run.json's words: single, ddp, fsdp2, fsdp2+offload or deepspeed-zeroN[-offload]."""
    if parallel.deepspeed:
        config, _ = deepspeed_config(parallel.deepspeed)
        zero = config.get("zero_optimization", {})
        offload = any(zero.get(k, {}).get("device") == "cpu" for k in ("offload_param", "offload_optimizer"))
        return f"deepspeed-zero{zero.get('stage', 0)}" + ("-offload" if offload else "")
    if parallel.fsdp:
        return "fsdp2" + ("+offload" if parallel.fsdp_offload else "")
    return "ddp" if world_size() > 1 else "single"


def zero3_loading(parallel: ParallelArgs, train: TrainArgs, checkpoints: str):
    """For DeepSpeed ZeRO-3, TrainingArguments made before the model loads, so that transformers shards the weights
    while loading them (it keeps a reference to the live config); None otherwise. Keep the result alive."""
    config = deepspeed_config(parallel.deepspeed)[0] if parallel.deepspeed else None
    if not config or config.get("zero_optimization", {}).get("stage") != 3:
        return None
    import deepspeed
    import torch
    from transformers import TrainingArguments

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")  # joins torch's group
    return TrainingArguments(output_dir=checkpoints, deepspeed=config, report_to="none",
                             use_cpu=not torch.cuda.is_available(), ddp_backend=engine_options(parallel, train, None)
                             .get("ddp_backend"),
                             per_device_train_batch_size=train.per_device_train_batch_size,
                             gradient_accumulation_steps=train.gradient_accumulation_steps,
                             max_grad_norm=train.max_grad_norm)


def port_problem(parallel: ParallelArgs) -> str | None:
    """A --master_port that another program holds on this machine (checked on --node_rank 0 before launching)."""
    if parallel.node_rank != 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("" if parallel.master_addr in ("127.0.0.1", "localhost") else parallel.master_addr,
                        parallel.master_port))
        except OSError as exc:
            return f"--master_port {parallel.master_port}: already in use ({exc.strerror}); pick another port"
    return None


STOP_GRACE_S = 300
"""Seconds the launcher gives its workers, once it has passed a SIGTERM (or Ctrl-C) on to them, to finish their
step and write their checkpoint before it kills them (torch's own TORCH_ELASTIC_SHUTDOWN_TIMEOUT, when set, wins)."""


def launch(command: str, argv: list[str], parallel: ParallelArgs, output_dir: str | None,
           resume_argv: list[str]) -> int:
    """Run `tunestack COMMAND ARGV` in --nproc processes (per machine) under torch's elastic launcher.

    When a rank dies the launcher stops the others; run.json then says which rank failed and how. Each worker runs
    in a session of its own, so a SIGTERM sent to the launcher's process group reaches the launcher alone: it passes
    the signal on to every worker, which stop cleanly together (see train/stopping.py), waits for them up to
    STOP_GRACE_S, and then ends the run `interrupted` itself, raising Terminated (Ctrl-C: KeyboardInterrupt)."""
    if (problem := port_problem(parallel)) is not None:
        raise ConfigError([problem])
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    grace = None if "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" in os.environ else STOP_GRACE_S
    config = LaunchConfig(min_nodes=parallel.nnodes, max_nodes=parallel.nnodes, nproc_per_node=parallel.nproc,
                          rdzv_backend="static", rdzv_endpoint=f"{parallel.master_addr}:{parallel.master_port}",
                          rdzv_configs={"rank": parallel.node_rank}, run_id=f"tunestack-{command}", max_restarts=0,
                          monitor_interval=0.5, shutdown_timeout=grace)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel.nproc)))
    print(f"launching {parallel.nproc} processes per machine on {parallel.nnodes} machine(s)", file=sys.stderr)
    retry = f"tunestack {command} {' '.join(resume_argv)}"
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "tunestack", command, *argv)
    except ChildFailedError as failure:
        failed_rank, error = failure.get_first_failure()
        message = _record_failure(output_dir, failed_rank, error)
        if parallel.node_rank == 0:
            _end_events(output_dir, "failed", f"rank {failed_rank} failed (exit code {error.exitcode}): {message}")
        print(f"tunestack {command}: rank {failed_rank} failed (exit code {error.exitcode}); the others were "
              f"stopped. Continue with: {retry}", file=sys.stderr)
        return 1
    except SignalException as stop:
        _record_stop(output_dir, parallel.node_rank == 0, stop.sigval, retry)
        print(f"tunestack {command}: stopped ({stop.sigval.name}); continue with: {retry}", file=sys.stderr)
        from tunestack.train.stopping import Terminated

        raise (Terminated() if stop.sigval == signal.SIGTERM else KeyboardInterrupt()) from None
    return 0


def _record_failure(output_dir: str | None, failed_rank: int, error) -> str:
    """run.json says which rank failed and how; returns how."""
    from tunestack.run import RunDir

    run = RunDir(output_dir) if output_dir else None
    message = error.message if isinstance(error.message, str) else json.dumps(error.message)[:2000]
    if not message and error.exitcode < 0:
        message = f"killed by signal {-error.exitcode}"
    if run is not None and run.exists():
        run.update(status="failed", failed_rank=failed_rank, failed_exitcode=error.exitcode, failure=message)
    return message


def _record_stop(output_dir: str | None, first_node: bool, sigval, retry: str) -> None:
    """After the workers were stopped by a signal: the run is interrupted (rank 0 says so itself when it had the time
    to; a worker killed at the end of the grace period could not), and its events end."""
    from tunestack.run import RunDir

    run = RunDir(output_dir) if output_dir else None
    if first_node and run is not None and run.exists() and run.read_manifest().get("status") == "running":
        run.update(status="interrupted")
    if first_node:
        _end_events(output_dir, "interrupted", f"stopped on {sigval.name}; continue with: {retry}")


def _end_events(output_dir: str | None, status: str, message: str) -> None:
    """Write the end event rank 0 could not (it was killed, or another rank failed first), unless it did."""
    from tunestack.progress import Progress, read_events

    events = read_events(output_dir) if output_dir else []
    if events and events[-1].get("kind") != "end":
        Progress(output_dir).end(status, message)
