"""Evaluation through the `openai` client against a real HTTP server on loopback wrapping the tiny model."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest
import torch
from fastapi import FastAPI, HTTPException, Request

from helpers import cli
from tunestack.config import EvalArgs, ModelArgs
from tunestack.errors import TunestackError
from tunestack.eval.command import run_eval


class TinyServer:
    """/v1/models, /v1/completions (echoed prompt log-probabilities, or greedy text) and /v1/chat/completions.

    `logprobs=False` rejects echo requests as a server without prompt log-probabilities does; prompts containing
    `broken` always get HTTP 500; the first `flaky` requests get HTTP 503."""

    def __init__(self, model_dir, logprobs=True, broken=None, flaky=0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.logprobs, self.broken, self.flaky = logprobs, broken, flaky
        self.lock = threading.Lock()
        self.requests = 0

    def app(self):
        app = FastAPI()

        def gate(text):
            with self.lock:
                self.requests += 1
                if self.requests <= self.flaky:
                    raise HTTPException(503, "warming up")
            if self.broken and self.broken in text:
                raise HTTPException(500, "model crashed")

        @app.get("/v1/models")
        def models():
            return {"object": "list", "data": [{"id": "tiny", "object": "model", "created": 0, "owned_by": "t"}]}

        @app.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            gate(body["prompt"])
            if body.get("echo"):
                if not self.logprobs:
                    raise HTTPException(400, "echo is not supported")
                return self._choice(body["prompt"], {"text": body["prompt"], "logprobs": self._echo(body["prompt"])})
            text = self._generate(self.tokenizer(body["prompt"])["input_ids"], body["max_tokens"])
            for stop in body.get("stop") or []:
                text = text.split(stop)[0]
            return self._choice(body["prompt"], {"text": text, "logprobs": None})

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            gate(json.dumps(body["messages"]))
            text = self.tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
            answer = self._generate(self.tokenizer(text, add_special_tokens=False)["input_ids"], body["max_tokens"])
            return {"id": "c", "object": "chat.completion", "created": 0, "model": "tiny",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}]}

        return app

    def _choice(self, prompt, fields):
        return {"id": "x", "object": "text_completion", "created": 0, "model": "tiny",
                "choices": [{"index": 0, "finish_reason": "length", **fields}]}

    def _echo(self, prompt):
        encoded = self.tokenizer(prompt, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        with self.lock, torch.no_grad():
            logprobs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)
        tokens = [self.tokenizer.decode([i]) for i in ids]
        token_logprobs = [None] + [logprobs[i - 1, ids[i]].item() for i in range(1, len(ids))]
        top = [None] + [{self.tokenizer.decode([int(logprobs[i - 1].argmax())]): logprobs[i - 1].max().item()}
                        for i in range(1, len(ids))]
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top,
                "text_offset": [start for start, _ in encoded["offset_mapping"]]}

    def _generate(self, ids, max_tokens):
        with self.lock, torch.no_grad():
            out = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=max_tokens, do_sample=False,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def serve(tiny_model_dir):
    import uvicorn

    servers = []

    def start(**options):
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(TinyServer(tiny_model_dir, **options).app(), host="127.0.0.1",
                                               port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=5)


def _samples(out, task):
    return [json.loads(line) for line in (out / "samples" / f"{task}.jsonl").read_text().splitlines()]


def test_server_loglikelihoods_equal_the_local_ones(serve, tiny_model_dir, mmlu_file, tmp_path):
    url = serve()
    args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], limit=3, num_fewshot=1)
    local = run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, tmp_path / "local")
    remote = run_eval(ModelArgs(), EvalArgs(**{**vars(args), "url": url, "batch_size": 4}), tmp_path / "remote")
    assert remote["model"] == f"tiny at {url}/v1"
    assert remote["tasks"]["mmlu"]["settings"]["scoring"] == "log-likelihood"
    for ours, theirs in zip(_samples(tmp_path / "local", "mmlu"), _samples(tmp_path / "remote", "mmlu")):
        assert theirs["loglikelihoods"] == pytest.approx(ours["loglikelihoods"], abs=1e-4)
        assert theirs["is_greedy"] == ours["is_greedy"]
    assert remote["tasks"]["mmlu"]["metrics"] == local["tasks"]["mmlu"]["metrics"]


def test_generation_through_the_server_matches_local_generation(serve, tiny_model_dir, gsm8k_file, tmp_path):
    url = serve()
    args = EvalArgs(tasks=["gsm8k"], task_data=[f"gsm8k={gsm8k_file}"], limit=3, num_fewshot=0, max_new_tokens=12)
    run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, tmp_path / "local")
    run_eval(ModelArgs(), EvalArgs(**{**vars(args), "url": url}), tmp_path / "remote")
    local, remote = _samples(tmp_path / "local", "gsm8k"), _samples(tmp_path / "remote", "gsm8k")
    assert [s["raw"] for s in remote] == [s["raw"] for s in local]


def test_without_logprobs_the_letter_is_generated_and_the_report_says_so(serve, mmlu_file, tmp_path):
    url = serve(logprobs=False)
    summary = run_eval(ModelArgs(), EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], limit=2, url=url),
                       tmp_path / "out")
    assert summary["tasks"]["mmlu"]["settings"]["scoring"] == "generated letter"
    assert any("no prompt log-probabilities" in note for note in summary["notes"])
    assert "generating the answer letter" in (tmp_path / "out" / "report.md").read_text()
    assert all("raw" in s for s in _samples(tmp_path / "out", "mmlu"))


def test_transient_errors_are_retried_and_failing_questions_reported(serve, gsm8k_file, tmp_path):
    url = serve(flaky=2, broken="3 apples")
    summary = run_eval(ModelArgs(), EvalArgs(tasks=["gsm8k"], task_data=[f"gsm8k={gsm8k_file}"], url=url,
                                             num_fewshot=0, max_new_tokens=4, batch_size=1, max_retries=2),
                       tmp_path / "out")
    result = summary["tasks"]["gsm8k"]
    assert result["failed"] == [2] and result["n"] == 5  # the question about 3 apples, after its retries
    assert "1 questions failed" in result["notes"][0]
    assert "HTTP 500" in summary["notes"][0]
    assert _samples(tmp_path / "out", "gsm8k")[2]["error"] == "request failed"


class _RateLimitedOnce(http.server.BaseHTTPRequestHandler):
    """Answers the first chat request with 429 and `Retry-After`, every later one with an answer."""

    requests: list[float] = []

    def do_POST(self):  # noqa: N802 (the name http.server calls)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append(time.monotonic())
        if len(self.requests) == 1:
            body, status, headers = b'{"error": {"message": "slow down"}}', 429, {"Retry-After": "2"}
        else:
            body, status, headers = json.dumps({
                "id": "c", "object": "chat.completion", "created": 0, "model": "tiny",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}}],
            }).encode(), 200, {}
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_rate_limit_waits_as_long_as_retry_after_says():
    from tunestack.eval.remote import RemoteBackend

    _RateLimitedOnce.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RateLimitedOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = RemoteBackend(f"http://127.0.0.1:{server.server_address[1]}", None, "tiny", concurrency=1,
                                max_retries=2, seed=0)
        answers = backend.chat([[{"role": "user", "content": "2 + 2?"}]], 4, lambda n: None)
    finally:
        server.shutdown()
        server.server_close()
    assert answers == ["4"] and backend.errors == []
    first, second = _RateLimitedOnce.requests
    assert second - first >= 1.9  # the client's own backoff would have waited at most 0.5 s


def test_server_down_is_one_clear_line():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TunestackError, match="cannot be reached"):
        run_eval(ModelArgs(), EvalArgs(tasks=["arith"], url=url, max_retries=0))
    result = cli("eval", "--tasks", "arith", "--url", url, "--max_retries", "1", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--url {url}/v1: the server cannot be reached" in result.stderr.strip().splitlines()[-1]
