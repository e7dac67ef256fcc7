"""What each cell of the family matrix compares: tunestack's output against plain transformers + peft."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

CONVERSATION = [
    {"role": "system", "content": "You are a calculator."},
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "12 + 30 = 42."},
    {"role": "user", "content": "And 1 + 2?"},
    {"role": "assistant", "content": "1 + 2 = 3."},
]
PROMPT = [{"role": "user", "content": "What is 3 + 4?"}]
TEXT = " The quick brown fox: 12 + 30 = 42.\n你好，世界  hello"
QA = [{"question": f"What is {a} + 2?", "answer": f"{a + 2}"} for a in range(3)]


def train_family(family, root: Path):
    """The family's base model folder under `root` and a 6-step LoRA run on it (tunestack's Python API)."""
    from families.specs import save_family
    from helpers import CHAT_ROWS, write_jsonl

    from tunestack import api

    base = save_family(family, root / "base")
    data = write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    run = api.sft(model=str(base), dataset=[str(data)], output_dir=str(root / "run"), max_steps=6,
                  learning_rate=5e-3, per_device_train_batch_size=4, logging_steps=1, lora_rank=4, dtype="fp32")
    return base, run


def mask_pieces(run) -> tuple[list[str], list[str]]:
    """What carries loss in CONVERSATION as tunestack encodes it (ids checked equal to apply_chat_template's), and
    what should: each answer followed by the template's end of turn."""
    from transformers import AutoTokenizer

    from tunestack.data.tokenize import encode_conversation

    tokenizer = AutoTokenizer.from_pretrained(run.final)
    encoded = encode_conversation(tokenizer, CONVERSATION, max_length=512)
    expected_ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    assert encoded.input_ids == expected_ids, "token ids differ from apply_chat_template's"
    end = tokenizer.decode([tokenizer.eos_token_id])
    return labelled_pieces(tokenizer, encoded), [m["content"] + end for m in CONVERSATION if m["role"] == "assistant"]


def served_answer(run, messages: list[dict], max_tokens: int) -> str:
    """The answer of `tunestack serve` on the run, through the official openai client over loopback HTTP."""
    import openai
    from server_helpers import free_port

    from tunestack import api

    with api.serve(run, background=True, port=free_port(), served_model_name="m", dtype="fp32") as server:
        client = openai.OpenAI(base_url=server.url, api_key="none")
        reply = client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, temperature=0)
    return reply.choices[0].message.content.strip()


def eval_answers(run, folder: Path) -> tuple[list[str], list[str]]:
    """custom_qa's raw answers evaluated on the run locally, and through `tunestack serve` on it."""
    from helpers import write_jsonl
    from server_helpers import free_port

    from tunestack import api

    task = f"custom_qa:{write_jsonl(folder / 'qa.jsonl', QA)}"
    local = api.evaluate(run, [task], output_dir=str(folder / "local"), max_new_tokens=6, dtype="fp32")
    with api.serve(run, background=True, port=free_port(), served_model_name="m", dtype="fp32") as server:
        served = api.evaluate(None, [task], url=server.url, served_model_name="m", output_dir=str(folder / "served"),
                              max_new_tokens=6)
    return tuple([s["raw"].strip() for s in report.samples("custom_qa_qa")] for report in (local, served))


def labelled_pieces(tokenizer, encoded) -> list[str]:
    """The text of each run of tokens that carries a loss label, in order."""
    pieces, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label == -100:
            if current:
                pieces.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        pieces.append(current)
    return [tokenizer.decode(piece) for piece in pieces]


def base_plus_adapter(base: Path, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).eval()


