"""The CPU training attention kernels: the packed-row one computes what transformers' sdpa computes, the grouped
eager one what eager attention computes (padding on either side, several families), both with their gradients, and
the grouped one keeps only the key/value heads' own keys and values."""

import pytest
import torch

from helpers import CHAT_ROWS
from tunestack.data.packing import Collator, pack_sequences
from tunestack.data.tokenize import encode_conversation
from tunestack.model.attention import (GROUPED_FAMILIES, flash_from, grid_groups, register, register_grouped, rung,
                                       segments)
from tunestack.model.load import attention_limits, pick_attention
from tunestack.plan.rows import Rows


def load(path, attn):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)


@pytest.mark.parametrize("lengths", [[512] * 7, [39, 20, 12, 30, 8, 39, 17, 5, 25]])
def test_packed_kernel_matches_sdpa_logits_and_gradients(tiny_model_dir, tiny_tokenizer, lengths):
    """Equal lengths with a 78-token padding block; lengths in four groups (model/attention.grid_groups)."""
    register()
    examples = [encode_conversation(tiny_tokenizer, r["messages"], n) for r, n in zip(CHAT_ROWS, lengths)]
    rows = pack_sequences([{"input_ids": e.input_ids, "labels": e.labels} for e in examples], max_length=120)
    batch = Collator(tiny_tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].shape[0] > 1  # several rows, padded at the end
    assert len(Rows.from_encoded(rows).micro_batch(len(rows)).grid) == (2 if lengths[0] == 512 else 4)
    results = {}
    for attn in ("sdpa", "tunestack_packed"):
        model = load(tiny_model_dir, attn)
        out = model(**batch, use_cache=False)
        out.loss.backward()
        results[attn] = (out.logits.detach(), model.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(results["tunestack_packed"][0], results["sdpa"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["tunestack_packed"][1], results["sdpa"][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_groups_run_the_causal_kernel_and_match_per_example_sdpa(dtype):
    """Groups whose longest example reaches flash_from tokens are attended by sdpa's causal kernel (no mask kept), the
    shorter ones by the grouped operations: each example's output and the gradients equal sdpa's on the example
    alone."""
    from types import SimpleNamespace

    from torch.nn.functional import scaled_dot_product_attention as sdpa

    from tunestack.model import attention

    torch.manual_seed(0)
    rows = [[300, 40, 100], [150, 290]]
    positions = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in rows])
    length = positions.shape[1]
    q, k, v = (torch.randn(2, heads, length, 16, dtype=dtype, requires_grad=True) for heads in (6, 2, 2))
    grad = torch.randn(2, length, 6, 16, dtype=dtype)
    out, _ = attention.packed_attention(SimpleNamespace(training=True), q, k, v, None, scaling=0.25,
                                        position_ids=positions)
    (out.float() * grad).sum().backward()
    flash = attention.flash_from(q.element_size())
    assert [blocked is None for blocked in attention._last[2].blocked] == [n >= flash for n in (40, 100, 150, 300)]
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for r, row in enumerate(rows):
        start = 0
        for n in row:
            span = slice(start, start + n)
            leaves = [t.detach()[r:r + 1, :, span].requires_grad_() for t in (q, k, v)]
            ref = sdpa(*leaves, is_causal=True, scale=0.25, enable_gqa=True).transpose(1, 2)
            (ref.float() * grad[r:r + 1, span]).sum().backward()
            torch.testing.assert_close(out[r:r + 1, span], ref, **tolerance)
            for leaf, full in zip(leaves, (q, k, v)):
                torch.testing.assert_close(full.grad[r:r + 1, :, span], leaf.grad, **tolerance)
            start += n


def test_examples_are_attended_in_groups_of_similar_length():
    """Each example is padded to at most 1.5 times its length (16 for the shortest), so one long example (a padding
    block) does not make every short one pay for its length."""
    assert [rung(n) for n in (1, 16, 17, 24, 25, 33, 48, 49, 100, 700)] == [16, 16, 24, 24, 32, 48, 48, 64, 128, 768]
    assert all(rung(n) <= max(16, 1.5 * n) for n in range(1, 5000))
    assert grid_groups([60, 5, 900, 9, 40, 64]) == [[1, 3], [4], [0, 5], [2]]


def test_segments_start_where_positions_restart():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    assert segments(positions, 2, 6) == [[(0, 3), (3, 5), (5, 6)], [(0, 6)]]
    assert segments(None, 1, 4) == [[(0, 4)]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choices made on a CPU")
def test_attention_choice():
    assert pick_attention("auto", torch.bfloat16, 512, packed=True) == "tunestack_packed"
    assert pick_attention("auto", torch.bfloat16, 512) == "eager"
    assert pick_attention("auto", torch.bfloat16, 4096) == "sdpa"
    assert pick_attention("auto", torch.bfloat16) == "sdpa"  # inference
    assert pick_attention("sdpa", torch.bfloat16, 512, packed=True) == "sdpa"
    # a family the grouped kernel serves: it replaces eager attention for short rows, nothing else
    assert pick_attention("auto", torch.float32, 512, grouped=True) == "tunestack_eager"
    assert pick_attention("auto", torch.float32, 512, packed=True, grouped=True) == "tunestack_packed"
    assert pick_attention("auto", torch.float32, 4096, grouped=True) == "sdpa"
    assert pick_attention("auto", torch.float32, None, grouped=True) == "sdpa"
    assert pick_attention("eager", torch.float32, 512, grouped=True) == "eager"
    assert pick_attention("auto", torch.float32, 512, softcap=True, grouped=True) == "eager"


def test_the_grouped_kernel_serves_its_families_only(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    assert attention_limits(tiny_model_dir)[2] is True  # a Llama
    assert attention_limits(tiny_model_dir, trust_remote_code=True)[2] is False  # its own modeling code
    config = AutoConfig.for_model("gemma2", vocab_size=64, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    config.save_pretrained(tmp_path)
    softcap, _, grouped = attention_limits(tmp_path)  # Gemma 2: soft-capped logits, not a grouped family
    assert softcap is True and grouped is False


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3"])
def test_each_family_hands_its_eager_kernel_unrepeated_keys(family):
    """The contract the grouped kernel relies on, read in each family's modeling code: the attention forward calls
    the attention interface, whose eager kernel repeats keys and values itself."""
    import importlib
    import inspect

    assert family in GROUPED_FAMILIES
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    eager = inspect.getsource(module.eager_attention_forward)
    assert "repeat_kv(key" in eager and "repeat_kv(value" in eager
    attention = next(c for n, c in vars(module).items() if n.endswith("Attention") and inspect.isclass(c)
                     and "attention_interface" in inspect.getsource(c.forward))
    assert "eager_attention_forward" in inspect.getsource(attention.forward)


def tiny(family: str, heads: int, kv_heads: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(family, vocab_size=120, hidden_size=heads * 16, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                  head_dim=16, max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")


@pytest.mark.parametrize("family, heads, kv_heads, length", [("llama", 6, 2, 20), ("llama", 4, 4, 20),
                                                             ("qwen3", 6, 3, 20), ("mistral", 6, 1, 20),
                                                             ("llama", 6, 2, 150), ("qwen3", 6, 3, 150)])
def test_grouped_kernel_matches_eager_logits_and_gradients(family, heads, kv_heads, length):
    """Short rows run the grouped operations; rows from flash_from tokens on (150 in fp32) sdpa's kernel under the
    same mask."""
    model = tiny(family, heads, kv_heads)
    ids = torch.randint(0, 120, (3, length))
    mask = torch.ones_like(ids)
    mask[1, length - 6:] = 0  # padded at the end
    mask[2, :5] = 0  # and at the start
    # no target predicted from a padding position (the first token after left padding), as in real rows: a padding
    # query sees no key, and what a kernel makes of such a row differs between kernels
    labels = ids.masked_fill(mask == 0, -100)
    labels[2, 5] = -100
    results = {}
    for attn in ("eager", register_grouped()):
        model.set_attn_implementation(attn)
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        results[attn] = (out.logits.detach(), [p.grad.clone() for p in model.parameters()])
    assert model.config._attn_implementation == "tunestack_eager"
    close = 1e-6 if length < flash_from(4) else 1e-5
    torch.testing.assert_close(results["tunestack_eager"][0], results["eager"][0], rtol=close, atol=close)
    for grouped, eager in zip(results["tunestack_eager"][1], results["eager"][1]):
        torch.testing.assert_close(grouped, eager, rtol=1e-5, atol=close)


def test_grouped_kernel_keeps_a_third_of_the_keys_and_values():
    """9 query heads over 3 key/value heads, as the embedded model: eager attention keeps each key and value 3 times,
    the grouped kernel once; everything else kept is the same."""
    model = tiny("llama", 9, 3)
    ids = torch.randint(0, 120, (2, 24))

    def kept(attn) -> int:
        model.set_attn_implementation(attn)
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=ids, use_cache=False)
        return sum(storages.values())

    repeats = 2 * 2 * 24 * (9 - 3) * 16 * 4  # 2 layers x keys and values x 24 tokens x 6 extra heads x 16 dims, fp32
    assert kept("eager") - kept(register_grouped()) == 2 * repeats


def test_a_model_without_sdpa_gets_eager_attention_or_a_clear_error():
    import pytest

    from tunestack.errors import TunestackError

    assert pick_attention("auto", torch.float32, None, sdpa=False) == "eager"  # gpt-oss: attention sinks
    assert pick_attention("auto", torch.float32, 4096, sdpa=False) == "eager"
    with pytest.raises(TunestackError, match="only eagerly"):
        pick_attention("sdpa", torch.float32, sdpa=False)


def test_decode_attention_is_sdpa_eagerly_and_fused_reductions_compiled():
    """One query per row over a static cache, rows left-padded and one idle row seeing column 0 only: compiled, the
    fused products and sums give sdpa's output (in fp32, and in bf16 within its rounding); outside a compiled step
    it is sdpa itself."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from tunestack.model.attention import decode_attention

    torch.manual_seed(0)
    module = torch.nn.Module().eval()
    module.is_causal, module.num_key_value_groups = True, 3
    query, key, value = torch.randn(3, 6, 1, 16), torch.randn(3, 2, 32, 16), torch.randn(3, 2, 32, 16)
    columns = torch.arange(32)
    mask = torch.stack([(columns >= 5) & (columns < 20), columns < 20, columns < 1])[:, None, None, :]
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    eager, _ = decode_attention(module, query, key, value, mask, scaling=0.25)
    assert torch.equal(eager, expected)
    compiled = torch.compile(decode_attention, dynamic=False, fullgraph=True)
    torch.testing.assert_close(compiled(module, query, key, value, mask, scaling=0.25)[0], expected,
                               rtol=1e-5, atol=1e-6)
    half = [t.bfloat16() for t in (query, key, value)]
    expected, _ = sdpa_attention_forward(module, *half, mask, scaling=0.25)
    output = compiled(module, *half, mask, scaling=0.25)[0]
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output.float(), expected.float(), rtol=2e-2, atol=2e-2)
