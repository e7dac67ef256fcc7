"""Long-life soak of `tunestack serve`: mixed traffic at twice the server's capacity, then a graceful shutdown.

Target: 0 internal errors (5xx), 0 hung requests, and the server's RSS flat (no growth beyond warm-up: at most
`--rss_bound_mb` between the end of warm-up and the end) across at least 5,000 requests on the tiny model.

What runs. `tunestack serve` in a subprocess with `--max_concurrency C --max_queue Q` on `--model` (default: a tiny
random 2-layer Llama and two LoRA adapters built on the spot, as the tests build them; `--model DIR --adapter
NAME=DIR` serves your own). 2 x (C + Q) clients, each sending one request after another for `--minutes`, drawn
from this mix (seeded):
  - chat, whole answer, on the base model or an adapter          expects 200 (or 429 when the queue is full)
  - chat, streamed, with usage                                   expects 200 and a stream ending in [DONE]
  Every greedy (temperature 0) chat answer, whole or streamed, must equal the answer greedy `model.generate` gives
  for its model (base or adapter), computed with transformers and peft before the traffic.
  - completions with logprobs, and echo scoring of a prompt      expects 200
  - bad requests: out-of-range values, an unknown model, broken JSON, a lone surrogate, token ids outside the
    vocabulary                                                   expects its 4xx
  - client disconnects: a stream closed after its first token, a request abandoned after 50 ms
A client that gets 429 waits 100 ms (a client honouring Retry-After would wait longer). A request with no answer
within `--hang_s` counts as hung. The server's RSS is read from /proc every `--sample_s` seconds; warm-up is the
first `--warmup` fraction of the run. At the end the server must have nothing admitted, answer a request, and exit 0
on SIGTERM.

Usage:
    python benchmarks/serve_soak.py --minutes 2
    python benchmarks/serve_soak.py --minutes 20 --max_concurrency 8 --max_queue 8 --output /tmp/soak.json
    python benchmarks/serve_soak.py --model runs/mine --adapter nova=runs/nova --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MESSAGES = [{"role": "user", "content": "What is 12 + 30?"}]
KINDS = ["chat", "chat_adapter", "stream", "completion_logprobs", "echo", "bad", "disconnect_stream",
         "disconnect_wait"]
BAD = [("/v1/chat/completions", {"model": "tiny", "messages": MESSAGES, "temperature": 9}, 400),
       ("/v1/chat/completions", {"model": "ghost", "messages": MESSAGES}, 404),
       ("/v1/chat/completions", '{"model": "tiny", "messages": [', 400),
       ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}', 400),
       ("/v1/completions", {"model": "tiny", "prompt": [[-1, 99999999]]}, 400),
       ("/v1/completions", {"model": "tiny", "prompt": "hi", "n": 99}, 400)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--model", help="model directory (default: a tiny random Llama built on the spot)")
    parser.add_argument("--adapter", action="append", default=[], help="NAME=DIR, repeatable (default with the "
                        "tiny model: two random LoRA adapters)")
    parser.add_argument("--max_concurrency", type=int, default=4)
    parser.add_argument("--max_queue", type=int, default=4)
    parser.add_argument("--clients", type=int, help="default: twice the capacity, 2 x (concurrency + queue)")
    parser.add_argument("--max_tokens", type=int, default=8)
    parser.add_argument("--hang_s", type=float, default=60.0)
    parser.add_argument("--sample_s", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run counted as warm-up")
    parser.add_argument("--rss_bound_mb", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server (default: torch's own; 1 suits "
                        "the tiny model, whose threads only spin on a CPU shared with the clients)")
    parser.add_argument("--output", default="benchmarks/results/serve_soak.json")
    args = parser.parse_args()
    args.clients = args.clients or 2 * (args.max_concurrency + args.max_queue)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise, where logging is set up
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            args.model, args.adapter = build_tiny(Path(scratch))
        results = asyncio.run(soak(args))
    report(results)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.output}")


def build_tiny(folder: Path) -> tuple[str, list[str]]:
    """The tests' tiny random Llama (hidden size 64, 2 layers) and two LoRA adapters on it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import build_model, build_tokenizer, make_adapter

    from tunestack.compat import hide_library_banners, import_gptqmodel_quietly

    hide_library_banners()
    import_gptqmodel_quietly()  # before peft imports it, with its banner

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder / "model")
    build_model(tokenizer).save_pretrained(folder / "model")
    adapters = [f"{name}={make_adapter(folder / 'model', folder / name, seed=seed)}"
                for name, seed in (("alpha", 1), ("beta", 2))]
    return str(folder / "model"), adapters


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def soak(args) -> dict:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(args.output).with_suffix(".server.log"), "w")
    command = [sys.executable, "-m", "tunestack", "serve", "--model", args.model, "--served_model_name", "tiny",
               "--port", str(port), "--max_concurrency", str(args.max_concurrency), "--max_queue",
               str(args.max_queue), "--dtype", "fp32", "--drain_timeout", "10"]
    for adapter in args.adapter:
        command += ["--adapter", adapter]
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    args.expected = greedy_answers(args.model, args.adapter, args.max_tokens)
    args.answers_checked = 0
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", **threads})
    url = f"http://127.0.0.1:{port}"
    adapters = [a.partition("=")[0] for a in args.adapter] or ["tiny"]
    try:
        await wait_for(url, server)
        outcomes: list[dict] = []
        samples: list[dict] = []
        started = time.monotonic()
        deadline = started + args.minutes * 60
        limits = httpx.Limits(max_connections=args.clients * 2, max_keepalive_connections=args.clients)
        async with httpx.AsyncClient(base_url=url, timeout=args.hang_s, limits=limits) as client:
            sampler = asyncio.create_task(sample_rss(server.pid, started, outcomes, samples, args.sample_s))
            await asyncio.gather(*[drive(client, random.Random(args.seed * 1000 + i), adapters, deadline, outcomes,
                                         args) for i in range(args.clients)])
            sampler.cancel()
            samples.append({"s": time.monotonic() - started, "requests": len(outcomes), "rss_mb": rss_mb(server.pid)})
            after = await check_after(client)
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
    return summarise(args, outcomes, samples, after, exit_code)


