"""The run lifecycle every training method shares: checks, run directory, starting model, resume point, status,
final/ and the evaluation after training. A method supplies only its data task, its trainer and its defaults."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs
from tunestack.config.parse import field_problems
from tunestack.errors import ConfigError
from tunestack.run import RunDir
from tunestack.run.plot import plot_loss


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
    extra: dict = field(default_factory=dict)

    def training_args(self, config_class=None, **method):
        """The TrainingArguments (or the TRL config `config_class`) for this run, with the method's fields."""
        from transformers import TrainingArguments

        from tunestack.train.trainer import training_arguments

        return training_arguments(self.args, str(self.run.checkpoints), self.compute, self.learning_rate,
                                  has_eval=self.val is not None, config_class=config_class or TrainingArguments,
                                  **method)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def validate_training(data: DataArgs, tuner: TunerArgs, train: TrainArgs, method_args=None,
                      method: Method | None = None) -> None:
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
    ]
    if method is not None and method.task not in ("sft", "pt"):
        checks.append((not data.packing, f"--packing: {method.name} trains on whole examples; drop --packing"))
        checks.append((data.truncation == "truncate", f"--truncation drop: {method.name} keeps each example's start "
                                                      "(--truncation truncate)"))
        checks.append((not data.streaming, f"--streaming: {method.name} reads its data whole; drop --streaming"))
    if method is not None and method.head != "causal":
        checks.append((not train.eval_tasks, f"--eval_tasks: a {method.name} run scores text, it does not generate; "
                                             "drop --eval_tasks"))
    problems += [message for ok, message in checks if not ok]
    if method is not None and method.check is not None:
        problems += method.check(method_args, tuner, train)
    if problems:
        raise ConfigError(problems)


def run_training(method: Method, model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs,
                 train_args: TrainArgs, method_args=None) -> RunDir:
    """Train with `method`; everything lands in the run directory, which --resume continues after any stop."""
    validate_training(data_args, tuner_args, train_args, method_args, method)
    if train_args.eval_tasks:  # a bad task name fails now, not after training
        from tunestack.eval.command import validate_eval

        validate_eval(eval_args(data_args, train_args))
    run = RunDir(train_args.output_dir or f"runs/{method.name}-{time.strftime('%Y%m%d-%H%M%S')}")

    if train_args.resume and run.exists() and run.read_manifest().get("status") == "completed" \
            and run.final.is_dir():
        say(f"{run.path} is already complete (final/ is written); nothing to resume")
        return run
    trainer = build_trainer(method, model_args, data_args, tuner_args, train_args, run, method_args)
    checkpoint = _resume_point(run) if train_args.resume else None
    if checkpoint is not None and _finished(checkpoint):
        # Killed after the last step was checkpointed: the model is done, only final/ is missing.
        run.save_final(lambda path: _copy_model_files(checkpoint, path))
        plot_loss(run.read_metrics(), run.path / "loss.png")
        run.update(status="completed", final_step=_finished(checkpoint))
        _done(run, method)
        return run
    run.update(status="running")
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:
        run.update(status="interrupted")
        say(f"interrupted; continue with: tunestack {method.name} --output_dir {run.path} --resume")
        raise
    except BaseException:
        run.update(status="failed")
        raise
    _save_final(run, trainer.model, trainer.processing_class)
    run.update(status="completed", final_step=trainer.state.global_step,
               final_loss=_last_loss(trainer.state.log_history), **_final_figures(trainer.state.log_history))
    _done(run, method)
    if train_args.eval_tasks:
        del trainer
        evaluate_final(run, model_args, data_args, train_args)
    return run


