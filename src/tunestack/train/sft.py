"""Supervised fine-tuning: encode conversations with the loss on assistant turns, train with TunestackTrainer."""

from __future__ import annotations

from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs
from tunestack.run import RunDir
from tunestack.train.lifecycle import Method, Prepared, run_training, say


def encode(splits, tokenizer, data: DataArgs, task: str = "sft", processor=None):
    """Token ids and loss labels for the training (and validation) rows, with what encoding did, for run.json."""
    if processor is not None:
        return encode_media(splits, processor, data)
    from tunestack.data.encode import encode_rows
    from tunestack.data.tokenize import template_kwargs
    from tunestack.run.manifest import rows_fingerprint

    options = dict(tokenizer=tokenizer, task=task, max_length=data.max_length, truncation=data.truncation,
                   packing=data.packing, template_kwargs=template_kwargs(data.enable_thinking))
    if data.streaming:
        from tunestack.data.stream import EncodedStream

        say("training data: streamed, encoded as it is read")
        train, report = EncodedStream(splits.train, **options), {}
    else:
        train, stats = encode_rows(splits.train, source="training data", num_proc=data.num_proc, **options)
        say(f"training data: {stats.summary()}")
        report = {"encoded": vars(stats), "train_fingerprint": rows_fingerprint(train)}
    val = None
    if splits.val is not None:
        val, val_stats = encode_rows(splits.val, source="validation data", num_proc=data.num_proc, **options)
        say(f"validation data: {val_stats.summary()}")
    return train, val, report


def encode_media(splits, processor, data: DataArgs):
    """A vision-language model's rows: masked text with one placeholder per image (the processor expands them batch
    by batch)."""
    from tunestack.data.tokenize import template_kwargs
    from tunestack.data.vision import encode_media_rows

    if data.streaming:
        from tunestack.errors import ConfigError

        raise ConfigError(["--streaming: a vision-language model's rows are not streamed yet; drop --streaming"])
    options = dict(processor=processor, template_kwargs=template_kwargs(data.enable_thinking))
    train = encode_media_rows(splits.train, source="training data", **options)
    images = sum(len(row["images"]) for row in train)
    audios = sum(len(row["audios"]) for row in train)
    videos = sum(len(row["videos"]) for row in train)
    files = [f for source in splits.report["train"] for f in source["files"]]
    skipped = sum(f.get("skipped_media", 0) for f in files)
    say(f"training data: {len(train)} examples with {images} images" + (f", {audios} audio clips" if audios else "")
        + (f", {videos} videos" if videos else "")
        + (f"; {skipped} rows skipped for unreadable media (--on_bad_media skip), the first: "
           f"{next(f['media_problem'] for f in files if f.get('media_problem'))}" if skipped else ""))
    val = encode_media_rows(splits.val, source="validation data", **options) if splits.val is not None else None
    report = {"media": {"images": images, "audios": audios, "videos": videos, "skipped_rows": skipped}}
    if data.packing:
        from tunestack.data.vision import pack_text_rows

        train, packed = pack_text_rows(train, data.max_length, "training data")
        examples, rows = packed["text_rows"], packed["packed_rows"]
        say(f"training data: {examples} text-only example{'' if examples == 1 else 's'} packed into {rows} "
            f"row{'' if rows == 1 else 's'} of at most {data.max_length} tokens; rows with media stay one per row")
        if val is not None:
            val, _ = pack_text_rows(val, data.max_length, "validation data")
        report["media"]["packing"] = packed
    return train, val, report


def trainer(prepared: Prepared):
    """The trainer over encoded rows; a vision-language model's rows (lists of text, token ids and image references)
    are batched by its processor, which is saved with the run."""
    from tunestack.data.encode import to_dataset
    from tunestack.data.packing import Collator
    from tunestack.train.extensions import loss_function, metrics_function
    from tunestack.train.trainer import TokenCountingCollator, TunestackTrainer, predicted_ids

    train, val, args = prepared.train, prepared.val, prepared.training_args()
    metrics = metrics_function(prepared.args)
    if prepared.processor is not None:
        from tunestack.data.vision import MediaCollator

        collator, processing = MediaCollator(prepared.processor, prepared.data.max_length), prepared.processor
        args.remove_unused_columns = False  # the collator reads the rows' text and image references
    else:
        collator = Collator(prepared.tokenizer.pad_token_id, padding_free=bool(prepared.data.padding_free))
        processing = prepared.tokenizer
        train = to_dataset(train) if isinstance(train, list) else train
        val = to_dataset(val) if val else None
    return TunestackTrainer(
        model=prepared.model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=TokenCountingCollator(collator),
        processing_class=processing,
        compute_loss_func=loss_function(prepared.args),
        compute_metrics=metrics,
        preprocess_logits_for_metrics=predicted_ids if metrics is not None else None,
    )


SFT = Method("sft", "sft", trainer, encode=encode)


def run_sft(model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs, train_args: TrainArgs) -> RunDir:
    """Fine-tune `model_args.model` on `data_args.dataset`; everything lands in the run directory."""
    return run_training(SFT, model_args, data_args, tuner_args, train_args)
