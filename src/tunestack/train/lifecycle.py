"""The run lifecycle every training method shares: checks, run directory, starting model, resume point, status,
final/ and the evaluation after training. A method supplies only its data task, its trainer and its defaults."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path

from tunestack.config import DataArgs, ModelArgs, ParallelArgs, TrainArgs, TunerArgs
from tunestack.config.parse import field_problems, to_argv
from tunestack.errors import ConfigError, TunestackError
from tunestack.progress import Progress, TerminalBar
from tunestack.run import RunDir
from tunestack.run.plot import plot_loss
from tunestack.train import distributed
from tunestack.train.distributed import barrier, is_main
from tunestack.train.stopping import StopRequest, Terminated

_EVENTS: ContextVar[Progress | None] = ContextVar("run_events", default=None)
"""The events of the run training in this process, which `say` also writes its lines into."""
_SAID: ContextVar[list[str] | None] = ContextVar("said_lines", default=None)
"""While set, the lines `say` prints are also kept here (what encoding said, replayed when the cache answers)."""


@dataclass
class Method:
    """What a training method brings to the lifecycle."""

    name: str
    """The command: sft, pt, dpo, ..."""
    task: str
    """The data task its rows are read as (sft, pt, preference, kto, ...)."""
    trainer: Callable
    """`trainer(prepared) -> transformers.Trainer`: the method's trainer over the prepared pieces."""
    encode: Callable | None = None
    """`encode(splits, tokenizer, data_args) -> (train, val, report)`; None passes the canonical rows to the trainer."""
    head: str = "causal"
    """`causal`, or `reward` for a sequence-classification head."""
    learning_rate: tuple[float, float] = (1e-4, 1e-5)
    """The default peak learning rate with an adapter and for full fine-tuning."""
    check: Callable | None = None
    """`check(method_args, tuner_args, train_args) -> [problem, ...]`: cross-field checks of the method's own flags."""
    check_data: Callable | None = None
    """`check_data(splits, method_args)`: checks of the rows against the method's flags, before a model loads;
    raises DataError naming the file and row."""
    args: type | None = None
    """The method's own flags (DpoArgs, ...); their defaults stand in when a caller passes none."""
    generates: bool = False
    """Whether its trainer samples from the policy during training (outside autocast, so peft keeps its casts)."""


@dataclass
class Prepared:
    """Everything a method's trainer is built from."""

    model: object
    tokenizer: object
    train: object
    val: object
    run: RunDir
    args: TrainArgs
    data: DataArgs
    tuner: TunerArgs
    method_args: object
    compute: object
    learning_rate: float
    parallel: ParallelArgs = field(default_factory=ParallelArgs)
    extra: dict = field(default_factory=dict)
    processor: object = None
    """A vision-language model's processor (None for text models)."""

    def training_args(self, config_class=None, **method):
        """The TrainingArguments (or the TRL config `config_class`) for this run, with the method's fields."""
        from transformers import TrainingArguments

        from tunestack.train.trainer import training_arguments

        engine = distributed.engine_options(self.parallel, self.args, _layer_class(self.model))
        return training_arguments(self.args, str(self.run.checkpoints), self.compute, self.learning_rate,
                                  has_eval=self.val is not None, config_class=config_class or TrainingArguments,
                                  run_name=self.run.path.name, **engine, **method)


def _layer_class(model) -> str | None:
    """The decoder layer's class name (what FSDP wraps one by one)."""
    names = getattr(getattr(model, "base_model", model), "_no_split_modules", None) or \
        getattr(getattr(getattr(model, "base_model", model), "model", model), "_no_split_modules", None)
    return sorted(names)[0] if names else None


def say(message: str) -> None:
    """A line for the user on stderr, also written as a message event of the run being trained."""
    if is_main():  # one voice for all the processes of a multi-process run
        print(message, file=sys.stderr, flush=True)
        if (events := _EVENTS.get()) is not None:
            events.message(message)
        if (said := _SAID.get()) is not None:
            said.append(message)


