"""Serving throughput of `tunestack serve` against sequential `model.generate` and `transformers serve`, on this CPU.

Target: with 16 concurrent clients, tunestack's server reaches at least 4x the sequential `model.generate`
throughput, and it is at least as fast as `transformers serve` at every concurrency.

What runs. The embedded smollm2-135m-instruct in the dtype `--dtype auto` picks here (bf16 on CPUs with AMX or AVX-512
BF16), greedy, `--max_tokens` new tokens per request, short chat prompts:
  - sequential: `model.generate` on `--sequential_prompts` prompts one after another in this process (the chat
    template applied the same way), no server.
  - tunestack: `tunestack serve` in a subprocess (continuous batching, up to 32 sequences per forward pass).
  - transformers: `transformers serve MODEL_DIR` in a subprocess, in its default mode and, with
    `--transformers_cb`, with `--continuous-batching` as well.
  - llama.cpp, the CPU anchor: llama-cpp-python's OpenAI server (`python -m llama_cpp.server`) on the model as the
    f16 GGUF `tunestack export --to gguf` writes (the closest llama.cpp type to the bf16 tunestack serves; the
    bundled Q4_1 file crashed llama.cpp 0.3.36's decode on an AMX CPU). llama-cpp-python has no wheel on PyPI for this
    platform: `--setup` builds it from its source package (`pip install llama-cpp-python[server]`, cmake and a C++
    compiler needed, some 20 minutes on 2 cores) into benchmarks/.peers/llama-cpp. Without that environment the
    rows are skipped with a note. Its server answers one request at a time; the others wait
    (`--interrupt_requests false`: by default a new request cuts the stream being generated).
For each server and each concurrency (1, 4, 16, 32 clients by default), all clients at once stream chat
completions one after another through HTTP on loopback for `--window` seconds; streams still open at the end of
the window are closed, and what they had received counts.

How it is measured, the same way for every side:
  - output tokens/s: tokens received in the window (each answer's text re-tokenized with the model's tokenizer, so
    both servers are counted alike) over the window's wall time.
  - time to first token: from sending a request to its first non-empty content chunk; p50 and p95 over the
    requests that got one within the window (a server that queues requests shows few, and late, first tokens).
  - inter-token latency: the mean gap between content chunks within a request (chunks are tokens on both
    servers); p50 over requests.
With `--torch_compile`, `tunestack serve --torch_compile` runs beside them as "tunestack compiled"; its graphs
(one per bucket of batch rows and cache length) are compiled in an untimed warm-up at each concurrency level.
One untimed warm-up request per server precedes the timed runs. All servers are up at once and each concurrency
level runs on every server back to back (sequential `model.generate` runs before and after; the faster counts),
so that load from elsewhere on the machine hits every side alike.

With `--baseline REV`, tunestack at that git revision of this repository (checked out into
benchmarks/.peers/tunestack-REV) serves beside the others, once at its own `--dtype auto` and once at this run's
dtype. The single-stream (2x) and 16-client (1.5x) targets are against e1cfa29, the last revision before the work
toward them (speculative and compiled decoding, bf16 on AVX-512 BF16 CPUs) began.

Usage:
    python benchmarks/serve_throughput.py                    # full run (a few minutes on an idle 2-core CPU)
    python benchmarks/serve_throughput.py --quick            # 1 and 4 clients, 8 tokens, 10 s: a smoke check
    python benchmarks/serve_throughput.py --concurrency 1,16 --max_tokens 64 --output /tmp/serve.json
    python benchmarks/serve_throughput.py --setup            # build llama.cpp's server for the anchor rows, then stop
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
LLAMA_CPP_ENV = Path(__file__).resolve().parent / ".peers" / "llama-cpp"
LLAMA_CPP_PACKAGE = "llama-cpp-python[server]==0.3.36"
PROMPTS = ["Name three primary colors.", "What is the capital of France?", "Write a haiku about the sea.",
           "Explain what a CPU does in one sentence.", "Give me two tips for learning Python.",
           "What is 12 times 7?", "Describe a cat to someone who has never seen one.", "Why is the sky blue?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--max_tokens", type=int, default=32)
    parser.add_argument("--window", type=float, default=40.0, help="seconds each server and level is driven")
    parser.add_argument("--sequential_prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="keep the fastest of N runs per server and level")
    parser.add_argument("--transformers_cb", action="store_true", help="also run `transformers serve "
                        "--continuous-batching`")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                        help="tunestack's and transformers' precision (default: what tunestack's --dtype auto picks)")
    parser.add_argument("--no_llama_cpp", action="store_true", help="leave out the llama.cpp anchor rows")
    parser.add_argument("--torch_compile", action="store_true", help="also run `tunestack serve --torch_compile`")
    parser.add_argument("--baseline", metavar="REV", help="also serve with this git revision of tunestack, at its "
                        "own --dtype auto and at this run's dtype (benchmarks/.peers/tunestack-REV)")
    parser.add_argument("--setup", action="store_true", help=f"build llama.cpp's server into {LLAMA_CPP_ENV}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default="benchmarks/results/serve_throughput.json")
    args = parser.parse_args()
    if args.setup:
        setup_llama_cpp()
        return
    if args.quick:
        args.concurrency, args.max_tokens, args.window, args.sequential_prompts = "1,4", 8, 10.0, 2
    levels = [int(c) for c in args.concurrency.split(",")]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)

    from tunestack.hub import resolve_model
    from tunestack.model.precision import dtype_name as short_name
    from tunestack.model.precision import resolve_dtype

    model_dir = resolve_model(MODEL).path
    dtype = resolve_dtype(args.dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    results = {"model": MODEL, "dtype": dtype_name, "max_tokens": args.max_tokens, "cpu_count": os.cpu_count(),
               "platform": platform.platform(), "window_s": args.window, "runs": []}
    # name: (command, the model name requests carry)
    serve = [sys.executable, "-m", "tunestack", "serve", "--model", MODEL, "--max_concurrency", "32"]
    servers = {"tunestack": (serve + ["--dtype", args.dtype], MODEL),
               "transformers": ([str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir),
                                 "--dtype", dtype_name], str(model_dir))}
    if args.torch_compile:
        servers["tunestack compiled"] = (servers["tunestack"][0] + ["--torch_compile"], MODEL)
    if args.baseline:
        from decode_speed import baseline_checkout

        at = ["env", f"PYTHONPATH={baseline_checkout(args.baseline) / 'src'}"] + serve
        servers[f"tunestack at {args.baseline}, its auto"] = (at + ["--dtype", "auto"], MODEL)
        servers[f"tunestack at {args.baseline}, {short_name(dtype)}"] = (at + ["--dtype", short_name(dtype)], MODEL)
    if args.transformers_cb:
        servers["transformers-cb"] = (servers["transformers"][0] + ["--continuous-batching"], str(model_dir))
    if not args.no_llama_cpp:
        anchors, note = llama_cpp_servers(Path(args.output).parent)
        servers.update(anchors)
        results["llama_cpp"] = note
        print(f"llama.cpp: {note}", file=sys.stderr)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    count = args.sequential_prompts
    sequential = [run_sequential(model_dir, dtype, args.max_tokens, count)]
    started = {}
    try:
        for name, (command, model) in servers.items():
            started[name] = start_server(name, command, model, args)
        # Every server is up at once and each concurrency level runs on all of them back to back, so that load
        # from elsewhere on the machine hits the sides alike; the best of --repeats is kept per cell.
        for clients in levels:
            for name, (url, _) in started.items():
                model = servers[name][1]
                if name.endswith("compiled"):  # compile this level's buckets outside the timed window
                    measure(name, url, model, clients, argparse.Namespace(**{**vars(args), "window": 20.0}),
                            tokenizer)
                tries = [measure(name, url, model, clients, args, tokenizer) for _ in range(args.repeats)]
                results["runs"].append(max(tries, key=lambda r: r["tokens_per_s"]))
    finally:
        for _, process in started.values():
            process.terminate()
            process.wait(timeout=30)
    sequential.append(run_sequential(model_dir, dtype, args.max_tokens, count))
    results["sequential"] = max(sequential, key=lambda r: r["tokens_per_s"])
    results["sequential_runs"] = sequential
    report(results)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.output}")


def chat_ids(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def run_sequential(model_dir, dtype, max_tokens: int, count: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    prompts = [chat_ids(tokenizer, PROMPTS[i % len(PROMPTS)]) for i in range(count)]
    with torch.inference_mode():
        model.generate(torch.tensor([prompts[0]]), max_new_tokens=4, do_sample=False)  # warm-up
        tokens, started = 0, time.perf_counter()
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
            tokens += len(tokenizer(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True),
                                    add_special_tokens=False)["input_ids"])
        seconds = time.perf_counter() - started
    print(f"sequential model.generate: {tokens} tokens in {seconds:.1f} s", file=sys.stderr)
    return {"requests": count, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def setup_llama_cpp() -> None:
    """A venv with llama-cpp-python's server, built from its source package (no wheel for this platform)."""
    python = LLAMA_CPP_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LLAMA_CPP_ENV)], check=True)
    print(f"building {LLAMA_CPP_PACKAGE} into {LLAMA_CPP_ENV} (cmake; many minutes) ...", flush=True)
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}
    subprocess.run([str(python), "-m", "pip", "install", "-q", LLAMA_CPP_PACKAGE], check=True, env=env)
    print("llama.cpp server ready")


