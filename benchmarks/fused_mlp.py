"""The LoRA-adapted MLPs run module by module under peft, against the fused function of model/fused.py.

On the embedded model with LoRA (rank 8, alpha 32, every linear layer), `--batch` random rows of `--length` tokens,
every token a target, the same rows on both sides: the activations kept for the backward pass (counted exactly,
through autograd's saved-tensor hooks, the weights left out), the median step time over `--steps` optimizer steps
after one untimed, the peak RSS above the RSS just before the first step, and the losses, which must be the same.
Each side runs in a process of its own, so that its peak memory is its own.

Usage:
    python benchmarks/fused_mlp.py                           # fp32 and bf16, 4 x 128 tokens, about 2 minutes
    python benchmarks/fused_mlp.py --dtypes fp32 --length 512
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from output_head import MODEL, compare, timed, write_results  # noqa: E402


def side(dtype: str, fused: bool, batch: int, length: int, steps: int) -> dict:
    """One side, in this process."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from tunestack.config import ModelArgs
    from tunestack.inference.loading import load_for_inference
    from tunestack.model.fused import fuse_lora_mlps
    from tunestack.train.trainer import TunestackTrainer

    torch.manual_seed(0)
    loaded = load_for_inference(ModelArgs(model=MODEL, dtype=dtype))
    model = get_peft_model(loaded.model.train(), LoraConfig(r=8, lora_alpha=32, target_modules="all-linear",
                                                            lora_dropout=0.0))
    model.config.use_cache = False
    layers = fuse_lora_mlps(model) if fused else 0
    trainer = TunestackTrainer(model=model, args=TrainingArguments(output_dir="/tmp/fused-mlp-bench", use_cpu=True,
                                                                    report_to="none"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (batch, length))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step(count: bool = False):
        with torch.autograd.graph.saved_tensors_hooks(keep if count else (lambda t: t), lambda t: t):
            loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    step(count=True)  # untimed: first-call allocations and the optimizer's states; the saved activations counted
    times, losses, start_rss, peak = timed(step, steps)
    return {"dtype": str(loaded.model.dtype).removeprefix("torch."), "fused_layers": layers,
            "saved_activations_mb": round(sum(saved.values()) / 2**20, 1), "step_s": statistics.median(times),
            "tokens_per_s": batch * length / statistics.median(times),
            "peak_above_start_mb": round(peak - start_rss), "losses": losses}


def main() -> None:
    compared = compare(__doc__, __file__, side, ("plain", "fused"), 128, "benchmarks/results/fused_mlp.json")
    if compared is None:
        return
    args, rows = compared
    from tunestack.plan.device import cpu_name

    print(f"{cpu_name()}; LoRA on {MODEL}, {args.batch} x {args.length} tokens, every one a target")
    print(f"{'dtype':<9} {'MLP':<6} {'saved activations MB':>21} {'s/step':>7} {'tokens/s':>9} "
          f"{'peak above start MB':>20}  losses")
    for r in rows:
        print(f"{r['dtype']:<9} {'fused' if r['fused_layers'] else 'plain':<6} {r['saved_activations_mb']:>21} "
              f"{r['step_s']:>7.3f} {r['tokens_per_s']:>9.0f} {r['peak_above_start_mb']:>20}  "
              f"{' '.join(f'{x:.4f}' for x in r['losses'])}")
    write_results(args, rows)


if __name__ == "__main__":
    main()