def validate_training(data: DataArgs, tuner: TunerArgs, train: TrainArgs, method_args=None,
                      method: Method | None = None, parallel: ParallelArgs | None = None) -> None:
    """Cross-field checks before anything heavy runs; every problem is reported at once."""
    problems = []
    if not data.dataset:
        problems.append("--dataset: required; a file, folder, built-in (self-cognition, arith, arith-pref) or hub id")
    for group in (data, tuner, train) + ((method_args,) if method_args is not None else ()):
        problems += field_problems(group)
    checks = [
        (train.num_train_epochs > 0 or train.max_steps > 0,
         "--num_train_epochs / --max_steps: one of them must be positive"),
        (not (data.streaming and train.max_steps <= 0),
         "--streaming: a stream has no known length; set --max_steps"),
        (not (train.resume and train.overwrite_output_dir), "--resume and --overwrite_output_dir exclude each other"),
        (not train.metrics or data.val_ratio > 0 or bool(data.val_dataset) or bool(data.dataset_info),
         "--metrics: computed at evaluation steps, which need validation data; add --val_ratio 0.05 or --val_dataset"),
    ]
    if method is not None and method.task not in ("sft", "pt"):
        checks.append((not data.packing, f"--packing: {method.name} trains on whole examples; drop --packing"))
        checks.append((not data.padding_free, f"--padding_free: {method.name} batches its own rows; drop "
                                              "--padding_free"))
        checks.append((data.truncation == "truncate", f"--truncation drop: {method.name} keeps each example's start "
                                                      "(--truncation truncate)"))
        checks.append((not data.streaming, f"--streaming: {method.name} reads its data whole; drop --streaming"))
    if method is not None and method.task not in ("sft", "pt"):
        checks.append((not train.auto_plan, f"--auto_plan: plans are made for sft and pt runs, not {method.name}"))
    if method is not None and method.head != "causal":
        checks.append((not train.eval_tasks, f"--eval_tasks: a {method.name} run scores text, it does not generate; "
                                             "drop --eval_tasks"))
    problems += [message for ok, message in checks if not ok] + _efficiency_problems(train)
    problems += _extension_problems(train, method)
    if method is not None and method.check is not None:
        problems += method.check(method_args, tuner, train)
    if parallel is not None:
        problems += distributed.parallel_problems(parallel, tuner, train)
    if problems:
        raise ConfigError(problems)


def _efficiency_problems(train: TrainArgs) -> list[str]:
    """Switches that need hardware or a library this machine lacks, named with what to do instead."""
    import importlib.util

    import torch

    problems = []
    if train.use_liger_kernel and not torch.cuda.is_available():
        problems.append("--use_liger_kernel: Liger's kernels are Triton kernels for CUDA GPUs; drop it on this machine")
    elif train.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        problems.append("--use_liger_kernel: liger-kernel is not installed: pip install liger-kernel")
    if ("8bit" in train.optim or "paged" in train.optim) and importlib.util.find_spec("bitsandbytes") is None:
        problems.append(f"--optim {train.optim}: needs bitsandbytes: pip install 'tunestack[qlora]'")
    if "paged" in train.optim and not torch.cuda.is_available():
        problems.append(f"--optim {train.optim}: paged optimizers page GPU memory; on CPU use adamw_torch or "
                        "adamw_8bit")
    return problems


def _extension_problems(train: TrainArgs, method: Method | None) -> list[str]:
    """--loss_func, --metrics, --callbacks and --report_to: files, names and trackers that are not there."""
    from tunestack.train.extensions import extension_problems
    from tunestack.train.tracking import tracker_problems

    return extension_problems(train, method.name if method is not None else None) + \
        tracker_problems(train.report_to)