def llama_cpp_servers(folder: Path) -> tuple[dict, str]:
    """The llama.cpp anchor servers (name: (command, model name)) and a note on what runs, or why nothing does."""
    python = LLAMA_CPP_ENV / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import llama_cpp.server"],
                                             capture_output=True).returncode != 0:
        return {}, f"skipped: no llama-cpp-python server in {LLAMA_CPP_ENV} (run with --setup to build it)"
    f16 = folder / "llama-cpp-f16"
    if not any(f16.glob("*.gguf")):
        subprocess.run([sys.executable, "-m", "tunestack", "export", "--model", MODEL, "--to", "gguf",
                        "--gguf_type", "f16", "--output_dir", str(f16)], check=True, capture_output=True)
    files = {"llama.cpp f16": next(f16.glob("*.gguf"))}
    threads = str(len(os.sched_getaffinity(0)))
    servers = {name: ([str(python), "-m", "llama_cpp.server", "--model", str(path), "--model_alias", "anchor",
                       "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads,
                       "--interrupt_requests", "false"], "anchor")  # queue concurrent requests, not cut the running one
               for name, path in files.items()}
    return servers, ", ".join(f"{name}: {path}" for name, path in files.items())


def start_server(name: str, command: list[str], model: str, args) -> tuple[str, subprocess.Popen]:
    """Start a server on a free loopback port, wait for /health and send one untimed warm-up request."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(args.output).with_suffix(f".{name.replace(' ', '-')}.log"), "w")
    process = subprocess.Popen(command + ["--host", "127.0.0.1", "--port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, process)
        stream_one(url, model, PROMPTS[0], args.max_tokens)
    except BaseException:
        process.terminate()
        raise
    return url, process


def wait_for(url: str, process, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            # /health on tunestack and transformers; llama-cpp-python's server has /v1/models only
            if any(httpx.get(url + path, timeout=2).status_code == 200 for path in ("/health", "/v1/models")):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not come up")


def stream_one(url: str, model: str, prompt: str, max_tokens: int, deadline: float = float("inf")) -> dict:
    """One streamed chat completion: the text received (until `deadline`), time to first token, chunk gaps."""
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    sent = time.perf_counter()
    arrivals, text = [], ""
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if time.perf_counter() > deadline:
                break  # the window is over: leaving closes the stream
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            piece = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content")
            if piece:
                arrivals.append(time.perf_counter())
                text += piece
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return {"text": text, "ttft": arrivals[0] - sent if arrivals else None,
            "itl": statistics.mean(gaps) if gaps else None}


def measure(name: str, url: str, model: str, clients: int, args, tokenizer) -> dict:
    """Every client streams requests one after another for `--window` seconds; what arrived in it counts."""
    answers, errors = [], []
    started = time.perf_counter()
    deadline = started + args.window

    def client(index: int) -> None:
        k = 0
        try:
            while time.perf_counter() < deadline:
                answers.append(stream_one(url, model, PROMPTS[(index + k) % len(PROMPTS)], args.max_tokens, deadline))
                k += 1
        except Exception as exc:  # reported in the table, the run goes on
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(a["text"], add_special_tokens=False)["input_ids"]) for a in answers)
    ttfts = sorted(a["ttft"] for a in answers if a["ttft"] is not None)
    itls = [a["itl"] for a in answers if a["itl"] is not None]
    run = {"server": name, "clients": clients, "requests": len(answers), "errors": errors, "tokens": tokens,
           "seconds": seconds, "tokens_per_s": tokens / seconds if seconds else 0.0,
           "first_tokens": len(ttfts), "ttft_p50": percentile(ttfts, 50), "ttft_p95": percentile(ttfts, 95),
           "itl_p50": statistics.median(itls) if itls else None}
    print(f"{name} x{clients}: {run['tokens_per_s']:.1f} tokens/s", file=sys.stderr)
    return run


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return sorted(values)[index]


def report(results: dict) -> None:
    base = results["sequential"]["tokens_per_s"]
    print(f"\n{results['model']} ({results['dtype']}), {results['max_tokens']} new tokens per request, greedy; "
          f"sequential model.generate: {base:.1f} tokens/s\n")
    print("| server | clients | output tokens/s | vs sequential | first tokens | TTFT p50 ms | TTFT p95 ms | ITL p50 ms "
          "| errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ms = lambda v: f"{v * 1000:.0f}" if v is not None else "-"  # noqa: E731
    for run in results["runs"]:
        print(f"| {run['server']} | {run['clients']} | {run['tokens_per_s']:.1f} | {run['tokens_per_s'] / base:.2f}x | "
              f"{run['first_tokens']} | {ms(run['ttft_p50'])} | {ms(run['ttft_p95'])} | {ms(run['itl_p50'])} | {len(run['errors'])} |")
    ours = {r["clients"]: r["tokens_per_s"] for r in results["runs"] if r["server"] == "tunestack"}
    theirs = {r["clients"]: r["tokens_per_s"] for r in results["runs"] if r["server"] == "transformers"}
    if 16 in ours:
        verdict = "meets" if ours[16] >= 4 * base else "misses"
        print(f"\n16 clients: {ours[16] / base:.1f}x sequential ({verdict} the 4x target)")
    slower = [c for c in ours if c in theirs and ours[c] < theirs[c]]
    print("tunestack >= transformers serve at every concurrency" if not slower else
          f"tunestack slower than transformers serve at {slower} clients")
    for anchor in sorted({r["server"] for r in results["runs"] if r["server"].startswith("llama.cpp")}):
        theirs = {r["clients"]: r["tokens_per_s"] for r in results["runs"] if r["server"] == anchor}
        print(f"tunestack vs {anchor}: " + ", ".join(f"{c} clients {ours[c] / theirs[c]:.2f}x"
                                                     for c in sorted(theirs) if c in ours and theirs[c]))
    for before in sorted({r["server"] for r in results["runs"] if r["server"].startswith("tunestack at ")}):
        theirs = {r["clients"]: r["tokens_per_s"] for r in results["runs"] if r["server"] == before}
        for side in sorted({r["server"] for r in results["runs"]} & {"tunestack", "tunestack compiled"}):
            now = {r["clients"]: r["tokens_per_s"] for r in results["runs"] if r["server"] == side}
            print(f"{side} vs {before.removeprefix('tunestack at ')}: " + ", ".join(
                f"{c} clients {now[c] / theirs[c]:.2f}x" for c in sorted(theirs) if c in now and theirs[c]))


if __name__ == "__main__":
    main()
