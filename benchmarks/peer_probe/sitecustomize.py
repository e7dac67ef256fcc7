"""The probe `train_peers.py` puts on every training process's path: the same measurement in every tool.

Python imports `sitecustomize` at start-up. This one waits, without importing anything heavy, until
`transformers.trainer` is imported (every tool measured trains with a transformers Trainer subclass), then wraps
`Trainer.training_step` to record each micro-batch's real tokens (the attention mask's ones per row; without a
mask, the examples of rows whose positions restart at 0, as packed or padding-free rows carry them) and adds a
callback that stamps the wall-clock end of every optimizer step. When training ends, the record goes to
$TUNESTACK_PROBE_FILE as JSON, with the linear weights the FLOPs formula needs (frozen and trainable).

It runs inside other tools' environments, so it imports nothing from this repository: `_flop_counts` repeats
train_throughput.py's `flop_counts`.
"""

import functools
import importlib.machinery
import json
import os
import sys
import time

_RECORD = {"batches": [], "step_ends": [], "counts": None}


def _lengths(inputs) -> list[int]:
    mask = inputs.get("attention_mask") if hasattr(inputs, "get") else None
    if mask is not None and mask.dim() == 2:
        return [int(n) for n in mask.sum(-1).tolist()]
    positions = inputs.get("position_ids") if hasattr(inputs, "get") else None
    if positions is not None and positions.dim() == 2:  # packed or joined rows: each example from its position 0
        lengths = []
        for row in positions.tolist():
            starts = [i for i, p in enumerate(row) if p == 0] + [len(row)]
            lengths += [b - a for a, b in zip(starts, starts[1:])]
        return lengths
    ids = inputs["input_ids"]
    return [int(ids.shape[-1])] * int(ids.shape[0])


def _flop_counts(model) -> dict:
    import torch

    frozen = trainable = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            if module.weight.requires_grad:
                trainable += module.weight.numel()
            else:
                frozen += module.weight.numel()
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {"n_frozen": frozen, "n_lora": trainable, "n_layers": config.num_hidden_layers,
            "d_attn": config.num_attention_heads * head_dim}


def _instrument(trainer_module) -> None:
    from transformers import TrainerCallback

    Trainer = trainer_module.Trainer

    class _Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            _RECORD["counts"] = _flop_counts(model)

        def on_step_end(self, args, state, control, **kwargs):
            _RECORD["step_ends"].append(time.time())

        def on_train_end(self, args, state, control, **kwargs):
            path = os.environ.get("TUNESTACK_PROBE_FILE")
            if path and args.process_index == 0:
                with open(path, "w") as fh:
                    json.dump(_RECORD, fh)

    init, step = Trainer.__init__, Trainer.training_step

    @functools.wraps(init)  # tools read the signature (ms-swift picks `tokenizer` or `processing_class` by it)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(_Clock())

    @functools.wraps(step)
    def training_step(self, model, inputs, *args, **kwargs):
        _RECORD["batches"].append(_lengths(inputs))
        return step(self, model, inputs, *args, **kwargs)

    Trainer.__init__, Trainer.training_step = __init__, training_step


class _Finder:
    """Finds `transformers.trainer` as usual and instruments it right after it executes."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers.trainer":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _instrument(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("TUNESTACK_PROBE_FILE"):
    sys.meta_path.insert(0, _Finder())
