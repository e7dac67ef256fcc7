"""Family-specific model behaviour: Gemma's soft-capping keeps its attention kernel, MoE routers and experts under
LoRA with the load-balancing loss in training, tokenizers without a pad token. Tiny random models (2 layers,
hidden 64) built from each family's config class."""

import pytest
import torch

from helpers import build_tokenizer
from tunestack.config import TunerArgs
from tunestack.errors import TunestackError
from tunestack.model.load import load_model, load_tokenizer, pick_attention
from tunestack.model.tuners import attach_tuner

SMALL = dict(vocab_size=420, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256)


def save(tmp_path, model, name: str):
    path = tmp_path / name
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


# --- Gemma: soft-capping -----------------------------------------------------------------------------------------

@pytest.fixture()
def gemma2_dir(tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(**SMALL, attn_logit_softcapping=50.0, final_logit_softcapping=0.5)
    return save(tmp_path, Gemma2ForCausalLM(config), "gemma2")


@pytest.mark.parametrize("train_length, packed", [(None, False), (64, False), (2048, False), (64, True)])
def test_gemma2_attention_soft_capping_keeps_eager_attention(gemma2_dir, train_length, packed):
    model = load_model(gemma2_dir, torch.float32, train_length=train_length, packed=packed)
    assert model.config._attn_implementation == "eager"  # sdpa and the packed kernel would drop the cap
    logits = model(torch.tensor([[5, 6, 7, 8]])).logits
    assert logits.abs().max() <= 0.5  # final_logit_softcapping applies in the model's forward


def test_sdpa_is_refused_for_a_soft_capping_model(gemma2_dir):
    with pytest.raises(TunestackError, match="--attn_implementation sdpa: .*use eager"):
        load_model(gemma2_dir, torch.float32, attn="sdpa")
    with pytest.raises(TunestackError, match="--attn_implementation sdpa: .*attn_logit_softcapping.*use eager"):
        pick_attention("sdpa", torch.float32, softcap=True)


def test_attention_choice_with_soft_capping_on_cpu():
    assert pick_attention("auto", torch.float32, 64, packed=True, softcap=True) == "eager"
    assert pick_attention("auto", torch.bfloat16, None, softcap=True) == "eager"
    assert pick_attention("eager", torch.float32, softcap=True) == "eager"


def test_gemma3_without_soft_capping_keeps_the_usual_choice(tmp_path):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    path = save(tmp_path, Gemma3ForCausalLM(Gemma3TextConfig(**SMALL)), "gemma3")
    assert load_model(path, torch.float32, train_length=2048).config._attn_implementation == "sdpa"


# --- MoE: which parameters LoRA trains, and the router loss --------------------------------------------------------

def qwen3_moe():
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(**SMALL, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                            mlp_only_layers=[1], router_aux_loss_coef=0.5)  # layer 1 has a dense MLP
    return Qwen3MoeForCausalLM(config)


def mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    return MixtralForCausalLM(MixtralConfig(**SMALL, num_local_experts=4, num_experts_per_tok=2,
                                            router_aux_loss_coef=0.5))


def trainable(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("build", [qwen3_moe, mixtral])
def test_all_linear_skips_experts_and_routers(build):
    model = attach_tuner(build(), TunerArgs(tuner="lora"))
    names = trainable(model)
    assert any("self_attn.q_proj.lora_A" in n for n in names)
    assert not any("experts" in n for n in names)
    assert not any(".gate." in n or n.endswith(".gate.weight") for n in names)  # the router
    # peft 0.21 would read the dense layer's gate_proj/up_proj/down_proj as v4 expert names and adapt the experts
    # instead; tunestack leaves those names out on such MoE models, so the experts stay untouched.
    assert not any("layers.1.mlp" in n for n in names)


@pytest.mark.parametrize("build", [qwen3_moe, mixtral])
def test_lora_experts_adapts_the_fused_expert_weights_but_not_the_router(build):
    model = attach_tuner(build(), TunerArgs(tuner="lora", lora_experts=True))
    names = trainable(model)
    experts = [n for n in names if "experts" in n and "lora_" in n]
    assert {n.split(".experts.")[0] for n in experts} == {f"base_model.model.model.layers.{i}.mlp"
                                                          for i in ((0,) if build is qwen3_moe else (0, 1))}
    assert all("lora_" in n for n in names)  # the base weights, the experts' and the router's, stay frozen
    assert not any(n.endswith("gate.weight") for n in names)
    before = model(torch.tensor([[5, 6, 7]])).logits
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name and "lora_B" in name:
                p.fill_(0.1)
    assert not torch.allclose(before, model(torch.tensor([[5, 6, 7]])).logits)  # the expert adapters act


@pytest.mark.parametrize("build", [qwen3_moe, "llama"])
def test_regex_target_modules(build, tiny_model):
    base = tiny_model if build == "llama" else build()
    model = attach_tuner(base, TunerArgs(tuner="lora", target_modules=[r".*layers\.0\.self_attn\.(q|v)_proj"]))
    adapted = {n.split(".lora_A")[0].split("layers.")[1] for n in trainable(model) if "lora_A" in n}
    assert adapted == {"0.self_attn.q_proj", "0.self_attn.v_proj"}
    with pytest.raises(TunestackError, match="regular expression matches no module name"):
        attach_tuner(qwen3_moe(), TunerArgs(tuner="lora", target_modules=[r".*nothing_(here)"]))


def test_router_aux_loss_is_in_the_training_loss_and_logged(tmp_path):
    from transformers import TrainingArguments

    from tunestack.train.trainer import TunestackTrainer

    model = attach_tuner(qwen3_moe(), TunerArgs(tuner="lora"))
    assert model.config.output_router_logits is True
    trainer = TunestackTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    labels = torch.tensor([[-100, -100, 7, 8, 9, 10]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    model.train()
    loss = trainer.compute_loss(model, {**batch, "labels": labels})
    out = model(**batch)
    ce = torch.nn.functional.cross_entropy(out.logits[0, 1:-1].float(), labels[0, 2:])
    assert out.aux_loss is not None and out.aux_loss > 0
    torch.testing.assert_close(loss, ce + 0.5 * out.aux_loss, rtol=1e-5, atol=1e-6)
    logs = {"loss": float(loss)}
    trainer.log(logs)
    assert logs["aux_loss"] == pytest.approx(float(out.aux_loss), rel=1e-4)


# --- tokenizers without a pad token --------------------------------------------------------------------------------

@pytest.fixture()
def no_pad_dir(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    path = tmp_path / "no-pad"
    tokenizer.save_pretrained(path)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_missing_pad_falls_back_to_eos_and_the_eos_of_answers_stays_trained(no_pad_dir):
    from transformers import AutoTokenizer

    from tunestack.data.packing import Collator
    from tunestack.data.tokenize import IGNORE_INDEX, encode_conversation

    assert AutoTokenizer.from_pretrained(no_pad_dir).pad_token is None
    tokenizer, _ = load_tokenizer(no_pad_dir)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    rows = [encode_conversation(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], 128)
            for q, a in (("What is 12 + 30?", "42"), ("Who made you?", "The tunestack developers made me."))]
    batch = Collator(tokenizer.pad_token_id)([{"input_ids": r.input_ids, "labels": r.labels} for r in rows])
    short = len(rows[0].input_ids)
    eos = tokenizer.eos_token_id
    # The answer's closing <|im_end|> (the pad id too) is a target; the padding after it is not.
    assert batch["input_ids"][0, short - 2] == eos and batch["labels"][0, short - 2] == eos
    assert (batch["input_ids"][0, short:] == eos).all() and (batch["labels"][0, short:] == IGNORE_INDEX).all()
    model = load_model(no_pad_dir, torch.float32, tokenizer=tokenizer)
    assert torch.isfinite(model(**{k: v for k, v in batch.items()}).loss)


def test_batched_generation_without_pad_token_matches_one_by_one(no_pad_dir):
    from tunestack.inference.chat import Chat
    from tunestack.inference.engine import SamplingParams
    from tunestack.inference.pt import PtEngine

    tokenizer, _ = load_tokenizer(no_pad_dir)
    model = load_model(no_pad_dir, torch.float32, tokenizer=tokenizer)
    engine = PtEngine(model, tokenizer.pad_token_id, [tokenizer.eos_token_id])
    try:
        chat = Chat(engine, tokenizer)
        prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "What is 12 + 30? Answer it."}]]
        params = SamplingParams(max_new_tokens=8, temperature=0.0)
        together = chat.answer(prompts, params)
        assert together == [chat.answer([p], params)[0] for p in prompts]
    finally:
        engine.close()


def test_tokenizer_without_eos_or_pad_gets_a_reserved_pad_token(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunestack.model.load import PAD_TOKEN

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token = tokenizer.unk_token = None
    tokenizer.save_pretrained(tmp_path / "bare")
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "bare")
    loaded, _ = load_tokenizer(tmp_path / "bare", template="llama3")  # a template that keeps EOS as it is
    assert loaded.pad_token == PAD_TOKEN and loaded.pad_token_id == len(loaded) - 1
    model = load_model(tmp_path / "bare", torch.float32, tokenizer=loaded)
    assert model.get_input_embeddings().weight.shape[0] >= len(loaded)
