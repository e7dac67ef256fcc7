"""Supervised fine-tuning (and raw-text pre-training): data, model, tuner, Trainer, train, save."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs
from tunestack.run import RunDir
from tunestack.run.plot import plot_loss

log = logging.getLogger(__name__)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_sft(model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs, train_args: TrainArgs,
            task: str = "sft") -> RunDir:
    """Fine-tune `model_args.model` on `data_args.dataset`; everything lands in the run directory."""
    from tunestack.train.setup import validate_training

    validate_training(data_args, tuner_args, train_args)
    if train_args.eval_tasks:  # a bad task name fails now, not after training
        from tunestack.eval.command import validate_eval
        from tunestack.train.setup import eval_args

        validate_eval(eval_args(data_args, train_args))
    run = RunDir(train_args.output_dir or f"runs/{task}-{time.strftime('%Y%m%d-%H%M%S')}")

    if train_args.resume and run.exists() and run.read_manifest().get("status") == "completed" \
            and run.final.is_dir():
        say(f"{run.path} is already complete (final/ is written); nothing to resume")
        return run
    trainer = build_trainer(model_args, data_args, tuner_args, train_args, run, task)
    checkpoint = _resume_point(run) if train_args.resume else None
    if checkpoint is not None and _finished(checkpoint):
        # Killed after the last step was checkpointed: the model is done, only final/ is missing.
        run.save_final(lambda path: _copy_model_files(checkpoint, path))
        plot_loss(run.read_metrics(), run.path / "loss.png")
        run.update(status="completed", final_step=_finished(checkpoint))
        say(f"done: {run.final}\nchat with it: tunestack infer --model {run.path}")
        return run
    run.update(status="running")
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:
        run.update(status="interrupted")
        say(f"interrupted; continue with: tunestack {task} --output_dir {run.path} --resume")
        raise
    except BaseException:
        run.update(status="failed")
        raise
    _save_final(run, trainer.model, trainer.processing_class)
    run.update(status="completed", final_step=trainer.state.global_step,
               final_loss=_last_loss(trainer.state.log_history))
    say(f"done: {run.final}\nchat with it: tunestack infer --model {run.path}")
    if train_args.eval_tasks:
        from tunestack.train.setup import evaluate_final

        del trainer
        evaluate_final(run, model_args, data_args, train_args)
    return run


def build_trainer(model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs, train_args: TrainArgs,
                  run: RunDir, task: str = "sft"):
    """Data, model, tuner and a ready Trainer writing into `run` (whose manifest is written for a fresh run)."""
    from tunestack.data import load_datasets
    from tunestack.data.encode import encode_rows
    from tunestack.hub import resolve_model
    from tunestack.train.setup import new_manifest, rows_fingerprint

    # Data first: a bad row fails here, before a model is loaded or a run directory is touched.
    splits = load_datasets(data_args, task=task, seed=train_args.seed)
    resolved = resolve_model(model_args.model, hub=model_args.hub, revision=model_args.revision)
    say(f"model: {resolved.source}")

    from tunestack.model.load import load_model, load_tokenizer
    from tunestack.model.precision import dtype_name, resolve_dtype

    tokenizer, template = load_tokenizer(resolved.path, model_args.template, model_args.trust_remote_code,
                                         fallback_template=resolved.template)
    encode = dict(tokenizer=tokenizer, task=task, max_length=data_args.max_length,
                  truncation=data_args.truncation, packing=data_args.packing)
    if data_args.streaming:
        from tunestack.data.stream import EncodedStream

        train_rows, stats = EncodedStream(splits.train, **encode), None
        say("training data: streamed, encoded as it is read")
    else:
        train_rows, stats = encode_rows(splits.train, source="training data", **encode)
        say(f"training data: {stats.summary()}")
    val_rows = None
    if splits.val is not None:
        val_rows, val_stats = encode_rows(splits.val, source="validation data", **encode)
        say(f"validation data: {val_stats.summary()}")

    run.prepare(resume=train_args.resume, overwrite=train_args.overwrite_output_dir)
    compute = resolve_dtype("bf16" if train_args.bf16 else "fp32") if train_args.bf16 is not None \
        else resolve_dtype(model_args.dtype)
    # Frozen base weights may live in the compute dtype; fully trained weights stay fp32 under autocast.
    weights = compute if tuner_args.tuner != "full" else resolve_dtype("fp32")
    model = load_model(resolved.path, weights, model_args.attn_implementation,
                       quantize_4bit=tuner_args.tuner == "qlora", trust_remote_code=model_args.trust_remote_code,
                       tokenizer=tokenizer, train_length=data_args.max_length, packed=data_args.packing)

    from transformers import set_seed

    from tunestack.model.tuners import attach_tuner, trainable_summary

    set_seed(train_args.seed)  # adapter initialisation draws from the global generator
    model = attach_tuner(model, tuner_args, train_args.gradient_checkpointing)
    say(f"tuner: {tuner_args.tuner}, {trainable_summary(model)}, precision {dtype_name(compute)}")

    data_report = dict(splits.report)
    if stats is not None:
        data_report.update(encoded=vars(stats), train_fingerprint=rows_fingerprint(train_rows))
    if not train_args.resume:
        run.write_manifest(new_manifest(task, model_args, data_args, tuner_args, train_args, resolved,
                                        template, dtype_name(compute), data_report))
    return _build_trainer(model, tokenizer, train_rows, val_rows, train_args, run, tuner_args, compute)


def _build_trainer(model, tokenizer, train_rows, val_rows, args: TrainArgs, run: RunDir, tuner_args, compute):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tunestack.data.encode import to_dataset
    from tunestack.data.packing import Collator
    from tunestack.train.trainer import TokenCountingCollator, TunestackTrainer, run_callbacks, training_arguments

    default_lr = 1e-5 if tuner_args.tuner == "full" else 1e-4
    training_args = training_arguments(args, str(run.checkpoints), compute,
                                       learning_rate=args.learning_rate or default_lr, has_eval=bool(val_rows))
    trainer = TunestackTrainer(
        model=model,
        args=training_args,
        train_dataset=train_rows if not isinstance(train_rows, list) else to_dataset(train_rows),
        eval_dataset=to_dataset(val_rows) if val_rows else None,
        data_collator=TokenCountingCollator(Collator(tokenizer.pad_token_id)),
        processing_class=tokenizer,
        callbacks=run_callbacks(run, keep=args.save_total_limit),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
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
    import json

    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state["global_step"] if state["global_step"] >= state["max_steps"] > 0 else 0


def _copy_model_files(checkpoint: Path, target: Path) -> None:
    import shutil

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


def _last_loss(history: list[dict]) -> float | None:
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return losses[-1] if losses else None
