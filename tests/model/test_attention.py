"""The packed-row CPU attention kernel computes what transformers' sdpa computes, and its gradients."""

import pytest
import torch

from helpers import CHAT_ROWS
from tunestack.data.packing import Collator, pack_sequences
from tunestack.data.tokenize import encode_conversation
from tunestack.model.attention import register, segments
from tunestack.model.load import pick_attention


def load(path, attn):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)


def test_packed_kernel_matches_sdpa_logits_and_gradients(tiny_model_dir, tiny_tokenizer):
    register()
    examples = [encode_conversation(tiny_tokenizer, r["messages"], 512) for r in CHAT_ROWS[:7]]
    rows = pack_sequences([{"input_ids": e.input_ids, "labels": e.labels} for e in examples], max_length=120)
    batch = Collator(tiny_tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].shape[0] > 1  # several rows, padded at the end
    results = {}
    for attn in ("sdpa", "tunestack_packed"):
        model = load(tiny_model_dir, attn)
        out = model(**batch, use_cache=False)
        out.loss.backward()
        results[attn] = (out.logits.detach(), model.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(results["tunestack_packed"][0], results["sdpa"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["tunestack_packed"][1], results["sdpa"][1], rtol=1e-4, atol=1e-6)


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


def test_a_model_without_sdpa_gets_eager_attention_or_a_clear_error():
    import pytest

    from tunestack.errors import TunestackError

    assert pick_attention("auto", torch.float32, None, sdpa=False) == "eager"  # gpt-oss: attention sinks
    assert pick_attention("auto", torch.float32, 4096, sdpa=False) == "eager"
    with pytest.raises(TunestackError, match="only eagerly"):
        pick_attention("sdpa", torch.float32, sdpa=False)
