"""--torch_compile for decoding: the pt engine's compiled steps over a static, bucketed KV cache give exactly the
greedy tokens of eager decoding, whatever joins, leaves or outgrows a bucket; speculation still works over it; a
compiled step that fails, or a machine where inductor cannot compile, means one warning and eager decoding."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from helpers import cli
from tunestack.inference.engine import SamplingParams
from tunestack.inference.kv_batch import StaticKVBatch, bucket
from tunestack.inference.pt import PtEngine
from tunestack.inference.speculative import PromptLookup

PROMPTS = ["What is 12 + 30?", "hello", "The quick brown fox jumps over the lazy dog", "你好"]


@pytest.fixture(scope="module")
def inductor_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
        yield


def reference(model, ids, n):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_buckets():
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 17)] == [1, 2, 4, 4, 8, 32]
    assert bucket(1, 256) == 256 and bucket(257, 256) == 512


def test_compiled_greedy_equals_eager_through_joins_leaves_and_longer_buckets(tiny_model, tiny_tokenizer,
                                                                              inductor_cache, capfd):
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    expected = [reference(tiny_model, p, 300) for p in prompts]
    engine = PtEngine(tiny_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], max_batch=4,
                      compile_decode=True, compiled_rows=4)  # every batch size compiled, as on a GPU
    try:
        assert engine.generate(prompts, SamplingParams(max_new_tokens=24, ignore_eos=True)) == \
            [e[:24] for e in expected]
        results = {}

        def ask(i):  # more requests than rows, arriving and finishing while others run
            results[i] = engine.generate([prompts[i % 4]], SamplingParams(max_new_tokens=6 + 3 * i,
                                                                          ignore_eos=True))[0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
            time.sleep(0.01)
        for thread in threads:
            thread.join()
        assert all(tokens == expected[i % 4][:6 + 3 * i] for i, tokens in results.items())
        # one sequence past 256 positions moves to the next length bucket and keeps its tokens
        assert engine.generate([prompts[2]], SamplingParams(max_new_tokens=300, ignore_eos=True)) == [expected[2]]
        assert engine._compiled is not None  # every step above ran compiled
        assert {(4, 256), (1, 512)} <= engine._compiled_shapes
        assert engine.compile_seconds > 0
    finally:
        engine.close()
    reports = [line.split(" in ")[0] for line in capfd.readouterr().err.splitlines()
               if line.startswith("compiled the decoding step")]
    assert len(reports) == len(set(reports))  # each bucket compiled once, and said so
    assert {"compiled the decoding step for 4 rows x 256 positions",
            "compiled the decoding step for 1 rows x 512 positions"} <= set(reports)


def test_on_a_cpu_a_lone_sequence_decodes_compiled_and_a_batch_eagerly(tiny_model, tiny_tokenizer, inductor_cache):
    """The batch moves between the static cache (one sequence: compiled) and a DynamicCache (more: eager) as
    requests come and go, and every answer stays the greedy one."""
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    expected = [reference(tiny_model, p, 40) for p in prompts]
    engine = PtEngine(tiny_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], max_batch=4,
                      compile_decode=True)
    assert engine.compiled_rows == 1
    kinds = []
    decode = engine._decode

    def watched():
        decode()
        kinds.append((len(engine._running), type(engine._batch).__name__ if engine._batch else None))

    engine._decode = watched
    try:
        results = {}

        def ask(i):
            results[i] = engine.generate([prompts[i]], SamplingParams(max_new_tokens=40 - 8 * i, ignore_eos=True))[0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        threads[0].start()
        time.sleep(0.3)  # the first runs alone a while, then three join, finish, and it ends alone again
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        engine.close()
    assert all(tokens == expected[i][:40 - 8 * i] for i, tokens in results.items())
    assert engine._compiled is not None and engine._compiled_shapes == {(1, 256)}
    assert {"StaticKVBatch", "KVBatch"} <= {kind for _, kind in kinds}  # it did move both ways


def test_compiled_steps_attend_through_the_fused_reductions(tiny_model, tiny_tokenizer, inductor_cache, monkeypatch):
    """On a CPU the engine moves a Llama on sdpa to tunestack's decode attention: the compiled steps (one query)
    run its products and sums, prefill stays on sdpa, and the greedy tokens are eager decoding's."""
    from tunestack.model import attention

    queries = []
    decode_one = attention._decode_one

    def spy(query, *args):
        queries.append(query.shape[2])
        return decode_one(query, *args)

    monkeypatch.setattr(attention, "_decode_one", spy)
    ids = tiny_tokenizer(PROMPTS[2])["input_ids"]
    expected = reference(tiny_model, ids, 20)
    assert tiny_model.config._attn_implementation == "sdpa"
    engine = PtEngine(tiny_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], compile_decode=True)
    try:
        assert tiny_model.config._attn_implementation == attention.DECODE
        assert engine.generate([ids], SamplingParams(max_new_tokens=20, ignore_eos=True)) == [expected]
    finally:
        engine.close()
    assert queries and set(queries) == {1}  # the decoding steps' layers; the prompt's prefill went to sdpa


