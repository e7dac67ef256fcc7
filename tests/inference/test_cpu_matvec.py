"""One- and two-row bf16 products on the CPU go to ATen's matrix-vector kernel rather than oneDNN's
(model.precision.cpu_matvec): only for bf16 CPU models, only at one or two rows, only while the forward runs, always
restored; the pt engine decodes (and a draft model drafts) that way while its prefill and speculative checks keep
oneDNN; and ATen's kernel is as close to fp32 as oneDNN's."""

from __future__ import annotations

import pytest
import torch

from helpers import build_model
from tunestack.inference.engine import SamplingParams
from tunestack.inference.pt import PtEngine
from tunestack.inference.speculative import DraftModel, PromptLookup
from tunestack.model import precision
from tunestack.model.precision import cpu_matvec


@pytest.fixture()
def onednn_bf16(monkeypatch):
    """As on a CPU with AVX-512 BF16 or AMX, whatever this one has (torch computes the same either way)."""
    monkeypatch.setattr(precision, "_onednn_does_bf16", lambda: True)
    assert torch.backends.mkldnn.enabled


@pytest.fixture(scope="module")
def bf16_model(tiny_tokenizer):
    return build_model(tiny_tokenizer).to(torch.bfloat16).eval()


def onednn_inside(model, rows) -> bool:
    with cpu_matvec(model, rows):
        return torch.backends.mkldnn.enabled


def test_only_one_or_two_bf16_rows_leave_onednn(onednn_bf16, bf16_model, tiny_tokenizer):
    assert onednn_inside(bf16_model, 1) is False
    assert onednn_inside(bf16_model, 2) is False
    assert torch.backends.mkldnn.enabled  # back on after each block
    assert onednn_inside(bf16_model, 3) is True
    assert onednn_inside(bf16_model, 0) is True
    assert onednn_inside(build_model(tiny_tokenizer).eval(), 1) is True  # fp32: oneDNN and ATen run MKL alike


def test_restored_after_an_error_and_a_users_choice_kept(onednn_bf16, bf16_model):
    with pytest.raises(RuntimeError, match="boom"):
        with cpu_matvec(bf16_model, 1):
            raise RuntimeError("boom")
    assert torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # the user turned oneDNN off: it stays off
    try:
        with cpu_matvec(bf16_model, 1):
            pass
        assert torch.backends.mkldnn.enabled is False
    finally:
        torch.backends.mkldnn.enabled = True


def test_nothing_changes_where_onednn_has_no_bf16(monkeypatch, bf16_model):
    monkeypatch.setattr(precision, "_onednn_does_bf16", lambda: False)
    assert onednn_inside(bf16_model, 1) is True


def test_the_engine_decodes_on_aten_and_prefills_on_onednn(onednn_bf16, bf16_model, tiny_tokenizer):
    seen: list[tuple[int, bool]] = []  # (token rows of the forward, oneDNN on)
    hook = bf16_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["input_ids"].numel(), torch.backends.mkldnn.enabled)),
        with_kwargs=True)
    prompt = tiny_tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"]
    engine = PtEngine(bf16_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id])
    try:
        engine.generate([prompt], SamplingParams(max_new_tokens=6, ignore_eos=True))
        engine.generate([prompt, prompt[:3], prompt[:4]], SamplingParams(max_new_tokens=3, ignore_eos=True))
    finally:
        engine.close()
        hook.remove()
    assert torch.backends.mkldnn.enabled
    assert (len(prompt), True) in seen  # the prefill
    assert (1, False) in seen and (3, True) in seen  # one sequence decoding; three together
    assert all(on == (rows > 2) for rows, on in seen)


def test_drafts_on_aten_and_checks_on_onednn(onednn_bf16, bf16_model, tiny_tokenizer):
    draft = build_model(tiny_tokenizer, seed=1).to(torch.bfloat16).eval()
    target_calls, draft_calls = [], []
    hooks = [m.register_forward_pre_hook(
        lambda module, args, kwargs, calls=calls: calls.append((kwargs["input_ids"].numel(),
                                                                torch.backends.mkldnn.enabled)), with_kwargs=True)
        for m, calls in ((bf16_model, target_calls), (draft, draft_calls))]
    prompt = tiny_tokenizer("a b c d a b c d a b c", add_special_tokens=False)["input_ids"]
    try:
        for speculator in (DraftModel(draft, 3), PromptLookup(4, min_ngram=1)):
            engine = PtEngine(bf16_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id],
                              speculator=speculator)
            try:
                engine.generate([prompt], SamplingParams(max_new_tokens=12, ignore_eos=True))
            finally:
                engine.close()
    finally:
        for hook in hooks:
            hook.remove()
    assert (1, False) in draft_calls  # the draft model's own steps
    assert any(rows > 2 and on for rows, on in target_calls)  # a check of several drafts in one pass
    assert all(on == (rows > 2) for rows, on in target_calls + draft_calls)


def test_atens_bf16_kernel_is_as_close_to_fp32_as_onednns():
    """The switch trades kernels, not accuracy: both accumulate in fp32 (a bf16 accumulator would be ~10x off)."""
    torch.manual_seed(0)
    weight, x = torch.randn(1536, 576) * 0.05, torch.randn(1, 576)
    exact = x @ weight.T
    errors = {}
    for onednn in (True, False):
        torch.backends.mkldnn.enabled = onednn
        try:
            errors[onednn] = (torch.nn.functional.linear(x.bfloat16(), weight.bfloat16()).float() - exact).abs().max()
        finally:
            torch.backends.mkldnn.enabled = True
    assert errors[False] <= 2 * errors[True] + 1e-3, errors