def run_training(method: Method, model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs,
                 train_args: TrainArgs, method_args=None, parallel: ParallelArgs | None = None,
                 callbacks: list | None = None) -> RunDir:
    """Train with `method`; everything lands in the run directory, which --resume continues after any stop.

    With --nproc or --nnodes this relaunches itself in several processes (torchrun) and waits for them.
    `callbacks` are extra transformers TrainerCallback objects (from the Python API; one process only)."""
    import dataclasses

    parallel = parallel or ParallelArgs()
    method_args = _method_args(method, method_args)
    if method.name == "sft" and not distributed.in_worker():
        say_recommended(data_args, tuner_args, train_args)
    validate_training(data_args, tuner_args, train_args, method_args, method, parallel)
    if train_args.eval_tasks:  # a bad task name fails now, not after training
        from tunestack.eval.command import validate_eval

        validate_eval(eval_args(data_args, train_args))
    if train_args.output_dir is None:  # named once, so that every process of a launch writes to the same run
        train_args = dataclasses.replace(train_args, output_dir=f"runs/{method.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    plan = None
    if train_args.auto_plan and not train_args.resume and not distributed.in_worker():
        plan, (model_args, data_args, tuner_args, train_args, parallel) = _auto_plan(
            model_args, data_args, tuner_args, train_args, parallel)
    run = RunDir(train_args.output_dir)
    distributed.use_cpu_deepspeed(parallel)
    if distributed.needs_launch(parallel):
        if callbacks:
            raise ConfigError(["callbacks=: Python callback objects cannot cross into the launched processes; "
                               "train in one process, or pass --callbacks PATH.py:Class"])
        others = [parallel] + ([method_args] if method_args else [])
        again = dataclasses.replace(train_args, resume=True, overwrite_output_dir=False)
        from tunestack.data.builtin import PRESET_FLAGS

        argv, resume_argv = (to_argv([model_args, data_args, tuner_args, t] + others, always=PRESET_FLAGS)
                             for t in (train_args, again))
        if distributed.launch(method.name, argv, parallel, train_args.output_dir, resume_argv) != 0:
            raise TunestackError(f"{method.name}: a training process failed; see {run.manifest_path}")
        if plan is not None:
            run.update(auto_plan=plan)
        return run
    if distributed.world_size() > 1:
        distributed.start_process_group()
    # Held until the run directory is checked (and cleared for a fresh run): until then it may be another run's.
    progress = Progress(run.path, enabled=is_main(), listeners=[TerminalBar()], defer=True)
    said = _EVENTS.set(progress)
    try:
        with StopRequest() as stop, progress:
            _train(method, (model_args, data_args, tuner_args, train_args, method_args, parallel), run, progress,
                   stop, callbacks, plan)
    finally:
        _EVENTS.reset(said)
    if stop.requested:  # it stopped after the last step, with final/ written: still, it stopped on request
        raise Terminated()
    return run


def _train(method: Method, groups: tuple, run: RunDir, progress: Progress, stop: StopRequest, callbacks, plan) -> None:
    """Build, train from the resume point, write final/ and evaluate; run.json's status and the end event say how
    it went, in every way it can end."""
    model_args, data_args, tuner_args, train_args, method_args, parallel = groups
    if train_args.resume and run.exists() and run.read_manifest().get("status") == "completed" \
            and run.final.is_dir():
        progress.open()
        say(f"{run.path} is already complete (final/ is written); nothing to resume")
        return
    trainer = build_trainer(method, model_args, data_args, tuner_args, train_args, run, method_args, parallel,
                            progress=progress, stop=stop)
    for callback in callbacks or []:
        trainer.add_callback(callback)
    from tunestack.train.trainer import kernels_of

    _update(run, kernels=kernels_of(trainer), **({"auto_plan": plan} if plan is not None else {}))
    checkpoint = _resume_point(run, parallel) if train_args.resume else None
    if checkpoint is not None and _finished(checkpoint):
        # Killed after the last step was checkpointed: the model is done, only final/ is missing.
        progress.start("save", message=str(run.final))
        if is_main():
            run.save_final(lambda path: _copy_model_files(checkpoint, path))
            plot_loss(run.read_metrics(), run.path / "loss.png")
        _update(run, status="completed", final_step=_finished(checkpoint))
        _done(run, method)
        distributed.finish()
        return
    _update(run, status="running", processes=distributed.world_size(), engine=distributed.engine_name(parallel))
    from tunestack.model.tuners import training_input_casts

    try:
        with stop.at_step_ends():
            with training_input_casts(trainer.model, generating=method.generates):
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            if stop.requested and trainer.state.global_step < trainer.state.max_steps:
                distributed.finish()  # every process stopped at the same step and sealed its checkpoint
                raise Terminated(f"stopped on SIGTERM after step {trainer.state.global_step}")
            progress.start("save", message=str(run.final))
            _save_final(run, trainer)
    except KeyboardInterrupt as interrupt:
        _update(run, status="interrupted")
        sealed = run.latest_checkpoint()
        resume = f"tunestack {method.name} --output_dir {run.path} --resume"
        progress.end("interrupted", f"{str(interrupt) or 'interrupted'} (last sealed checkpoint: "
                                    f"{sealed.name if sealed else 'none'}); continue with: {resume}")
        if is_main():  # said after the end event, which carries the same words, so printed only
            print(f"interrupted; continue with: {resume}", file=sys.stderr, flush=True)
        raise
    except BaseException as error:
        _update(run, status="failed")
        progress.end_with(error)
        raise
    from tunestack.model.compile import compile_seconds

    compiled = {"compile_seconds": compile_seconds()} if trainer.args.torch_compile else {}
    _update(run, status="completed", final_step=trainer.state.global_step,
            final_loss=_last_loss(trainer.state.log_history), **_final_figures(trainer.state.log_history), **compiled)
    _done(run, method)
    del trainer
    distributed.finish()
    if train_args.eval_tasks and is_main():
        if stop.requested:
            say("evaluation after training skipped: the run was asked to stop (SIGTERM)")
        else:
            evaluate_final(run, model_args, data_args, train_args, progress)


def say_recommended(data_args: DataArgs, tuner_args: TunerArgs, train_args: TrainArgs) -> None:
    """Name the built-in data set's recommended settings this run uses (the parser put them in for flags not given),
    so that nothing differs silently from what was typed."""
    from tunestack.data.builtin import recommended_in_effect

    if applied := recommended_in_effect(data_args, tuner_args, train_args):
        name = data_args.dataset[0].split("#")[0]
        say(f"{name}'s recommended settings (a flag overrides any): "
            + ", ".join(f"--{k} {_shown(v)}" for k, v in applied.items()))


def _shown(value) -> str:
    """A flag's value as typed: true/false, 5e-4, full."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def _processor(start, model_args: ModelArgs, method: Method, data_args: DataArgs, splits, tokenizer):
    """A multimodal model's processor, or None for a text model (which refuses data with images, audio or videos);
    a processor that cannot read a kind of media the data holds (images for an audio model, audio for a vision
    model) is refused too; methods other than sft refuse multimodal models."""
    from tunestack.media import MEDIA_COLUMNS, MEDIA_NOUNS
    from tunestack.model.vision import has_3d_positions, is_multimodal, load_processor, media_kinds

    columns = getattr(splits.train, "column_names", None) or ()
    held = [kind for kind, column in MEDIA_COLUMNS.items() if column in columns and any(splits.train[column])]
    if not is_multimodal(start.resolved.path):
        if model_args.min_pixels is not None or model_args.max_pixels is not None:
            raise ConfigError([f"--min_pixels / --max_pixels: --model {model_args.model} is a text-only model; "
                               "drop the flags"])
        if held:
            raise ConfigError([f"--dataset {','.join(data_args.dataset)} has "
                               f"{', '.join(MEDIA_NOUNS[kind] for kind in held)}, but --model "
                               f"{model_args.model} is a text-only model; use a vision-language model (e.g. "
                               "smollm2-135m-vision) or an audio-language model (e.g. Qwen2-Audio)"])
        return None
    if method.name != "sft":
        raise ConfigError([f"--model {model_args.model} is a vision-language model; {method.name} does not train "
                           "one yet (sft does)"])
    if data_args.padding_free:
        raise ConfigError([f"--padding_free: --model {model_args.model} is a multimodal model, whose rows its "
                           "processor batches; drop --padding_free"])
    if data_args.packing and has_3d_positions(start.resolved.path):
        raise ConfigError([f"--packing: --model {model_args.model} computes 3-D rotary positions (M-RoPE) over each "
                           "whole row, which a packed row cannot restart; drop --packing"])
    # --chat_template's file, already read and checked by load_tokenizer, replaces the processor's template
    template = tokenizer.chat_template if model_args.chat_template else None
    processor = load_processor(start.resolved.path, model_args.trust_remote_code, template, model_args.min_pixels,
                               model_args.max_pixels, model_args.fps, model_args.max_frames)
    for kind in set(held) - set(media_kinds(processor)):
        noun = MEDIA_NOUNS[kind]
        raise ConfigError([f"--dataset {','.join(data_args.dataset)} has {noun}, but --model "
                           f"{model_args.model}'s {type(processor).__name__} cannot read {noun}; use a model that "
                           f"takes {noun}, or drop those rows"])
    return processor


def _encode(method: Method, splits, tokenizer, data_args: DataArgs, media: dict):
    """The method's encoding of the rows, read from the encoded-data cache when these inputs were encoded before
    (data/encoded_cache.py); what encoding said is said again then, and the data report records the cache's key."""
    from tunestack.data import encoded_cache

    if media or data_args.streaming or not data_args.data_cache:
        return method.encode(splits, tokenizer, data_args, **media)
    key = encoded_cache.fingerprint(method.name, method.encode, splits, tokenizer, data_args)
    if (entry := encoded_cache.load(key)) is not None:
        train, val, report, messages = entry
        for message in messages:
            say(message)
        say(f"encoded data: read from the cache ({encoded_cache.encoded_dir() / key}); --data_cache false "
            "encodes afresh")
        return train, val, {**report, "data_cache": {"key": key, "read": True}}
    said = _SAID.set([])
    try:
        train, val, report = method.encode(splits, tokenizer, data_args)
        messages = _SAID.get()
    finally:
        _SAID.reset(said)
    if problem := encoded_cache.store(key, train, val, report, messages):
        say(f"encoded data: not kept in the cache ({problem}); the run goes on")
    return train, val, {**report, "data_cache": {"key": key, "read": False}}


def _method_args(method: Method, given):
    """The method's flags as given, or their defaults."""
    return given if given is not None or method.args is None else method.args()


def _auto_plan(model_args, data_args, tuner_args, train_args, parallel):
    """`tunestack estimate`'s recommendation for this machine applied to the groups, and what run.json records."""
    import dataclasses

    from tunestack.config import PlanArgs
    from tunestack.plan.estimate import build_estimate

    estimate = build_estimate(model_args, data_args, tuner_args, train_args, parallel, PlanArgs())
    record = {"fits_as_given": estimate.plan is None, "peak_bytes": estimate.memory.needed,
              "device_bytes": estimate.device.memory, "changes": []}
    if estimate.plan is not None:
        plan = estimate.plan
        given = plan.groups
        model_args, data_args, tuner_args, train_args, parallel = (given.model, given.data, given.tuner, given.train,
                                                                   given.parallel)
        record.update(changes=plan.changes, fits=plan.fits, peak_bytes=plan.memory.needed)
        for change in plan.changes:
            say(f"auto plan: {change}")
    else:
        say(f"auto plan: the run fits as given ({estimate.memory.needed / 2**30:.2f} GiB of "
            f"{estimate.device.memory / 2**30:.2f} GiB)")
    train_args = dataclasses.replace(train_args, auto_plan=False)  # applied once; launched processes take the result
    return record, (model_args, data_args, tuner_args, train_args, parallel)


def _update(run: RunDir, **fields) -> None:
    if is_main():
        run.update(**fields)


def build_trainer(method: Method, model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs,
                  train_args: TrainArgs, run: RunDir, method_args=None, parallel: ParallelArgs | None = None,
                  progress: Progress | None = None, stop: StopRequest | None = None):
    """Data, starting model, tuner and the method's ready Trainer writing into `run` (manifest written when fresh).

    `progress` receives the "data" and "load" phases (held until the run directory is prepared) and the Trainer's
    steps; `stop`, when given, is read at each step's end."""
    from tunestack.data import load_datasets
    from tunestack.model.load import load_tokenizer
    from tunestack.model.precision import dtype_name, resolve_dtype
    from tunestack.run.manifest import new_manifest
    from tunestack.train.policy import build_policy, starting_point

    parallel = parallel or ParallelArgs()
    method_args = _method_args(method, method_args)
    if progress is None:
        progress = Progress(run.path, enabled=is_main(), listeners=[TerminalBar()], defer=True)
    from tunestack.train import startup

    # Data first: a bad row fails here, before a model is loaded or a run directory is touched.
    startup.mark("data")
    progress.start("data", message=", ".join(data_args.dataset))
    splits = load_datasets(data_args, task=method.task, seed=train_args.seed)
    if splits.report.get("train_rows") is not None:
        progress.message(f"{splits.report['train_rows']} training rows, {splits.report['val_rows']} validation rows")
    if method.check_data is not None:
        method.check_data(splits, method_args)
    startup.mark("resolve")
    start = starting_point(model_args, tuner_args)
    startup.mark("resolved")
    say(f"model: {start.resolved.source}")
    tokenizer, template = load_tokenizer(start.resolved.path, model_args.template, model_args.trust_remote_code,
                                         fallback_template=start.resolved.template,
                                         chat_template=model_args.chat_template)
    if getattr(method_args, "ref_model", None):  # a reference scoring other token ids fails before weights load
        from tunestack.train.policy import reference_problem

        if problem := reference_problem(method_args.ref_model, tokenizer, model_args):
            raise ConfigError([problem])
    processor = _processor(start, model_args, method, data_args, splits, tokenizer)
    if processor is not None:
        tokenizer = processor.tokenizer
    media = {"processor": processor} if processor is not None else {}
    if method.encode is not None:  # once, on the first process; the others receive the result
        train_rows, val_rows, encoded = distributed.from_main(
            lambda: _encode(method, splits, tokenizer, data_args, media))
    else:
        train_rows, val_rows, encoded = splits.train, splits.val, {}

    if is_main():
        run.prepare(resume=train_args.resume, overwrite=train_args.overwrite_output_dir)
        progress.open()  # the folder is this run's now: a fresh run starts its events over, a resumed one appends
    barrier()
    startup.mark("model")
    progress.start("load", message=start.resolved.source)
    data_args = replace(data_args, padding_free=_padding_free(method, start, model_args, data_args, train_args,
                                                              parallel, text=processor is None))
    compute = resolve_dtype("bf16" if train_args.bf16 else "fp32") if train_args.bf16 is not None \
        else resolve_dtype(model_args.dtype)
    # Frozen base weights may live in the compute dtype; fully trained weights stay fp32 under autocast.
    weights = compute if tuner_args.tuner != "full" else resolve_dtype("fp32")

    from tunestack.model.tuners import trainable_summary

    # ZeRO-3 shards the parameters as they load, once the DeepSpeed config is known to transformers.
    zero3 = distributed.zero3_loading(parallel, train_args, str(run.checkpoints))
    model = build_policy(start, tuner_args, train_args.gradient_checkpointing, train_args.seed, dtype=weights,
                         attn=model_args.attn_implementation, quantize_4bit=tuner_args.tuner == "qlora",
                         trust_remote_code=model_args.trust_remote_code, tokenizer=tokenizer,
                         train_length=data_args.max_length, packed=data_args.packing or data_args.padding_free,
                         head=method.head,
                         tp=parallel.tp)
    say(f"tuner: {tuner_args.tuner}, {trainable_summary(model)}, precision {dtype_name(compute)}")
    if not train_args.resume and is_main():
        groups = [model_args, data_args, tuner_args, train_args, parallel] + \
            ([method_args] if method_args is not None else [])
        run.write_manifest(new_manifest(method.name, groups, start, template, dtype_name(compute),
                                        {**splits.report, **encoded}))
    adapter, full = method.learning_rate
    learning_rate = train_args.learning_rate or (full if tuner_args.tuner == "full" else adapter)
    if train_args.learning_rate is None:
        say(f"learning rate: {learning_rate:g} ({method.name}'s default for --tuner {tuner_args.tuner})")
    prepared = Prepared(model, tokenizer, train_rows, val_rows, run, train_args, data_args, tuner_args, method_args,
                        compute, learning_rate, parallel,
                        extra={"model_args": model_args, "zero3": zero3}, processor=processor)
    trainer = method.trainer(prepared)
    if train_args.fused_mlp or train_args.fused_lora or train_args.fused_rmsnorm:
        from tunestack.train.trainer import fuse_modules

        fuse_modules(trainer, mlp=train_args.fused_mlp, lora=train_args.fused_lora, rmsnorm=train_args.fused_rmsnorm)
    return _with_run_callbacks(trainer, run, train_args, progress, stop)


def _padding_free(method, start, model_args: ModelArgs, data_args: DataArgs, train_args: TrainArgs,
                  parallel: ParallelArgs, text: bool) -> bool:
    """--padding_free as given, else whether this run's rows are joined by default (data/packing.py)."""
    import torch

    from tunestack.data.packing import run_padding_free
    from tunestack.model.load import attention_limits

    grouped = data_args.padding_free is None and attention_limits(start.resolved.path,
                                                                  model_args.trust_remote_code)[2]
    return run_padding_free(model_args, data_args, train_args, parallel, task=method.task, text=text,
                            cuda=torch.cuda.is_available(), grouped=grouped)


def _with_run_callbacks(trainer, run: RunDir, train_args: TrainArgs, progress: Progress, stop: StopRequest | None):
    """The run's own callbacks (metrics.jsonl, sealed checkpoints, progress events, TensorBoard, the stop on
    SIGTERM), then --callbacks."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tunestack.train.extensions import user_callbacks
    from tunestack.train.trainer import run_callbacks

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for callback in run_callbacks(run, train_args.save_total_limit, train_args.report_to, progress, stop) + \
            user_callbacks(train_args):
        trainer.add_callback(callback)
    return trainer


def _resume_point(run: RunDir, parallel: ParallelArgs) -> Path | None:
    if is_main():
        for path in run.discard_incomplete_checkpoints():
            say(f"discarded incomplete checkpoint {path}")
    barrier()
    checkpoint = run.latest_checkpoint()
    recorded = run.read_manifest().get("processes", 1)
    if checkpoint is not None and recorded != distributed.world_size() and (parallel.fsdp or parallel.deepspeed):
        raise TunestackError(f"--resume: {run.path} was checkpointed by {recorded} processes; FSDP and DeepSpeed "
                             f"checkpoints are sharded per process, so resume it with {recorded} processes "
                             "(DDP checkpoints resume with any --nproc)")
    step = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else 0
    if is_main():
        run.truncate_metrics(step)
    say(f"resuming from {checkpoint}" if checkpoint else "no complete checkpoint yet: training starts from step 0")
    return checkpoint


def _finished(checkpoint: Path) -> int:
    """The checkpoint's step when it is the run's last step, else 0."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state["global_step"] if state["global_step"] >= state["max_steps"] > 0 else 0


def _copy_model_files(checkpoint: Path, target: Path) -> None:
    training_state = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
                      "scaler.pt"}
    target.mkdir(parents=True)
    for file in checkpoint.iterdir():
        if file.is_file() and file.name not in training_state and not file.name.startswith("tunestack_"):
            shutil.copy2(file, target / file.name)


