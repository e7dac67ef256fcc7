"""Size, load time, perplexity and generation speed of every quantization `tunestack export` offers on this machine.

Target on this CPU: int8 at most 55% of the bf16 size, with perplexity within 2% of the source.

What runs. The embedded smollm2-135m-instruct is exported once per method with `tunestack export --quant METHOD`
(the same code path as the command line, quantizing the bf16 weights), beside the source saved in fp32 and in bf16
as the references.
Methods whose library is not installed, or which need a GPU this machine lacks, are listed as skipped with the
reason. Then each export is measured in its own subprocess, one after another in this run:
  - size: bytes of the weight files (*.safetensors) on disk;
  - load time: wall time of loading the folder the way `tunestack infer` does (`tunestack.model.load.load_exported`);
  - perplexity: on the built-in held-out passage, recorded by the export itself in export.json (the export scored
    after reloading it from disk), beside the source's;
  - tokens/s: greedy generation of --new_tokens tokens from one chat prompt, batch 1, after one warm-up run;
    the best of --repeats runs.

Usage:
    python benchmarks/quant_table.py                       # all methods available here (~5 minutes on 2 cores)
    python benchmarks/quant_table.py --methods int8,bnb8   # a subset
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
METHODS = ["int8", "int4", "bnb8", "bnb4", "hqq", "gptq", "awq", "fp8"]
PROMPT = [{"role": "user", "content": "Write two sentences about the sea."}]


def reference(dtype: str, out: Path) -> dict:
    """The unquantized source saved in `dtype`, with the size and perplexity an export would record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunestack.export.perplexity import perplexity, read_text
    from tunestack.hub import resolve_model

    folder = resolve_model(MODEL).path
    model = AutoModelForCausalLM.from_pretrained(folder, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    text = read_text(None)[0]
    source = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    record = {"sizes": {"weights_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors"))},
              "perplexity": {"source": perplexity(source, tokenizer, text)[0],
                             "export": perplexity(model, tokenizer, text)[0]}}
    (out / "export.json").write_text(json.dumps(record))
    return record


def export(method: str, out: Path) -> dict:
    """Run the export in-process (the CLI's function); returns export.json, or why the method was skipped."""
    from tunestack.config import ExportArgs, ModelArgs
    from tunestack.errors import TunestackError
    from tunestack.export.merge import run_export
    from tunestack.hub import resolve_model

    folder = str(resolve_model(MODEL).path)  # a folder: exported as it is, with no adapter to merge
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the export prints its folder; stdout carries the table
            run_export(ModelArgs(model=folder, dtype="bf16"), ExportArgs(output_dir=str(out), quant=method))
    except TunestackError as error:
        return {"skipped": str(error).splitlines()[0]}
    return json.loads((out / "export.json").read_text())


def measure(folder: Path, new_tokens: int, repeats: int) -> dict:
    """Load time and greedy generation speed of one export (runs in a worker subprocess)."""
    import torch
    from transformers import AutoTokenizer

    from tunestack.model.load import load_exported

    quantized = "quantization" in json.loads((folder / "export.json").read_text())
    start = time.perf_counter()
    model = load_exported(folder, quantized).eval()
    load_s = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    best = float("inf")
    with torch.no_grad():
        for run in range(repeats + 1):
            start = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            if run:  # the first run warms up
                best = min(best, time.perf_counter() - start)
    generated = out.shape[1] - ids["input_ids"].shape[1]
    return {"load_s": load_s, "tokens_per_s": generated / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/quant_table.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(Path(args.worker), args.new_tokens, args.repeats)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["fp32", "bf16"] + args.methods.split(","):
            print(f"exporting {name} ...", file=sys.stderr, flush=True)
            folder = Path(tmp) / name
            record = reference(name, folder) if name in ("fp32", "bf16") else export(name, folder)
            if "skipped" in record:
                rows.append({"method": name, "skipped": record["skipped"]})
                continue
            worker = subprocess.run([sys.executable, __file__, "--worker", str(Path(tmp) / name), "--new_tokens",
                                     str(args.new_tokens), "--repeats", str(args.repeats)],
                                    capture_output=True, text=True, check=True)
            speed = json.loads(worker.stdout.strip().splitlines()[-1])
            quant = record.get("quantization", {})
            rows.append({"method": name, "backend": quant.get("backend", "transformers"),
                         "bytes": record["sizes"]["weights_bytes"], **speed,
                         "ppl_source": record["perplexity"]["source"], "ppl": record["perplexity"]["export"]})
    report(rows, args.output)


def report(rows: list[dict], output: str) -> None:
    bf16 = next(r["bytes"] for r in rows if r["method"] == "bf16")
    fp32 = next(r for r in rows if r["method"] == "fp32")
    print("| method | library | size MB | vs bf16 | load s | perplexity | vs source | tokens/s | vs fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['method']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        r["size_vs_bf16"] = r["bytes"] / bf16
        r["ppl_change_pct"] = 100 * (r["ppl"] - r["ppl_source"]) / r["ppl_source"]
        r["speed_vs_fp32"] = r["tokens_per_s"] / fp32["tokens_per_s"]
        print(f"| {r['method']} | {r['backend']} | {r['bytes'] / 1e6:.1f} | {r['size_vs_bf16']:.2f}x | "
              f"{r['load_s']:.2f} | {r['ppl']:.3f} | {r['ppl_change_pct']:+.2f}% | {r['tokens_per_s']:.1f} | "
              f"{r['speed_vs_fp32']:.2f}x |")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps({"model": MODEL, "machine": platform.processor() or platform.machine(),
                                        "rows": rows}, indent=2) + "\n")
    print(f"\nwritten to {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