def greedy_answers(model_dir: str, adapters: list[str], max_tokens: int) -> dict[str, str]:
    """The answer to MESSAGES that greedy `model.generate` gives for the base model ("tiny") and each NAME=DIR
    adapter: what every temperature-0 answer of the server must be."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    answers = {}
    for name, path in [("tiny", None), *(adapter.split("=", 1) for adapter in adapters)]:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model = (PeftModel.from_pretrained(model, path) if path else model).eval()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        answers[name] = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return answers


def greedy_outcome(args, model: str, answers: list[str]) -> str:
    """"ok" when each answer equals the greedy answer known for `model`, else "wrong answer"."""
    args.answers_checked += len(answers)
    return "ok" if all(answer == args.expected[model] for answer in answers) else "wrong answer"


async def wait_for(url: str, server, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}")
            try:
                if (await client.get(url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("server did not come up")


async def sample_rss(pid: int, started: float, outcomes: list, samples: list, every: float) -> None:
    while True:
        samples.append({"s": time.monotonic() - started, "requests": len(outcomes), "rss_mb": rss_mb(pid)})
        await asyncio.sleep(every)


async def drive(client, rng: random.Random, adapters: list[str], deadline: float, outcomes: list, args) -> None:
    """One client: requests one after another until the deadline, each recorded as its kind, outcome and time."""
    while time.monotonic() < deadline:
        kind = rng.choice(KINDS)
        sent = time.monotonic()
        try:
            outcome = await one(client, kind, rng, adapters, args)
        except Exception as exc:  # noqa: BLE001  (every failure is counted, by kind)
            outcome = "hung" if isinstance(exc, httpx.TimeoutException) else f"transport {type(exc).__name__}"
        outcomes.append({"kind": kind, "outcome": outcome, "s": time.monotonic() - sent})
        if outcome == "429":
            await asyncio.sleep(0.1)


async def one(client, kind: str, rng: random.Random, adapters: list[str], args) -> str:
    """Send one request of `kind`; returns its outcome: ok, 429, disconnected, or what went wrong."""
    tokens = args.max_tokens
    if kind == "bad":
        path, body, expected = rng.choice(BAD)
        content = body if isinstance(body, str) else json.dumps(body)
        response = await client.post(path, content=content, headers={"content-type": "application/json"})
        ok = response.status_code == expected and "error" in response.json()
        return "ok" if ok else f"unexpected {response.status_code}"
    if kind in ("stream", "disconnect_stream"):
        body = {"model": rng.choice(["tiny", *adapters]), "messages": MESSAGES, "max_tokens": tokens, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": rng.choice([0, 1.0]),
                "seed": rng.randrange(1000)}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return status_outcome(response.status_code)
            events = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if kind == "disconnect_stream" and '"content": "' in line and len(events) > 1:
                        return "disconnected"  # leaving the block closes the connection mid-stream
        if events[-1:] != ["[DONE]"] or any('"error"' in e for e in events):
            return "bad stream"
        if body["temperature"] == 0:
            chunks = [json.loads(e) for e in events[:-1]]
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            return greedy_outcome(args, body["model"], [text])
        return "ok"
    if kind == "disconnect_wait":
        body = {"model": "tiny", "messages": MESSAGES, "max_tokens": tokens * 4, "ignore_eos": True}
        try:
            response = await asyncio.wait_for(client.post("/v1/chat/completions", json=body), 0.05)
        except asyncio.TimeoutError:
            return "disconnected"
        return status_outcome(response.status_code)
    if kind in ("completion_logprobs", "echo"):
        body = {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": tokens, "logprobs": 2}
        if kind == "echo":
            body.update(max_tokens=0, echo=True, logprobs=1)
        response = await client.post("/v1/completions", json=body)
        return status_outcome(response.status_code)
    model = rng.choice(adapters) if kind == "chat_adapter" else "tiny"
    body = {"model": model, "messages": MESSAGES, "max_tokens": tokens, "temperature": rng.choice([0, 0.7]),
            "n": rng.choice([1, 1, 2])}
    response = await client.post("/v1/chat/completions", json=body)
    if response.status_code == 200 and body["temperature"] == 0:
        return greedy_outcome(args, model, [c["message"]["content"] for c in response.json()["choices"]])
    return status_outcome(response.status_code)


def status_outcome(status: int) -> str:
    return "ok" if status == 200 else "429" if status == 429 else f"unexpected {status}"


async def check_after(client, settle_s: float = 15.0) -> dict:
    """After the traffic: nothing left admitted or running, and the server still answers. Requests whose client
    has just gone are noticed at their next token, so the gauges get `settle_s` to reach zero; a leak never does."""
    start = time.monotonic()
    while True:
        metrics = (await client.get("/metrics")).text
        gauges = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                  if line.startswith(("tunestack_admitted_sequences ", "tunestack_running_sequences ",
                                      "tunestack_queue_depth "))}
        if not any(gauges.values()) or time.monotonic() - start > settle_s:
            break
        await asyncio.sleep(0.1)
    reply = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 4})
    return {"gauges": gauges, "settled_s": round(time.monotonic() - start, 2),
            "answers_after": reply.status_code == 200}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarise(args, outcomes: list[dict], samples: list[dict], after: dict, exit_code: int) -> dict:
    by_outcome: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    for o in outcomes:
        by_outcome[o["outcome"]] = by_outcome.get(o["outcome"], 0) + 1
        by_kind.setdefault(o["kind"], {}).setdefault(o["outcome"], 0)
        by_kind[o["kind"]][o["outcome"]] += 1
    served = [o["s"] for o in outcomes if o["outcome"] == "ok" and o["kind"] != "bad"]
    errors = {k: v for k, v in by_outcome.items() if k not in ("ok", "429", "disconnected")}
    warm = args.warmup * args.minutes * 60
    after_warmup = [s for s in samples if s["s"] >= warm] or samples[-1:]
    rss_growth = after_warmup[-1]["rss_mb"] - after_warmup[0]["rss_mb"]
    rss_peak_growth = max(s["rss_mb"] for s in after_warmup) - after_warmup[0]["rss_mb"]
    internal = sum(v for k, v in by_outcome.items() if k.startswith("unexpected 5"))
    return {
        "model": args.model, "adapters": args.adapter, "minutes": args.minutes, "clients": args.clients,
        "max_concurrency": args.max_concurrency, "max_queue": args.max_queue, "max_tokens": args.max_tokens,
        "server_threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "requests": len(outcomes), "served": len(served), "rejected_429": by_outcome.get("429", 0),
        "bad_answered": by_kind.get("bad", {}).get("ok", 0), "disconnects": by_outcome.get("disconnected", 0),
        "internal_errors": internal, "hung": by_outcome.get("hung", 0), "errors": errors, "by_kind": by_kind,
        "latency_p50_s": percentile(served, 50), "latency_p99_s": percentile(served, 99),
        "rss_samples": samples, "rss_at_warmup_mb": after_warmup[0]["rss_mb"], "rss_end_mb": after_warmup[-1]["rss_mb"],
        "rss_growth_mb": rss_growth, "rss_peak_growth_mb": rss_peak_growth, "rss_bound_mb": args.rss_bound_mb,
        "after": after, "exit_code": exit_code, "expected_answers": args.expected,
        "answers_checked": args.answers_checked,
        "target_met": (internal == 0 and not errors and len(outcomes) >= 5000 and rss_peak_growth <= args.rss_bound_mb
                       and after["answers_after"] and not any(after["gauges"].values()) and exit_code == 0),
    }


def report(r: dict) -> None:
    print(f"\nserve soak: {r['minutes']:g} min, {r['clients']} clients against --max_concurrency {r['max_concurrency']} "
          f"--max_queue {r['max_queue']}, {r['max_tokens']} tokens per answer\n")
    print("| requests | served | 429 | bad requests answered | disconnects | internal errors | hung | other errors "
          "| p50 s | p99 s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"| {r['requests']} | {r['served']} | {r['rejected_429']} | {r['bad_answered']} | {r['disconnects']} | "
          f"{r['internal_errors']} | {r['hung']} | {r['errors'] or '-'} | {fmt(r['latency_p50_s'])} | "
          f"{fmt(r['latency_p99_s'])} |")
    print("\n| minute | requests so far | server RSS MB |\n| ---: | ---: | ---: |")
    shown = -1
    for s in r["rss_samples"]:
        if int(s["s"] // 60) > shown or s is r["rss_samples"][-1]:
            shown = int(s["s"] // 60)
            print(f"| {s['s'] / 60:.1f} | {s['requests']} | {s['rss_mb']:.1f} |")
    print(f"\nRSS after warm-up: {r['rss_at_warmup_mb']:.1f} MB -> {r['rss_end_mb']:.1f} MB at the end "
          f"({r['rss_growth_mb']:+.1f} MB; peak {r['rss_peak_growth_mb']:+.1f} MB, bound {r['rss_bound_mb']:g} MB)")
    print(f"after the traffic: gauges {r['after']['gauges']}, answers: {r['after']['answers_after']}; "
          f"exit code on SIGTERM: {r['exit_code']}")
    print("target met" if r["target_met"] else "target missed")


if __name__ == "__main__":
    main()
