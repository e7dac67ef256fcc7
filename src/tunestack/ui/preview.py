"""The Train tab's data preview: the first rows as the trainer sees them, rendered by the model's own chat template,
with the tokens the loss falls on marked (the same encoding the run uses: data/encode.py and data/tokenize.py)."""

from __future__ import annotations

from tunestack.data.tokenize import IGNORE_INDEX

Segment = tuple[str, str | None]
"""A stretch of text and its mark (None: not trained on), as gr.HighlightedText shows it."""


def preview(ctx, task: str, model: str, dataset: str, max_length: int = 1024, rows: int = 3) -> list[Segment]:
    """The first `rows` examples of `dataset` for training command `task` on `model`'s tokenizer."""
    from tunestack.config import DataArgs, ModelArgs, TunerArgs
    from tunestack.data import load_datasets
    from tunestack.model.load import load_tokenizer
    from tunestack.train.policy import starting_point
    from tunestack.ui.paths import is_path_like
    from tunestack.ui.train_form import method

    for text, what in ((model, "--model"), (dataset.split("#")[0], "--dataset")):
        if is_path_like(text):
            ctx.check_path(text, must_exist=False, what=what)
    data_task = method(task).task
    splits = load_datasets(DataArgs(dataset=[d.strip() for d in dataset.split(",") if d.strip()],
                                    max_length=int(max_length)), task=data_task)
    start = starting_point(ModelArgs(model=model), TunerArgs())
    tokenizer, _ = load_tokenizer(start.resolved.path, fallback_template=start.resolved.template)
    segments: list[Segment] = []
    for index in range(min(rows, len(splits.train))):
        segments.append((f"{'' if index == 0 else chr(10) * 2}── example {index + 1} ──\n", None))
        segments += row_segments(tokenizer, splits.train[index], data_task, int(max_length))
    return segments


def row_segments(tokenizer, row: dict, task: str, max_length: int) -> list[Segment]:
    """One canonical row as marked text: `trained` on the tokens with loss (sft, pt), the chosen and rejected
    answers (preference), the desirable or undesirable completion (kto); prompts-only rows show the prompt the
    policy continues and the gold answer its rewards see."""
    from tunestack.data.encode import EncodeStats, encode_examples
    from tunestack.data.tokenize import encode_conversation, generation_prompt_ids

    if task in ("sft", "pt"):
        encoded = encode_examples([row], tokenizer, task, max_length, "truncate", EncodeStats())
        if not encoded:
            return [("(left out of training: nothing to train on within --max_length)", None)]
        return marked(tokenizer, encoded[0]["input_ids"], encoded[0]["labels"], "trained")
    if task == "preference":
        out = []
        for answer in ("chosen", "rejected"):
            item = encode_conversation(tokenizer, row["prompt"] + row[answer], max_length)
            out += [(f"[{answer}]\n", None)] + marked(tokenizer, item.input_ids, item.labels, answer)
        return out
    if task == "kto":
        item = encode_conversation(tokenizer, row["prompt"] + row["completion"], max_length)
        return marked(tokenizer, item.input_ids, item.labels, "desirable" if row["label"] else "undesirable")
    out = [(tokenizer.decode(generation_prompt_ids(tokenizer, row["prompt"])), None)]
    return out + ([("\n", None), (str(row["answer"]), "gold answer")] if row.get("answer") is not None else [])


def marked(tokenizer, input_ids: list[int], labels: list[int], mark: str) -> list[Segment]:
    """Consecutive tokens grouped by whether the loss falls on them, each group decoded as one piece of text."""
    segments: list[Segment] = []
    group: list[int] = []
    trained = None
    for token, label in zip(input_ids, labels):
        on = label != IGNORE_INDEX
        if group and on != trained:
            segments.append((tokenizer.decode(group), mark if trained else None))
            group = []
        group.append(token)
        trained = on
    if group:
        segments.append((tokenizer.decode(group), mark if trained else None))
    return segments
