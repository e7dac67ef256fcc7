"""Log-likelihood of continuations under a local model, batched, with lm-evaluation-harness's tokenization rules."""

from __future__ import annotations

import inspect
from collections.abc import Callable


def encode(tokenizer, text: str) -> list[int]:
    """Token ids as the harness's `tok_encode` makes them: the tokenizer's own special-token rule."""
    return tokenizer(text)["input_ids"]


def encode_pair(tokenizer, context: str, continuation: str, prefix_id: int) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids): trailing whitespace moves to the continuation, context + continuation are
    tokenized together and split after the context's own token count; an empty context becomes `prefix_id`."""
    if not context:
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return ([prefix_id], cont) if cont[0] != prefix_id else (cont[:1], cont[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def context_window(model, tokenizer) -> int:
    """The longest input the model takes, found where the harness looks for it."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 10**9 else 2048


class LoglikScorer:
    """Sums of continuation token log-probabilities: right-padded batches, each distinct input run once (choices
    that differ only in their last token share one forward pass), logits only at continuation positions."""

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = context_window(model, tokenizer)
        self.prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def score(self, pairs: list[tuple[str, str]], progress: Callable[[int], None] | None = None
              ) -> list[tuple[float, bool, list[int]]]:
        """(log-likelihood, whether greedy decoding would produce the continuation, continuation ids) per pair."""
        groups: dict[tuple, list[tuple[int, list[int]]]] = {}
        for index, (context, continuation) in enumerate(pairs):
            ctx, cont = encode_pair(self.tokenizer, context, continuation, self.prefix_id)
            inputs = tuple((ctx + cont)[-(self.max_length + 1):][:-1])
            groups.setdefault((inputs, len(cont)), []).append((index, cont))
        keys = sorted(groups, key=lambda k: -len(k[0]))
        results: list = [None] * len(pairs)
        for start in range(0, len(keys), self.batch_size):
            batch = keys[start:start + self.batch_size]
            for key, logprobs in zip(batch, self._forward(batch)):
                for index, cont in groups[key]:
                    results[index] = self._pick(logprobs, cont)
                if progress:
                    progress(len(groups[key]))
        return results

    def _forward(self, keys: list[tuple]):
        """Per key, the log-softmax rows (float32) at the positions that predict its continuation tokens."""
        import torch

        width = max(len(inputs) for inputs, _ in keys)
        ids = torch.full((len(keys), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(keys), width), dtype=torch.long)
        spans = []
        for row, (inputs, cont_len) in enumerate(keys):
            ids[row, :len(inputs)] = torch.tensor(inputs)
            mask[row, :len(inputs)] = 1
            spans.append(range(len(inputs) - cont_len, len(inputs)))
        positions = sorted({p for span in spans for p in span})
        column = {p: i for i, p in enumerate(positions)}
        device = self.model.device
        kwargs = {"logits_to_keep": torch.tensor(positions, device=device)} if self._keeps_logits else {}
        with torch.no_grad():  # not inference_mode: optimum-quanto's int4 weights fail inside it
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
        if not self._keeps_logits:
            return [logprobs[row, list(span)] for row, span in enumerate(spans)]
        return [logprobs[row, [column[p] for p in span]] for row, span in enumerate(spans)]

    @staticmethod
    def _pick(logprobs, cont: list[int]) -> tuple[float, bool, list[int]]:
        import torch

        target = torch.tensor(cont, device=logprobs.device)
        rows = logprobs[-len(cont):] if cont else logprobs[:0]
        total = rows.gather(1, target[:, None]).sum().item() if cont else 0.0
        greedy = bool((rows.argmax(-1) == target).all()) if cont else True
        return total, greedy, cont
