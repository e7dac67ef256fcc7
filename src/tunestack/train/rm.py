"""Reward modelling (TRL's RewardTrainer): a one-output sequence-classification head learns to score the chosen
answer of each preference pair above the rejected one; validation reports the pairwise accuracy.

With an adapter the fresh `score` head trains in full beside it (model/tuners.py). Each side of a pair is the whole
conversation as the chat template renders it (data/tokenize.py::conversation_ids), exactly what
`tunestack infer --score` and the RL methods' reward models read."""

from __future__ import annotations

from tunestack.config import DataArgs
from tunestack.config.align import RmArgs
from tunestack.train.lifecycle import Method, Prepared, say


def encode(splits, tokenizer, data: DataArgs):
    """Token ids of prompt + chosen and prompt + rejected for each pair, cut to --max_length (keeping the start)."""
    train, counts = encode_pairs(splits.train, tokenizer, data.max_length, "training data")
    report = {"encoded": counts}
    val = None
    if splits.val is not None:
        val, val_counts = encode_pairs(splits.val, tokenizer, data.max_length, "validation data")
        report["encoded_val"] = val_counts
    return train, val, report


def encode_pairs(rows, tokenizer, max_length: int, source: str):
    """A datasets.Dataset of `chosen_ids` / `rejected_ids`, and what encoding did (pairs, tokens, truncated, dropped).

    A pair whose two sides are the same tokens once cut to --max_length teaches nothing and is dropped."""
    from datasets import Dataset

    from tunestack.data.tokenize import conversation_ids
    from tunestack.errors import DataError

    pairs, counts = [], {"pairs": 0, "tokens": 0, "truncated": 0, "dropped_identical": 0}
    for row in rows:
        chosen = conversation_ids(tokenizer, row["prompt"] + row["chosen"])
        rejected = conversation_ids(tokenizer, row["prompt"] + row["rejected"])
        counts["truncated"] += len(chosen) > max_length or len(rejected) > max_length
        chosen, rejected = chosen[:max_length], rejected[:max_length]
        if chosen == rejected:
            counts["dropped_identical"] += 1
            continue
        pairs.append({"chosen_ids": chosen, "rejected_ids": rejected})
        counts["pairs"] += 1
        counts["tokens"] += len(chosen) + len(rejected)
    summary = f"{counts['pairs']} pairs, {counts['tokens']:,} tokens"
    if counts["truncated"]:
        summary += f"; {counts['truncated']} truncated to --max_length {max_length}"
    if counts["dropped_identical"]:
        summary += f"; {counts['dropped_identical']} dropped (chosen and rejected identical within --max_length)"
    if not pairs:
        raise DataError(f"{source}: no usable pairs ({summary}); raise --max_length")
    say(f"{source}: {summary}")
    return Dataset.from_list(pairs), counts


def trainer(prepared: Prepared):
    from trl import RewardConfig, RewardTrainer

    config = prepared.training_args(RewardConfig, max_length=prepared.data.max_length, dataset_num_proc=None,
                                    center_rewards_coefficient=prepared.method_args.center_rewards_coefficient)
    return RewardTrainer(model=prepared.model, args=config, train_dataset=prepared.train,
                         eval_dataset=prepared.val, processing_class=prepared.tokenizer)


RM = Method("rm", "preference", trainer, encode=encode, head="reward", learning_rate=(1e-4, 1e-5),
            args=RmArgs)