def test_static_batch_keeps_every_row_through_moves(tiny_model, tiny_tokenizer):
    """Rows joining a longer newcomer shift right, a shrunk batch moves to fewer rows: the cached keys of every
    row stay those of its own prompt."""
    from transformers import DynamicCache

    from tunestack.inference.kv_batch import KVBatch

    def prefill(ids):
        cache = DynamicCache(config=tiny_model.config)
        with torch.no_grad():
            tiny_model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
        return KVBatch(cache, [0])

    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    batch = StaticKVBatch(tiny_model.config, prefill(prompts[1]))
    for ids in prompts[2:] + prompts[:1]:
        batch.extend(prefill(ids))
    order = [1, 2, 3, 0]
    assert (batch.rows, batch.length, batch.width) == (4, 256, max(len(p) for p in prompts))
    for row, index in enumerate(order):
        own = prefill(prompts[index]).cache.layers[0].keys[0]
        start = batch.pads[row]
        assert torch.equal(batch.cache.layers[0].keys[row, :, start:batch.width], own)
    batch.keep([1])  # only "The quick brown fox" (row 1) is left: one row, no padding
    assert (batch.rows, batch.pads, batch.width) == (1, [0], len(prompts[2]))
    assert torch.equal(batch.cache.layers[0].keys[0, :, :batch.width],
                       prefill(prompts[2]).cache.layers[0].keys[0])


def test_prompt_lookup_over_the_static_cache_keeps_greedy_output(tiny_model, tiny_tokenizer, inductor_cache):
    ids = tiny_tokenizer("one two three four one two three four one two")["input_ids"]
    expected = reference(tiny_model, ids, 40)
    engine = PtEngine(tiny_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], max_batch=2,
                      speculator=PromptLookup(4), compile_decode=True)
    try:
        assert engine.generate([ids], SamplingParams(max_new_tokens=40, ignore_eos=True)) == [expected]
        assert engine.speculation.proposed > 0 and engine._compiled is not None
    finally:
        engine.close()


def test_a_failing_compiled_step_warns_once_and_decodes_eagerly(tiny_model, tiny_tokenizer, inductor_cache, capfd):
    ids = tiny_tokenizer("hello")["input_ids"]
    engine = PtEngine(tiny_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], max_batch=2,
                      compile_decode=True)
    calls = []

    def broken(**kwargs):  # fails after writing into the cache, as a step dying half-way would
        calls.append(1)
        kwargs["cache"].layers[0].cumulative_length.add_(1)
        raise RuntimeError("inductor: unsupported operation\nmore detail")

    engine._compiled = broken
    try:
        assert engine.generate([ids], SamplingParams(max_new_tokens=12, ignore_eos=True)) == \
            [reference(tiny_model, ids, 12)]
    finally:
        engine.close()
    assert calls == [1] and engine._compiled is None  # the fault happened once, then eager steps
    warnings = [line for line in capfd.readouterr().err.splitlines() if "--torch_compile" in line]
    assert len(warnings) == 1 and "unsupported operation" in warnings[0] and "eager mode" in warnings[0]


def test_infer_with_torch_compile_answers_as_eager(tiny_model_dir, tmp_path):
    base = ["infer", "--model", str(tiny_model_dir), "--prompt", "What is 12 + 30?", "--max_new_tokens", "12",
            "--temperature", "0"]
    eager = cli(*base)
    compiled = cli(*base, "--torch_compile", env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")})
    assert compiled.stdout == eager.stdout and eager.stdout.strip()
    assert "compiled the decoding step for 1 rows x 256 positions" in compiled.stderr
    broken = cli(*base, "--torch_compile", env={"CXX": str(tmp_path / "no-such-compiler"),
                                                "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor2")})
    warnings = [line for line in broken.stderr.splitlines() if "--torch_compile" in line]
    assert len(warnings) == 1 and "inductor cannot compile" in warnings[0] and "decoding in eager mode" in warnings[0]
    assert broken.stdout == eager.stdout and "compiled the decoding step" not in broken.stderr