def _save_final(run: RunDir, trainer) -> None:
    """final/ through the Trainer's own saving, which gathers sharded (FSDP, ZeRO-3) weights; swapped in by rank 0."""
    if is_main():
        shutil.rmtree(run.final_tmp, ignore_errors=True)
    barrier()
    from tunestack.model.tuners import set_use_cache

    set_use_cache(trainer.model, True)  # off only while training
    trainer.save_model(str(run.final_tmp))
    barrier()
    if is_main():
        trainer.processing_class.save_pretrained(run.final_tmp)
        (run.final_tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; run.json records the flags
        run.swap_final()


def _done(run: RunDir, method: Method) -> None:
    use = "score with it: tunestack infer --score --model" if method.head == "reward" else \
        "chat with it: tunestack infer --model"
    say(f"done: {run.final}\n{use} {run.path}")


def _last_loss(history: list[dict]) -> float | None:
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return losses[-1] if losses else None


def _final_figures(history: list[dict]) -> dict:
    """The last logged preference figures (margin, accuracy, reward, validation accuracy), recorded in run.json
    beside the loss."""
    keys = {"rewards/margins": "final_margin", "rewards/accuracies": "final_accuracy", "reward": "final_reward",
            "eval_accuracy": "final_eval_accuracy"}
    found = {}
    for entry in history:
        found.update({name: entry[key] for key, name in keys.items() if key in entry})
    return found


def eval_args(data_args: DataArgs, train_args: TrainArgs):
    """The `tunestack eval` flags that --eval_tasks, --eval_task_data and --eval_limit stand for."""
    from tunestack.config import EvalArgs

    return EvalArgs(tasks=train_args.eval_tasks, task_data=train_args.eval_task_data, limit=train_args.eval_limit,
                    batch_size=train_args.per_device_eval_batch_size, seed=train_args.seed,
                    model_name=data_args.model_name, model_author=data_args.model_author)


def evaluate_final(run: RunDir, model_args: ModelArgs, data_args: DataArgs, train_args: TrainArgs,
                   progress: Progress | None = None) -> None:
    """Evaluate the finished run (base + adapters, or the full model) and write the report into run/eval/; its
    "evaluate" phase goes into the run's events (`progress`) when given, else into run/eval/."""
    import dataclasses

    from tunestack.eval.command import run_eval

    say(f"evaluating {run.final} on {', '.join(train_args.eval_tasks)}")
    summary = run_eval(dataclasses.replace(model_args, model=str(run.path)), eval_args(data_args, train_args),
                       run.path / "eval", progress=progress)
    run.update(eval={task: {name: metric["value"] for name, metric in result["metrics"].items()}
                     for task, result in summary["tasks"].items()})