def build_trainer(method: Method, model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs,
                  train_args: TrainArgs, run: RunDir, method_args=None):
    """Data, starting model, tuner and the method's ready Trainer writing into `run` (manifest written when fresh)."""
    from tunestack.data import load_datasets
    from tunestack.model.load import load_tokenizer
    from tunestack.model.precision import dtype_name, resolve_dtype
    from tunestack.run.manifest import new_manifest
    from tunestack.train.policy import build_policy, starting_point

    # Data first: a bad row fails here, before a model is loaded or a run directory is touched.
    splits = load_datasets(data_args, task=method.task, seed=train_args.seed)
    if method.check_data is not None:
        method.check_data(splits, method_args)
    start = starting_point(model_args, tuner_args)
    say(f"model: {start.resolved.source}")
    tokenizer, template = load_tokenizer(start.resolved.path, model_args.template, model_args.trust_remote_code,
                                         fallback_template=start.resolved.template)
    if method.encode is not None:
        train_rows, val_rows, encoded = method.encode(splits, tokenizer, data_args)
    else:
        train_rows, val_rows, encoded = splits.train, splits.val, {}

    run.prepare(resume=train_args.resume, overwrite=train_args.overwrite_output_dir)
    compute = resolve_dtype("bf16" if train_args.bf16 else "fp32") if train_args.bf16 is not None \
        else resolve_dtype(model_args.dtype)
    # Frozen base weights may live in the compute dtype; fully trained weights stay fp32 under autocast.
    weights = compute if tuner_args.tuner != "full" else resolve_dtype("fp32")

    from transformers import set_seed

    from tunestack.model.tuners import trainable_summary

    set_seed(train_args.seed)  # adapter initialisation draws from the global generator
    model = build_policy(start, tuner_args, train_args.gradient_checkpointing, dtype=weights,
                         attn=model_args.attn_implementation, quantize_4bit=tuner_args.tuner == "qlora",
                         trust_remote_code=model_args.trust_remote_code, tokenizer=tokenizer,
                         train_length=data_args.max_length, packed=data_args.packing, head=method.head)
    say(f"tuner: {tuner_args.tuner}, {trainable_summary(model)}, precision {dtype_name(compute)}")
    if not train_args.resume:
        groups = [model_args, data_args, tuner_args, train_args] + ([method_args] if method_args is not None else [])
        run.write_manifest(new_manifest(method.name, groups, start, template, dtype_name(compute),
                                        {**splits.report, **encoded}))
    adapter, full = method.learning_rate
    learning_rate = train_args.learning_rate or (full if tuner_args.tuner == "full" else adapter)
    if train_args.learning_rate is None:
        say(f"learning rate: {learning_rate:g} ({method.name}'s default for --tuner {tuner_args.tuner})")
    prepared = Prepared(model, tokenizer, train_rows, val_rows, run, train_args, data_args, tuner_args, method_args,
                        compute, learning_rate, extra={"model_args": model_args})
    return _with_run_callbacks(method.trainer(prepared), run, train_args.save_total_limit)


def _with_run_callbacks(trainer, run: RunDir, keep: int):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tunestack.train.trainer import run_callbacks

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for callback in run_callbacks(run, keep):
        trainer.add_callback(callback)
    return trainer


def _resume_point(run: RunDir) -> Path | None:
    removed = run.discard_incomplete_checkpoints()
    for path in removed:
        say(f"discarded incomplete checkpoint {path}")
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        say("no complete checkpoint yet: training starts from step 0")
        run.truncate_metrics(0)
        return None
    step = int(checkpoint.name.rsplit("-", 1)[1])
    run.truncate_metrics(step)
    say(f"resuming from {checkpoint}")
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


def _save_final(run: RunDir, model, tokenizer) -> None:
    def save(path: Path) -> None:
        model.config.use_cache = True  # off only while training
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    run.save_final(save)


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


def evaluate_final(run: RunDir, model_args: ModelArgs, data_args: DataArgs, train_args: TrainArgs) -> None:
    """Evaluate the finished run (base + adapters, or the full model) and write the report into run/eval/."""
    import dataclasses

    from tunestack.eval.command import run_eval

    say(f"evaluating {run.final} on {', '.join(train_args.eval_tasks)}")
    summary = run_eval(dataclasses.replace(model_args, model=str(run.path)), eval_args(data_args, train_args),
                       run.path / "eval")
    run.update(eval={task: {name: metric["value"] for name, metric in result["metrics"].items()}
                     for task, result in summary["tasks"].items()})