def reference_answer(base: Path, adapter: Path, messages: list[dict], max_new_tokens: int) -> str:
    """Greedy `generate` of base + adapter on the chat prompt, decoded as a user reads it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = base_plus_adapter(base, adapter)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def probe_ids(vocab_size: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, vocab_size, (2, 24))


def max_logit_error(model, reference) -> float:
    """Largest absolute logit difference between two models on the same random token ids."""
    ids = probe_ids(reference.config.vocab_size)
    with torch.no_grad():
        return (model(ids).logits - reference(ids).logits).abs().max().item()


def merged_logit_error(base: Path, adapter: Path, merged: Path) -> float:
    """Largest absolute logit difference between the merged export and base + adapter."""
    from transformers import AutoModelForCausalLM

    reference = base_plus_adapter(base, adapter)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    return max_logit_error(model, reference)


def gguf_read_back_logit_error(path: Path, base: Path, adapter: Path) -> float:
    """As gguf_logit_error for a family transformers' GGUF loader cannot read (Mixtral, which it reads as plain
    Llama; GLM-4 and DeepSeek-V3, which it does not know; gpt-oss, whose llama.cpp layout it misreads): the tensors
    are read with the gguf package, named back with its tensor-name map for the file's architecture, put back in
    the Hugging Face layout (Llama's Q/K rows with transformers' own inverse of llama.cpp's permutation; experts,
    sinks and DeepSeek's split k_b/v_b by read_back_tensor), and loaded into the model class they came from."""
    import gguf

    reference = base_plus_adapter(base, adapter).merge_and_unload()
    config = reference.config
    reader = gguf.GGUFReader(path)
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    tensors = {t.name: torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).copy()) for t in reader.tensors}
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch),
                                     config.num_hidden_layers)
    state = {}
    for hf_name, value in reference.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        state[hf_name] = read_back_tensor(hf_name, tensors, names, config, arch).reshape(value.shape)
    assert not tensors, f"tensors nobody reads: {sorted(tensors)}"
    model = type(reference)(config).eval()
    model.load_state_dict(state, strict=not config.tie_word_embeddings)
    return max_logit_error(model, reference)


def read_back_tensor(hf_name: str, tensors: dict, names, config, arch: str) -> torch.Tensor:
    """The Hugging Face tensor `hf_name`, taken out of `tensors` (GGUF name -> tensor) and undoing llama.cpp's
    layout: stacked experts ([experts, out, in] per projection; gpt-oss interleaves gate and up columns in
    [experts, in, out]), DeepSeek's kv_b_proj split per head into k_b (transposed) and v_b."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    def take(stem: str, suffix: str = "weight") -> torch.Tensor:
        return tensors.pop(f"{names.get_name(stem)}.{suffix}")

    stem, suffix = hf_name.rsplit(".", 1) if hf_name.endswith((".weight", ".bias")) else (hf_name, "")
    experts = hf_name.rsplit(".", 1)[0]
    if arch == "gpt-oss" and hf_name.endswith(("experts.gate_up_proj", "experts.gate_up_proj_bias")):
        kind = "bias" if hf_name.endswith("_bias") else "weight"
        gate, up = (take(f"{experts}.{part}", kind) for part in ("gate_proj", "up_proj"))
        pairs = torch.stack([gate, up], dim=-2 if kind == "weight" else -1)  # interleave rows, then columns
        return pairs.flatten(1, 2).transpose(1, 2) if kind == "weight" else pairs.flatten(-2)
    if arch == "gpt-oss" and hf_name.endswith("experts.down_proj"):
        return take(hf_name).transpose(1, 2)
    if arch == "gpt-oss" and hf_name.endswith("experts.down_proj_bias"):
        return take(f"{experts}.down_proj", "bias")
    if hf_name.endswith("experts.gate_up_proj"):
        return torch.cat([take(f"{experts}.{part}") for part in ("gate_proj", "up_proj")], dim=1)
    if hf_name.endswith("kv_b_proj.weight"):
        k_b, v_b = take(stem.replace("kv_b_proj", "k_b_proj")), take(stem.replace("kv_b_proj", "v_b_proj"))
        return torch.cat([k_b.transpose(1, 2), v_b], dim=1).flatten(0, 1)
    if hf_name.endswith("e_score_correction_bias"):
        return take(hf_name.replace("e_score_correction_bias", "e_score_correction"), "bias")
    data = take(stem, suffix or "weight")
    if arch == "llama" and stem.endswith(("q_proj", "k_proj")):
        heads = config.num_attention_heads if stem.endswith("q_proj") else config.num_key_value_heads
        data = torch.from_numpy(LlamaTensorProcessor()._reverse_permute_weights(data.numpy(), heads, heads))
    return data


def gguf_logit_error(path: Path, base: Path, adapter: Path) -> float:
    """Largest absolute logit difference between the GGUF file, loaded by transformers from a folder holding only
    it, and base + adapter; the tokenizer read from the file must split a chat prompt and text as the original."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    alone = path.parent.with_name(path.parent.name + "-gguf-only")
    alone.mkdir(exist_ok=True)
    shutil.copy(path, alone / path.name)
    model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer, original = AutoTokenizer.from_pretrained(alone, gguf_file=path.name), AutoTokenizer.from_pretrained(base)
    text = original.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False) + TEXT
    ids = [t(text, add_special_tokens=False)["input_ids"] for t in (tokenizer, original)]
    assert ids[0] == ids[1], "the GGUF's tokenizer splits text differently"
    reference = base_plus_adapter(base, adapter)
    return max_logit_error(model, reference)
