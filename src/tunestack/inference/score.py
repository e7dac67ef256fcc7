"""`tunestack infer --score`: rewards from a reward model for one prompt and answer, or for each row of a file.

A conversation is rendered with the reward model's own chat template exactly as `tunestack rm` trained on it
(data/tokenize.py::conversation_ids), and the head reads its last token."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunestack.config import InferArgs, ModelArgs
from tunestack.errors import ConfigError, DataError


class RewardScorer:
    """A reward model in evaluation mode that turns whole conversations into one number each."""

    def __init__(self, model, tokenizer, source: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source

    def score(self, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
        """The reward of each conversation (prompt and answer messages), in order."""
        import torch

        from tunestack.data.tokenize import conversation_ids

        rows = [conversation_ids(self.tokenizer, messages) for messages in conversations]
        pad, device = self.tokenizer.pad_token_id, self.model.device
        rewards = []
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            width = max(map(len, batch))
            # Padded on the right, as in training: the head reads the last token that is not padding.
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch], device=device)
            with torch.no_grad():
                rewards += self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
        return rewards


def load_scorer(model_args: ModelArgs, adapters: list[str] = ()) -> RewardScorer:
    """The reward model `model_args.model` names (a `tunestack rm` run, with its chain merged), ready to score."""
    from tunestack.inference.loading import load_for_inference

    loaded = load_for_inference(model_args, adapters, head="reward")
    return RewardScorer(loaded.model, loaded.tokenizer, loaded.source)


def run_score(model_args: ModelArgs, args: InferArgs) -> None:
    problems = []
    if args.prompt is None and not args.input:
        problems.append("--score: give --prompt (with --response, the answer to rate) or --input FILE")
    if args.backend != "pt":
        problems.append(f"--backend {args.backend}: --score runs on the pt backend; drop --backend")
    if problems:
        raise ConfigError(problems)
    rows = read_scored_rows(Path(args.input), args.system) if args.input else None  # bad rows fail before loading
    scorer = load_scorer(model_args, args.adapter)
    if rows is None:
        messages = [{"role": "user", "content": args.prompt}]
        if args.response is not None:
            messages.append({"role": "assistant", "content": args.response})
        if args.system:
            messages.insert(0, {"role": "system", "content": args.system})
        print(f"{scorer.score([messages])[0]:.6g}", flush=True)
        return
    _score_file(scorer, rows, args)


def read_scored_rows(path: Path, system: str | None = None) -> list[tuple[dict, list[list[dict]]]]:
    """Each row with the conversations to score: one (prompt + response, or messages) or two (prompt + chosen,
    prompt + rejected). The first row decides which kind the file holds."""
    from tunestack.data.formats import canonical_rows
    from tunestack.data.messages import completion_messages, prompt_messages, with_system
    from tunestack.data.readers import read_rows

    located = list(read_rows(path))
    if not located:
        raise DataError(f"{path}: no rows to score (empty file)")
    first = located[0][1]
    if "chosen" in first or "rejected" in first:
        pairs = canonical_rows(located, "preference", system)
        return [(row, [p["prompt"] + p["chosen"], p["prompt"] + p["rejected"]]) for (_, row), p in zip(located, pairs)]
    answer = next((key for key in ("response", "completion") if key in first), None)
    if "prompt" in first and answer is not None:
        scored = []
        for where, row in located:
            if "prompt" not in row or answer not in row:
                raise DataError(f'{where}: expected "prompt" and "{answer}" like the first row, found keys {sorted(row)}')
            prompt = with_system(prompt_messages(row["prompt"], "prompt", where), system)
            scored.append((row, [prompt + completion_messages(row[answer], answer, where, prompt)]))
        return scored
    return [(row, [c["messages"]]) for (_, row), c in zip(located, canonical_rows(located, "sft", system))]


def _score_file(scorer: RewardScorer, rows: list, args: InferArgs) -> None:
    conversations = [c for _, pair in rows for c in pair]
    rewards = iter(scorer.score(conversations, args.batch_size))
    wins = 0
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for row, scored in rows:
            if len(scored) == 2:
                chosen, rejected = next(rewards), next(rewards)
                wins += chosen > rejected
                row = {**row, "chosen_reward": chosen, "rejected_reward": rejected, "chosen_wins": chosen > rejected}
            else:
                row = {**row, "reward": next(rewards)}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if len(rows[0][1]) == 2:
        print(f"chosen scored above rejected in {wins} of {len(rows)} pairs ({100 * wins / len(rows):.1f}%)",
              file=sys.stderr)
