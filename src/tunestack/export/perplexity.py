"""Perplexity of a causal LM on one text, so an export can show how much merging or quantizing changed the model."""

from __future__ import annotations

import math
import warnings
from importlib.resources import files
from pathlib import Path

from tunestack.errors import TunestackError

WINDOW = 512
"""Most tokens scored in one forward pass; the text is cut into consecutive windows of at most this many."""
BUILTIN = "built-in held-out passage (tunestack/export/heldout.txt)"


def read_text(path: str | None) -> tuple[str, str]:
    """The text to score and how export.json names it: the --ppl_text file, else the built-in passage."""
    if path:
        return Path(path).expanduser().read_text(encoding="utf-8"), str(Path(path).expanduser().absolute())
    return files("tunestack.export").joinpath("heldout.txt").read_text(encoding="utf-8"), BUILTIN


def perplexity(model, tokenizer, text: str) -> tuple[float, int]:
    """exp(mean next-token loss) over `text`, scored in windows of at most WINDOW tokens; and the token count."""
    import torch

    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    limit = min(WINDOW, getattr(model.config, "max_position_embeddings", None) or WINDOW)
    device = next(model.parameters()).device
    model.eval()
    total, scored = 0.0, 0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes warns on every int8 matmul
        for start in range(0, len(ids), limit):
            window = ids[start:start + limit].unsqueeze(0).to(device)
            if window.shape[1] < 2:
                continue
            logits = model(input_ids=window).logits.float()[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum").item()
            scored += window.shape[1] - 1
    if scored == 0:
        raise TunestackError(f"--ppl_text: the text is {len(ids)} token(s) long; perplexity needs at least 2")
    return math.exp(total / scored), len(ids)
