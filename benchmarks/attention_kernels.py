"""Which attention kernel the packed-row kernel should run per group of examples, on this CPU.

The packed-row kernel (`tunestack_packed`, model/attention.py) attends packed and padding-free training rows per
example, in groups of similar length, each example padded to its group's longest. A group is attended either by the
grouped operations (matmul, mask, softmax, matmul: the scores kept for the backward pass) or by sdpa's causal kernel
(flash attention on a CPU: no scores kept). `model.attention.flash_from` says from which longest example the
kernel uses sdpa's, per dtype; this script measures what that rule stands on.

What runs.
  1. The two kernels alone, forward and backward, on grids of the embedded model's attention shape (9 query heads,
     3 key/value heads, head dim 64), about 2,048 tokens a grid: `examples x length` for lengths 48 to 1,024.
  2. One training step (forward and backward) of the embedded smollm2-135m-instruct with LoRA (rank 8, every linear
     layer, tunestack's fused modules) on one padding-free row of 1,024 tokens made of examples of one length, with
     the rule (`flash_from`) and with the grouped operations for every group (the kernel before the rule), in
     turn, one untimed round first; also the bytes autograd keeps (saved-tensor hooks, each storage once).
  3. The grouped eager kernel's (`tunestack_eager`, unpacked rows) two ways over padded rows under eager attention's
     additive mask: its grouped operations, and sdpa's kernel under the same mask, which it runs from `flash_from`
     tokens on.
Each figure is the median of `--repeats` timed runs (the kernels alone: after two untimed ones). fp32 always; bf16
where this CPU has native bf16 (AMX or AVX-512 BF16), or with `--dtypes fp32,bf16`.

The training steps' process peaked at 13-18 GB of resident memory on a 24 GB machine (one step alone, 3.4-4.6 GB;
what makes the rest was not found): on less memory, run one dtype at a time (`--dtypes fp32`, then `--dtypes bf16`).

Usage:
    python benchmarks/attention_kernels.py              # about ten minutes on a 2-core CPU
    python benchmarks/attention_kernels.py --quick      # fewer lengths and repeats
    python benchmarks/attention_kernels.py --no_steps   # the kernels alone (parts 1 and 3), about two minutes
    python benchmarks/attention_kernels.py --output /tmp/attention.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
ROW = 1024


def timed(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def kernels(dtype, lengths, repeats: int, padded: bool = False) -> list[dict]:
    """The grouped operations against sdpa's kernel over the same grids: packed examples of one length, causal
    (sdpa's causal kernel); `padded`: the grouped eager kernel's unpacked rows, row i padded by 40 * i tokens at its
    end, under eager attention's additive mask (sdpa's kernel under the same mask)."""
    import torch
    import torch.nn.functional as F

    from tunestack.model.attention import _grouped, flash_from

    rows = []
    for length in lengths:
        n = max(1, 2048 // length)
        q = torch.randn(n, 9, length, 64, dtype=dtype, requires_grad=True)
        k, v = (torch.randn(n, 3, length, 64, dtype=dtype, requires_grad=True) for _ in range(2))
        grad = torch.randn(n, 9, length, 64, dtype=dtype)
        valid = torch.arange(length)[None] < (length - (40 if padded else 0) * torch.arange(n))[:, None]
        allowed = torch.ones(length, length, dtype=torch.bool).tril()[None] & valid[:, None, :]
        mask = torch.zeros(n, 1, length, length, dtype=dtype).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
        blocked = ~allowed[:, None]  # as the packed kernel masks its grids

        def grouped():
            masked = (lambda s: s + mask) if padded else (lambda s: s.masked_fill(blocked, float("-inf")))
            _grouped(q, k, v, 0.125, 0.0, True, masked)[0].backward(grad)

        def sdpa():
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask if padded else None, is_causal=not padded,
                                           scale=0.125, enable_gqa=True).backward(grad)

        grouped_ms, sdpa_ms = timed(grouped, repeats), timed(sdpa, repeats)
        rows.append({"length": length, "rows" if padded else "examples": n, "grouped_ms": round(grouped_ms, 2),
                     "sdpa_ms": round(sdpa_ms, 2), "grouped_over_sdpa": round(grouped_ms / sdpa_ms, 2),
                     "rule": "sdpa" if length >= flash_from(q.element_size(), masked=padded) else "grouped"})
    return rows


def training_steps(dtype, lengths, repeats: int) -> list[dict]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunestack.hub.resolve import resolve_model
    from tunestack.model import attention
    from tunestack.model.fused import fuse_lora_linears, fuse_lora_mlps, fuse_rms_norms

    path = resolve_model("smollm2-135m-instruct").path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attention.register())
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules="all-linear")).train()
    fuse_lora_mlps(model), fuse_rms_norms(model), fuse_lora_linears(model)
    rule = attention.flash_from
    rows = []
    for length in lengths:
        n = ROW // length
        ids = torch.randint(0, 10_000, (1, n * length))
        positions = torch.arange(length).repeat(n).unsqueeze(0)

        def step():
            model(input_ids=ids, position_ids=positions, labels=ids).loss.backward()

        def kept() -> int:
            storages = {}

            def pack(t):
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = model(input_ids=ids, position_ids=positions, labels=ids).loss
            del loss
            return sum(storages.values())

        sides = {"rule": rule, "grouped everywhere": lambda element_bytes: 1 << 30}
        times = {side: [] for side in sides}
        result = {"length": length, "examples": n}
        try:
            for run in range(repeats + 1):  # the sides in turn; the first round untimed
                for side, flash in sides.items():
                    attention.flash_from = flash
                    start = time.perf_counter()
                    step()
                    times[side].append(time.perf_counter() - start)
                    model.zero_grad(set_to_none=True)
                    if run == 0:
                        result[f"{side} kept MB"] = round(kept() / 2**20, 1)
        finally:
            attention.flash_from = rule
        for side in sides:
            result[f"{side} ms"] = round(statistics.median(times[side][1:]) * 1000, 1)
        result["speedup"] = round(result["grouped everywhere ms"] / result["rule ms"], 2)
        rows.append(result)
    model = None
    gc.collect()  # before the next dtype's model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default=None, help="comma-separated: fp32, bf16 (default: fp32, and bf16 where "
                                                          "this CPU has native bf16)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no_steps", action="store_true", help="the kernels alone, no training steps")
    parser.add_argument("--output", default="benchmarks/results/attention_kernels.json")
    args = parser.parse_args()

    import torch

    from tunestack.model.precision import cpu_has_fast_bf16
    from tunestack.plan.device import cpu_name

    names = args.dtypes.split(",") if args.dtypes else ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])
    kernel_lengths = [64, 256, 1024] if args.quick else [48, 96, 128, 192, 256, 384, 512, 768, 1024]
    step_lengths = [128, 512] if args.quick else [64, 128, 256, 512, 1024]
    repeats = 2 if args.quick else args.repeats
    torch.manual_seed(0)
    result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "kernels": {}, "padded_rows": {},
              "training_steps": {}}
    print(cpu_name())
    parts = [("kernels", lambda dtype: kernels(dtype, kernel_lengths, repeats),
              "one attention call, forward and backward, ~2,048 tokens per grid"),
             ("padded_rows", lambda dtype: kernels(dtype, kernel_lengths[-5:], repeats, padded=True),
              "the grouped eager kernel over padded rows, forward and backward, ~2,048 tokens")]
    if not args.no_steps:
        parts.append(("training_steps", lambda dtype: training_steps(dtype, step_lengths, repeats),
                      f"a LoRA training step of the embedded model, one padding-free row of {ROW:,} tokens"))
    for part, run, title in parts:
        for name in names:
            result[part][name] = rows = run(getattr(torch, DTYPES[name]))
            print(f"\n{name}: {title}")
            print("| " + " | ".join(rows[0]) + " |\n|" + "---:|" * len(rows[0]))
            for r in rows:
                print("| " + " | ".join(str(value) for value in r.values()) + " |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
