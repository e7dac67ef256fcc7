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
With `--baseline REV` (a git revision of this repository, checked out into benchmarks/.peers/tunestack-REV), the
same prompts are also decoded plainly by that revision's engine in a subprocess, once in the dtype its own
`--dtype auto` picks and once in this run's. The 2x target is against e1cfa29, the last revision before the work
toward it (speculative and compiled decoding, bf16 on AVX-512 BF16 CPUs) began.
Each row is the total generated tokens over the total wall time of its prompts, after one untimed warm-up; each
side runs `--repeats` times in turn and the fastest counts. Every speculative answer is compared with the plain one.

Usage:
    python benchmarks/decode_speed.py                 # a few minutes on a 2-core CPU
    python benchmarks/decode_speed.py --quick         # fewer prompts and tokens: a smoke check
    python benchmarks/decode_speed.py --torch_compile   # plus compiled decoding (a minute or two of compiling)
    python benchmarks/decode_speed.py --torch_compile --baseline e1cfa29   # against the engine before the speed work
    python benchmarks/decode_speed.py --attention      # the compiled step's attention kernels alone (seconds)
    python benchmarks/decode_speed.py --output /tmp/decode.json
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

PEERS = Path(__file__).resolve().parent / ".peers"

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
    parser.add_argument("--baseline", metavar="REV", help="also decode plainly with this git revision's engine")
    parser.add_argument("--attention", action="store_true",
                        help="time the compiled step's attention alone (batched products, fused reductions), then stop")
    parser.add_argument("--engine_at", help=argparse.SUPPRESS)  # a checkout whose engine decodes: JSON to stdout
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default="benchmarks/results/decode_speed.json")
    args = parser.parse_args()
    if args.quick:
        args.max_tokens, args.repeats = 24, 1
    workloads = {
        "edit": [EDIT.format(p) for p in PARAGRAPHS[:1 if args.quick else None]],
        "chat": CHAT[:2 if args.quick else None],
    }
    if args.attention:
        attention_table(args)
        return
    if args.engine_at:
        sys.path.insert(0, str(Path(args.engine_at) / "src"))
        print(json.dumps(plain_decoding(args, workloads)))
        return

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
    baselines = run_baseline(args, model.dtype) if args.baseline else []
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

    def run(side, prompts):
        make, compiled, matvec_rows = side
        engine = PtEngine(model, tokenizer.pad_token_id, loaded.eos_token_ids, speculator=make(),
                          compile_decode=compiled)
        precision.MATVEC_ROWS = matvec_rows
        try:
            engine.generate([chat_ids(tokenizer, prompts[0])], SamplingParams(max_new_tokens=4))  # warm-up
            engine.speculation.proposed = engine.speculation.accepted = 0
            start, answers = time.perf_counter(), []
            for prompt in prompts:
                answers.append(engine.generate([chat_ids(tokenizer, prompt)], params)[0])
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
            for baseline in baselines:
                answers, seconds = baseline[workload]["answers"], baseline[workload]["seconds"]
                tokens = sum(len(a) for a in answers)
                rows.append({"workload": workload, "drafter": f"plain at {args.baseline}, {baseline['dtype']}",
                             "tokens": tokens, "tokens_per_s": round(tokens / seconds, 2),
                             "speedup": round(tokens / seconds / plain_rate, 2), "acceptance": None,
                             "same_as_plain": answers == plain_answers})

    print(f"{cpu_name()}, {model.dtype}, greedy, {args.max_tokens} new tokens a prompt")
    print(f"{'workload':<8} {'drafter':<44} {'tokens':>6} {'tok/s':>7} {'speedup':>7} {'accept':>6}  same")
    for r in rows:
        accept = f"{r['acceptance']:.2f}" if r["acceptance"] is not None else "-"
        print(f"{r['workload']:<8} {r['drafter']:<44} {r['tokens']:>6} {r['tokens_per_s']:>7.1f} "
              f"{r['speedup']:>6.2f}x {accept:>6}  {r['same_as_plain']}")
    for base in (r for r in rows if r["drafter"].startswith("plain at ")):
        ours = [r for r in rows if r["workload"] == base["workload"] and " at " not in r["drafter"]
                and "oneDNN" not in r["drafter"]]
        print(f"{base['workload']}: against {base['drafter'].removeprefix('plain at ')}: " + ", ".join(
            f"{r['drafter']} {r['tokens_per_s'] / base['tokens_per_s']:.2f}x" for r in ours))
    result = {"cpu": cpu_name(), "dtype": str(model.dtype), "baseline": args.baseline,
              "model": args.model, "max_tokens": args.max_tokens, "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


def chat_ids(tokenizer, text: str) -> list[int]:
    """`text` as one user turn in the model's chat template, ready for the assistant's answer."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]


def attention_table(args, positions: int = 256, calls: int = 50) -> None:
    """The attention of a compiled one-query decoding step over a static cache of `positions`, for every layer of
    `args.model`'s shape: the grouped kernel's batched matrix products (what the step ran before) against the fused
    reductions it runs now (`_decode_one`), with oneDNN on and off (off: what a one-row bf16 step runs under)."""
    import torch
    from transformers import AutoConfig

    from tunestack.hub import resolve_model
    from tunestack.model import attention
    from tunestack.model.precision import resolve_dtype
    from tunestack.plan.device import cpu_name

    config = AutoConfig.from_pretrained(resolve_model(args.model).path)
    dtype, heads, kv_heads = resolve_dtype(args.dtype), config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    torch.manual_seed(0)
    layers = [(torch.randn(1, heads, 1, dim, dtype=dtype), torch.randn(1, kv_heads, positions, dim, dtype=dtype),
               torch.randn(1, kv_heads, positions, dim, dtype=dtype)) for _ in range(config.num_hidden_layers)]
    mask = torch.zeros(1, 1, 1, positions, dtype=dtype)
    mask[..., positions // 2:] = float("-inf")  # a half-filled cache
    kernels = {"batched matrix products": lambda q, k, v: attention._grouped(
                   q, k, v, dim ** -0.5, 0.0, False, lambda scores: scores + mask)[0].transpose(1, 2),
               "fused reductions": lambda q, k, v: attention._decode_one(q, k, v, dim ** -0.5, mask)}
    print(f"{cpu_name()}, {dtype}, {config.num_hidden_layers} layers x one query over {positions} positions "
          f"({heads} heads, {kv_heads} key/value heads), compiled, median of {calls}")
    for name, kernel in kernels.items():
        for onednn in (True, False):
            torch.backends.mkldnn.enabled = onednn
            step = torch.compile(lambda layers, kernel=kernel: [kernel(*layer) for layer in layers], dynamic=False)
            step(layers)
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                step(layers)
                times.append(time.perf_counter() - start)
            print(f"  {name:<24} oneDNN {'on ' if onednn else 'off'}  {sorted(times)[calls // 2] * 1000:.2f} ms")
    torch.backends.mkldnn.enabled = True


def baseline_checkout(revision: str) -> Path:
    """A checkout of this repository at `revision` (a git worktree in benchmarks/.peers, made once)."""
    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", revision], capture_output=True, text=True)
    if commit.returncode:
        raise SystemExit(f"--baseline {revision}: not a revision of {repo}: {commit.stderr.strip()}")
    checkout = PEERS / f"tunestack-{commit.stdout.strip()}"
    if not checkout.exists():
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(checkout), commit.stdout.strip()],
                       check=True, capture_output=True)
    return checkout


def run_baseline(args, dtype) -> list[dict]:
    """Plain decoding by the engine of revision `args.baseline` (checked out once into benchmarks/.peers), in a
    subprocess: at that revision's own `--dtype auto`, and at `dtype` (this run's) where that differs."""
    from tunestack.model.precision import dtype_name

    checkout = baseline_checkout(args.baseline)
    results = []
    for name in ("auto", dtype_name(dtype)):
        if results and results[0]["dtype"] == str(dtype):
            continue
        command = [sys.executable, __file__, "--engine_at", str(checkout), "--model", args.model, "--dtype", name,
                   "--max_tokens", str(args.max_tokens), "--repeats", str(args.repeats)] + ["--quick"] * args.quick
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"--baseline {args.baseline}: its engine failed:\n{done.stderr[-2000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{args.baseline} ({name}: {results[-1]['dtype']}) decoded", file=sys.stderr)
    return results


def plain_decoding(args, workloads: dict[str, list[str]]) -> dict:
    """Plain single-stream decoding of `workloads` through the tunestack importable now (a baseline revision's,
    with --engine_at), with only what every revision's engine has: {dtype, workload: {answers, seconds}}."""
    from tunestack.config import ModelArgs
    from tunestack.inference.engine import SamplingParams
    from tunestack.inference.loading import load_for_inference
    from tunestack.inference.pt import PtEngine

    loaded = load_for_inference(ModelArgs(model=args.model, dtype=args.dtype))
    tokenizer = loaded.tokenizer

    engine = PtEngine(loaded.model, tokenizer.pad_token_id, loaded.eos_token_ids)
    result = {"dtype": str(loaded.model.dtype)}
    try:
        engine.generate([chat_ids(tokenizer, workloads["chat"][0])], SamplingParams(max_new_tokens=4))  # warm-up
        for workload, prompts in workloads.items():
            for _ in range(args.repeats):
                start = time.perf_counter()
                answers = [engine.generate([chat_ids(tokenizer, p)], SamplingParams(max_new_tokens=args.max_tokens))[0]
                           for p in prompts]
                seconds = time.perf_counter() - start
                if workload not in result or seconds < result[workload]["seconds"]:
                    result[workload] = {"answers": answers, "seconds": seconds}
    finally:
        engine.close()
    return result


if __name__ == "__main__":
    main()
