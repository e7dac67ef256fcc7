"""The transformers (pt) engine: continuous batching of every running sequence in one forward pass per step.

A scheduler thread loops: admit waiting requests (one left-padded prefill for the newcomers), then one decoding
forward for all running sequences together, each with its own sampling settings, seed and LoRA adapter; finished
or cancelled sequences leave the batch between steps and new ones join at once.

A request with images (a vision-language model's, carrying the processor's tensors in `media`) is prefilled on its
own, the model's forward turning its pixels into the embeddings of its image tokens (and, for M-RoPE models such as
Qwen2-VL, computing its 3D positions); from then on it decodes in the shared batch like any other sequence, its
text positions shifted by the model's `rope_deltas` (kv_batch.KVBatch.offsets), as `generate` shifts them.

transformers' own continuous batching (`generate_batch`, `init_continuous_batching` with its paged cache) does run
on CPU, but a request there carries only temperature, top-k and top-p: no seed, presence/frequency penalties,
alternatives' logprobs, prompt logprobs or per-request LoRA adapter, all of which the OpenAI API needs; and its
first call on a tiny model took about 25 s on this CPU. So this engine keeps a padded DynamicCache of its own
(`kv_batch.KVBatch`).

With `compile_decode` (`--torch_compile`), the decoding step runs compiled (torch.compile, inductor) over a
transformers StaticCache (`kv_batch.StaticKVBatch`) whose rows and length come in power-of-two buckets, so that
sequences joining and leaving reuse the graphs already compiled: one per bucket, compiled at its first step (the
seconds are reported). Prefill, speculative checks and prompt logprobs stay eager. On a GPU this removes most of
a step's kernel launches, and every batch size runs compiled. On a CPU only a lone sequence does (`compiled_rows`
1): there a compiled step beat the eager one by 1.1-1.4x at one row, but inductor's matrix products fell behind
oneDNN's as rows grew (0.4x at 16 rows in bf16; benchmarks/README.md), so a batch moves to a DynamicCache and
eager steps while it holds more sequences than that, and back when it holds fewer. There, a grouped-family model
attends through tunestack's decode attention (model/attention.py): sdpa, except in the compiled step, where
inductor fuses its products and sums into reductions (sdpa's CPU kernel over the static cache took ten times as
long).

A bf16 forward pass of one or two token rows on a CPU (a decoding step of one or two sequences) runs its matrix
products on ATen's matrix-vector kernel rather than oneDNN's (`precision.cpu_matvec`): about twice as fast there.
A thread that submits a request lets go of its OpenMP worker threads, and so does the engine's thread when idle
(`openmp.release`): two threads' pools at once halved the decoding speed on a CPU.
"""

from __future__ import annotations

import collections
import sys
import threading

import torch

from tunestack.inference.engine import Engine, GenerationRequest, StepOutput, UnsupportedRequest
from tunestack.inference.kv_batch import KVBatch, StaticKVBatch, cache_argument, supports_batching
from tunestack.inference.openmp import release as release_openmp
from tunestack.inference.sampler import RowState, sample, token_logprobs, verify_draft
from tunestack.inference.speculative import SpeculationStats, cut_cache
from tunestack.model.precision import cpu_matvec

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
IMAGES_AT_EVERY_STEP = ("mllama",)
"""Models whose decoding steps need the images again (cross-attention masks), which this engine does not pass."""


def _decode_attention(model) -> None:
    """A text model of a grouped family (transformers' own code) on sdpa moves to tunestack's decode attention:
    sdpa still, except in the compiled decoding step (model/attention.py)."""
    from tunestack.model.attention import GROUPED_FAMILIES, register_decode

    own_code = type(model).__module__.startswith("transformers.")
    if own_code and model.config.model_type in GROUPED_FAMILIES and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(register_decode())


def _can_batch(model) -> bool:
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    return bool(cache.layers) and supports_batching(cache)


class _Sequence:
    def __init__(self, request: GenerationRequest, state: RowState):
        self.request = request
        self.state = state
        self.generated = 0
        self.last_token: int | None = None
        self.length = len(request.prompt)
        self.tokens = list(request.prompt)  # prompt and answer so far, for a drafter


