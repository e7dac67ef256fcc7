"""Single-stream decoding speed of the pt engine with and without speculative decoding, on this CPU.

Target (issue: speed where users feel it): single-stream tokens/s at least 2x plain decoding, greedy outputs
unchanged. Speculation pays where the drafts are right: prompt lookup when the answer repeats its input (editing,
quoting, extracting, code changes), a draft model when it predicts the target well.

What runs. The embedded smollm2-135m-instruct in the dtype `--dtype auto` picks here (bf16 on CPUs with AMX or
AVX-512 BF16, else fp32), greedy, `--max_tokens` new tokens per prompt, one sequence at a time through the engine
`tunestack infer` and `tunestack serve` use, for two kinds of prompt:
  - edit: "repeat this paragraph with one change" (the answer is mostly its input);
  - chat: short open questions (the answer is new text).
Drafters: none (plain decoding), prompt lookup (`--prompt_lookup_tokens`), and with `--draft_layers N` a draft
model made of the model's own first N layers, final norm and head (the same tokenizer by construction; untrained
as an exit, its drafts are rarely right: a real draft model is a smaller sibling of the same family).
With `--onednn_matvec` (bf16 on a CPU with native bf16), each side also runs with every product on oneDNN, as the
engine did before it sent one- and two-row bf16 products to ATen's matrix-vector kernel (model.precision.cpu_matvec).
With `--torch_compile`, each drafter also runs with the decoding step compiled over the static KV cache
(`tunestack infer --torch_compile`); its compile happens in the untimed warm-up.
Each row is the total generated tokens over the total wall time of its prompts, after one untimed warm-up; each
side runs `--repeats` times in turn and the fastest counts. Every speculative answer is compared with the plain one.

Usage:
    python benchmarks/decode_speed.py                 # a few minutes on a 2-core CPU
    python benchmarks/decode_speed.py --quick         # fewer prompts and tokens: a smoke check
    python benchmarks/decode_speed.py --torch_compile   # plus compiled decoding (a minute or two of compiling)
    python benchmarks/decode_speed.py --output /tmp/decode.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog near the river bank, where the old mill still turns its wheel "
    "every morning and the miller counts the sacks of flour before the carts arrive from the village.",
    "Our team meets every Tuesday at ten to review the open tickets, agree on the priorities for the week and "
    "write down who owns each task, so that nothing is forgotten when people are away.",
    "To install the package, create a virtual environment, activate it, upgrade pip, and then run pip install "
    "with the name of the package; check the version afterwards to make sure it worked.",
]
EDIT = "Repeat this paragraph exactly, but replace the first word with 'A':\n\n{}"
CHAT = ["Name three primary colors.", "What is the capital of France?", "Write a haiku about the sea.",
        "Explain what a CPU does in one sentence."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max_tokens", type=int, default=96)
    parser.add_argument("--prompt_lookup_tokens", type=int, default=8)
    parser.add_argument("--draft_layers", type=int, default=0)
    parser.add_argument("--num_speculative_tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="as tunestack's --dtype: auto, bf16, fp32")
    parser.add_argument("--torch_compile", action="store_true", help="also run each drafter with compiled steps")
    parser.add_argument("--onednn_matvec", action="store_true",
                        help="also run each side with oneDNN's bf16 products at one row (as before ATen's gemv)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default="benchmarks/results/decode_speed.json")
    args = parser.parse_args()
    if args.quick:
        args.max_tokens, args.repeats = 24, 1

    import torch

    from tunestack.config import ModelArgs
    from tunestack.inference.engine import SamplingParams
    from tunestack.inference.loading import load_for_inference
    from tunestack.inference.pt import PtEngine
    from tunestack.inference.speculative import DraftModel, PromptLookup
    from tunestack.model import precision
    from tunestack.plan.device import cpu_name

    loaded = load_for_inference(ModelArgs(model=args.model, dtype=args.dtype))
    default_rows = precision.MATVEC_ROWS
    model, tokenizer = loaded.model, loaded.tokenizer
    workloads = {
        "edit": [EDIT.format(p) for p in PARAGRAPHS[:1 if args.quick else None]],
        "chat": CHAT[:2 if args.quick else None],
    }
    drafters = {"plain": lambda: None,
                f"prompt lookup {args.prompt_lookup_tokens}": lambda: PromptLookup(args.prompt_lookup_tokens)}
    if args.draft_layers:
        draft = copy.deepcopy(model)
        draft.model.layers = draft.model.layers[:args.draft_layers]
        draft.config.num_hidden_layers = args.draft_layers
        drafters[f"draft: first {args.draft_layers} layers, {args.num_speculative_tokens}"] = \
            lambda: DraftModel(draft, args.num_speculative_tokens)
    drafters = {name: (make, False, precision.MATVEC_ROWS) for name, make in drafters.items()}
    if args.torch_compile:
        drafters.update({f"{name}, compiled": (make, True, rows) for name, (make, _, rows) in drafters.items()})
    if args.onednn_matvec and precision.cpu_has_fast_bf16() and model.dtype == torch.bfloat16:
        drafters.update({f"{name}, oneDNN matvec": (make, compiled, 0)
                         for name, (make, compiled, _) in list(drafters.items())})
    params = SamplingParams(max_new_tokens=args.max_tokens)

    def encode(text: str) -> list[int]:
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]

    def run(side, prompts):
        make, compiled, matvec_rows = side
        engine = PtEngine(model, tokenizer.pad_token_id, loaded.eos_token_ids, speculator=make(),
                          compile_decode=compiled)
        precision.MATVEC_ROWS = matvec_rows
        try:
            engine.generate([encode(prompts[0])], SamplingParams(max_new_tokens=4))  # warm-up
            engine.speculation.proposed = engine.speculation.accepted = 0
            start, answers = time.perf_counter(), []
            for prompt in prompts:
                answers.append(engine.generate([encode(prompt)], params)[0])
            return answers, time.perf_counter() - start, engine.speculation
        finally:
            engine.close()
            precision.MATVEC_ROWS = default_rows

    rows = []
    with torch.no_grad():
        for workload, prompts in workloads.items():
            best: dict[str, tuple] = {}
            for _ in range(args.repeats):
                for name, make in drafters.items():
                    answers, seconds, stats = run(make, prompts)
                    if name not in best or seconds < best[name][1]:
                        best[name] = (answers, seconds, stats)
            plain_answers, plain_seconds, _ = best["plain"]
            for name, (answers, seconds, stats) in best.items():
                tokens = sum(len(a) for a in answers)
                plain_rate = sum(len(a) for a in plain_answers) / plain_seconds
                rows.append({"workload": workload, "drafter": name, "tokens": tokens,
                             "tokens_per_s": round(tokens / seconds, 2),
                             "speedup": round(tokens / seconds / plain_rate, 2),
                             "acceptance": round(stats.acceptance_rate, 3) if stats.proposed else None,
                             "same_as_plain": answers == plain_answers})

    print(f"{cpu_name()}, {model.dtype}, greedy, {args.max_tokens} new tokens a prompt")
    print(f"{'workload':<8} {'drafter':<44} {'tokens':>6} {'tok/s':>7} {'speedup':>7} {'accept':>6}  same")
    for r in rows:
        accept = f"{r['acceptance']:.2f}" if r["acceptance"] is not None else "-"
        print(f"{r['workload']:<8} {r['drafter']:<44} {r['tokens']:>6} {r['tokens_per_s']:>7.1f} "
              f"{r['speedup']:>6.2f}x {accept:>6}  {r['same_as_plain']}")
    result = {"cpu": cpu_name(), "dtype": str(model.dtype),
              "model": args.model, "max_tokens": args.max_tokens, "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