class PtEngine(Engine):
    """Continuous batching over a transformers model (optionally a PeftModel holding several named adapters)."""

    def __init__(self, model, pad_token_id: int | None, eos_token_ids: list[int], max_batch: int = 32,
                 max_context: int | None = None, prefill_tokens: int = 4096, token_texts: list[str] | None = None,
                 speculator=None, compile_decode: bool = False, compiled_rows: int | None = None):
        self.model = model.eval()
        self._cache_argument = cache_argument(model)
        self.speculator = speculator  # speculative.PromptLookup or DraftModel: used while one sequence runs
        self.speculation = SpeculationStats()
        self.token_texts = token_texts  # each token's text, for JSON mode
        self.eos_token_ids = set(eos_token_ids)
        self.max_batch = max_batch
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.max_context = max_context or getattr(config, "max_position_embeddings", None) or 2048
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.prefill_tokens = prefill_tokens
        self.adapters = tuple(n for n in getattr(model, "peft_config", {}) if n != BASE)
        self.mixed_adapter_batches = True
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._running: list[_Sequence] = []
        self._batch: KVBatch | None = None
        self._cancelled: set[int] = set()
        self._wake = threading.Condition()
        self._closed = False
        self._batchable = _can_batch(model)  # sliding-window or other special caches: one sequence at a time
        self._rope_holder = next((m for m in model.modules() if hasattr(m, "rope_deltas")), None)  # M-RoPE models
        self._compiled = self._compile_decode() if compile_decode else None  # the decoding step's compiled forward
        self._compiled_shapes: set[tuple[int, int]] = set()
        # the most running sequences decoded by the compiled step; more decode eagerly (see the module's docstring)
        self.compiled_rows = compiled_rows or (max_batch if self.model.device.type == "cuda" else 1)
        self.compile_seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name="tunestack-pt-engine", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        if request.params.json_object and self.token_texts is None:
            raise ValueError("JSON mode needs the engine built with token_texts")
        if request.media and getattr(self.model.config, "model_type", None) in IMAGES_AT_EVERY_STEP:
            request.emit(StepOutput(error=UnsupportedRequest(
                f"images: the pt engine cannot generate with images on {self.model.config.model_type} models, whose "
                "every decoding step needs them again")))
            return
        release_openmp()  # this thread hands the model to the engine's: its OpenMP workers would slow the steps
        with self._wake:
            self._waiting.append(request)
            self._wake.notify()

    def cancel(self, request_id: int) -> None:
        with self._wake:
            self._cancelled.add(request_id)
            self._wake.notify()

    def waiting(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return len(self._running)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _compile_decode(self):
        """The model's forward compiled for decoding steps over a static cache, or None (eager) with a warning
        saying why: inductor cannot compile here, or this engine's batch cannot be static for this model."""
        from tunestack.model.compile import use_torch_compile

        reason = ("several adapters served side by side" if self.adapters else
                  "its cache layers are not plain full attention" if not self._batchable
                  or not StaticKVBatch.fits(self.model.config) else
                  "multimodal rotary positions" if self._rope_holder is not None else None)
        if reason:
            _say(f"warning: --torch_compile: decoding runs in eager mode for this model ({reason})")
            return None
        if not use_torch_compile(True, _say, "decoding"):
            return None
        _decode_attention(self.model)
        return torch.compile(self.model.forward, dynamic=False)

    # ---- the scheduler thread ----

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not self._closed and not self._waiting and not self._running:
                    release_openmp()  # idle: another thread may use the cores (openmp.py)
                while not self._closed and not self._waiting and not self._running:
                    self._wake.wait()
                if self._closed:
                    return
                cancelled, self._cancelled = self._cancelled, set()
                self._waiting = collections.deque(r for r in self._waiting if r.id not in cancelled)
                newcomers = self._take_newcomers()
            try:
                with torch.no_grad():  # not inference_mode: optimum-quanto's int4 weights fail inside it
                    self._step(newcomers, cancelled)
            except Exception as exc:  # a failed step ends the sequences in it, never the engine
                self._fail(newcomers + [s.request for s in self._running], exc)
                self._running, self._batch = [], None

    def _step(self, newcomers: list[GenerationRequest], cancelled: set[int]) -> None:
        self._drop([i for i, s in enumerate(self._running) if s.request.id in cancelled])
        for group in _prefill_groups(newcomers):
            try:
                self._prefill(group)
            except Exception as exc:
                if any(s.request in group for s in self._running):
                    raise  # they had joined the batch: the whole batch is suspect
                self._fail(group, exc)  # the running batch is untouched and carries on
        if self._running:
            self._decode()

    @staticmethod
    def _fail(requests: list[GenerationRequest], exc: Exception) -> None:
        print(f"engine step failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        for request in requests:
            request.emit(StepOutput(error=exc))

    def _take_newcomers(self) -> list[GenerationRequest]:
        room = (self.max_batch if self._batchable else 1) - len(self._running)
        taken, tokens = [], 0
        while self._waiting and len(taken) < room:
            cost = len(self._waiting[0].prompt)
            if taken and tokens + cost > self.prefill_tokens:
                break
            taken.append(self._waiting.popleft())
            tokens += cost
        return taken

    def _forward(self, ids, mask, positions, cache, adapters: list[str | None], logits_to_keep: int,
                 media: dict | None = None):
        kwargs = {}
        if self.adapters:
            kwargs["adapter_names"] = [a or BASE for a in adapters]
        for name, value in (media or {}).items():
            kwargs[name] = value.to(self.model.device) if isinstance(value, torch.Tensor) else value
        kwargs[self._cache_argument] = cache
        with cpu_matvec(self.model, ids.numel()):
            return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                              logits_to_keep=logits_to_keep, **kwargs)

    def _prefill(self, requests: list[GenerationRequest]) -> None:
        """One forward over the newcomers' prompts (left-padded), whose cache then joins the running batch. A
        request with media comes alone, and the model computes its positions (M-RoPE's 3D ones among them)."""
        from transformers import DynamicCache

        device = self.model.device
        media = requests[0].media if len(requests) == 1 else None
        width = max(len(r.prompt) for r in requests)
        pads = [width - len(r.prompt) for r in requests]
        ids = torch.tensor([[0] * p + r.prompt for p, r in zip(pads, requests)], device=device)
        mask = torch.tensor([[0] * p + [1] * len(r.prompt) for p, r in zip(pads, requests)], device=device)
        positions = None if media else (mask.cumsum(-1) - 1).clamp(min=0)
        want_prompt = any(r.params.prompt_logprobs is not None for r in requests)
        cache = DynamicCache(config=self.model.config)
        if media and self._rope_holder is not None:
            self._rope_holder.rope_deltas = None  # computed afresh from this prompt's images
        out = self._forward(ids, mask, positions, cache, [r.adapter for r in requests], 0 if want_prompt else 1,
                            media)
        logits = out.logits.float()
        sequences = [_Sequence(r, RowState(r.params, r.prompt, self.vocab_size, device, self.token_texts))
                     for r in requests]
        prompt_lps = [self._prompt_logprobs(logits[i, p:], r) if r.params.prompt_logprobs is not None else None
                      for i, (p, r) in enumerate(zip(pads, requests))]
        batch = KVBatch(cache, pads, [self._rope_delta()] if media else None)
        if self._batch is None:
            self._batch = batch
        else:
            self._batch.extend(batch)
        self._running.extend(sequences)
        self._advance(logits[:, -1], sequences, len(self._running) - len(sequences), prompt_lps)

    def _rope_delta(self) -> int:
        """How far the text positions after the last prefilled prompt lie from its token count (M-RoPE), else 0."""
        deltas = getattr(self._rope_holder, "rope_deltas", None)
        return int(deltas.reshape(-1)[0]) if deltas is not None else 0

    def _prompt_logprobs(self, logits: torch.Tensor, request: GenerationRequest) -> list:
        """Logprob of each prompt token after the first, given the ones before it."""
        prompt = request.prompt
        k = request.params.prompt_logprobs
        return token_logprobs(logits[:-1], prompt[1:], [k] * (len(prompt) - 1))

    def _decode(self) -> None:
        # Speculation needs a cache that can be cut back (plain full-attention layers, as batching does).
        if self.speculator is not None and self._batchable and len(self._running) == 1 and not self._waiting and \
                self._running[0].request.media is None and not self._running[0].request.params.json_object:
            if self._speculate(self._running[0]):
                return
        compiled = self._compiled is not None and len(self._running) <= self.compiled_rows
        if compiled != isinstance(self._batch, StaticKVBatch):
            self._batch = StaticKVBatch(self.model.config, self._batch) if compiled else self._batch.to_dynamic()
        ids, mask, positions = self._batch.step_inputs([[s.last_token] for s in self._running], self.model.device)
        if compiled:
            logits = self._compiled_step(ids, mask, positions)
        else:
            logits = self._forward(ids, mask, positions, self._batch.cache,
                                   [s.request.adapter for s in self._running], 1).logits
        self._advance(logits[:len(self._running), -1].float(), self._running, 0)

    def _compiled_step(self, ids, mask, positions) -> torch.Tensor:
        """One decoding step through the compiled forward; a shape seen for the first time is compiled now (and
        said). Should the compiled step fail, the cache is set back and decoding goes on eagerly from then on."""
        from tunestack.model.compile import compile_seconds

        cache, width, before = self._batch.cache, self._batch.width, compile_seconds()
        try:
            with cpu_matvec(self.model, ids.numel()):
                out = self._compiled(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                     logits_to_keep=1, **{self._cache_argument: cache})
        except Exception as exc:  # noqa: BLE001 - any failure of the compiled graph: carry on eagerly
            _say(f"warning: --torch_compile: the compiled decoding step failed ({type(exc).__name__}: "
                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); decoding in eager mode from now on")
            self._compiled = None
            for layer in cache.layers:
                layer.cumulative_length.fill_(width)
            return self._forward(ids, mask, positions, cache, [], 1).logits
        self._compiled_shapes.add(tuple(mask.shape))
        seconds = compile_seconds() - before  # 0 when this shape's graph was compiled before (by any engine)
        if seconds > 0:
            self.compile_seconds += seconds
            _say(f"compiled the decoding step for {mask.shape[0]} rows x {mask.shape[1]} positions in {seconds:.1f} s")
        return out.logits

    def _advance(self, logits, sequences: list[_Sequence], offset: int, prompt_lps=None) -> None:
        """Sample the next token for `sequences` (rows offset.. of the batch), emit it, retire finished rows."""
        tokens = sample(logits, [s.state for s in sequences], min(self.eos_token_ids, default=None))
        logprobs = token_logprobs(logits, tokens, [s.request.params.logprobs for s in sequences])
        finished = [offset + i for i, (seq, token) in enumerate(zip(sequences, tokens))
                    if self._emit(seq, token, logprobs[i], prompt_lps[i] if prompt_lps else None)]
        self._drop(finished)

    def _emit(self, seq: _Sequence, token: int, logprob, prompt_lps=None) -> bool:
        """Hand `token` to its request (or end it); True when the sequence is finished."""
        params = seq.request.params
        out = StepOutput(prompt_logprobs=prompt_lps)
        if params.max_new_tokens <= 0:
            out.finish_reason = "length"
        elif (token in self.eos_token_ids and not params.ignore_eos) or token in params.stop_token_ids:
            out.finish_reason = "stop"
        else:
            out.token_id, out.logprob = token, logprob
            seq.state.record(token)
            seq.tokens.append(token)
            seq.generated += 1
            seq.length += 1
            seq.last_token = token
            if seq.generated >= params.max_new_tokens or seq.length >= self.max_context:
                out.finish_reason = "length"
        seq.request.emit(out)
        return out.finish_reason is not None

    def _speculate(self, seq: _Sequence) -> bool:
        """One speculative step for the only running sequence: the drafter's tokens checked in one forward pass,
        the agreed ones and the model's own next token emitted, the cache cut back to what was kept. False when
        the drafter has nothing to propose (a plain step follows)."""
        key, params = seq.request.id, seq.request.params
        before = len(seq.tokens)
        room = min(params.max_new_tokens - seq.generated, self.max_context - seq.length) - 1
        drafts = self.speculator.propose(key, seq.tokens, room)
        if not drafts:
            return False
        batch = self._batch
        ids, mask, positions = batch.step_inputs([[seq.last_token, *drafts]], self.model.device)
        width = batch.width
        out = self._forward(ids, mask, positions, batch.cache, [seq.request.adapter], ids.shape[1])
        logits = out.logits[0].float()
        self.speculation.proposed += len(drafts)
        accepted, finished = 0, False
        for position in range(len(drafts) + 1):
            if position < len(drafts):
                token, agreed = verify_draft(logits[position], seq.state, drafts[position])
            else:
                token, agreed = sample(logits[position:position + 1], [seq.state])[0], False
            logprob = token_logprobs(logits[position:position + 1], [token], [params.logprobs])[0]
            finished = self._emit(seq, token, logprob)
            accepted += agreed
            if finished or not agreed:
                break
        self.speculation.accepted += accepted
        cut_cache(batch.cache, width + 1 + accepted)  # the last token's and the agreed drafts' keys and values
        if finished:
            self.speculator.forget(key)
            self._drop([0])
        else:
            self.speculator.settle(key, min(before + accepted, len(seq.tokens) - 1))
        return True

    def _drop(self, rows: list[int]) -> None:
        if not rows:
            return
        gone = set(rows)
        keep = [i for i in range(len(self._running)) if i not in gone]
        self._running = [self._running[i] for i in keep]
        if keep:
            self._batch.keep(keep)
        else:
            self._batch = None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _prefill_groups(requests: list[GenerationRequest]) -> list[list[GenerationRequest]]:
    """The newcomers as prefill batches: the text-only ones together, each one with images alone."""
    text = [r for r in requests if not r.media]
    return ([text] if text else []) + [[r] for r in requests if r.media]
