"""Backends behind the engine interface: missing ones fail in one line, and requests translate faithfully."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest

from helpers import cli
from tunestack.config import ModelArgs
from tunestack.inference.engine import GenerationRequest, SamplingParams


@pytest.mark.parametrize("backend, package, extra", [
    ("vllm", "vllm", "vllm"), ("sglang", "sglang", "sglang"), ("lmdeploy", "lmdeploy", "lmdeploy"),
    ("llama.cpp", "llama-cpp-python", "llamacpp")])
def test_missing_backend_is_one_line_naming_the_extra(backend, package, extra, tiny_model_dir):
    module = {"llama.cpp": "llama_cpp"}.get(backend, backend)
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    for command in ("serve", "infer"):
        args = ["--prompt", "hi"] if command == "infer" else []
        result = cli(command, "--model", str(tiny_model_dir), "--backend", backend, *args, check=False)
        assert result.returncode == 2
        assert result.stderr.strip() == (f"tunestack {command}: error: --backend {backend} needs {package}, which "
                                         f"is not installed: pip install 'tunestack[{extra}]'")


SAMPLED = SamplingParams(max_new_tokens=7, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1,
                         presence_penalty=0.5, frequency_penalty=0.25, seed=3, stop_token_ids=[9], logprobs=2)


def test_vllm_sampling_translation():
    from tunestack.inference.vllm_engine import sampling_kwargs

    kwargs = sampling_kwargs(SAMPLED)
    assert kwargs == {"n": 1, "max_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                      "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25, "seed": 3,
                      "stop_token_ids": [9], "ignore_eos": False, "logprobs": 2, "prompt_logprobs": None,
                      "detokenize": False}
    greedy = sampling_kwargs(SamplingParams(max_new_tokens=0, prompt_logprobs=1, json_object=True))
    assert greedy["temperature"] == 0 and greedy["top_k"] == -1 and greedy["max_tokens"] == 1
    assert greedy["prompt_logprobs"] == 1 and greedy["structured_outputs"] == {"json_object": True}


def test_vllm_engine_settings_and_lora_ranks(tiny_model_dir, tmp_path):
    from tunestack.inference.lora_info import lora_rank
    from tunestack.inference.vllm_engine import engine_kwargs

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12, "rank_pattern": {"q_proj": 4}}))
    args = engine_kwargs("m", "t", ModelArgs(dtype="bf16"), 16, 1024, [lora_rank(tmp_path), 4])
    assert args == {"model": "m", "tokenizer": "t", "dtype": "bfloat16", "max_num_seqs": 16,
                    "trust_remote_code": False, "max_logprobs": 20, "max_model_len": 1024, "enable_lora": True,
                    "max_loras": 2, "max_lora_rank": 16}
    assert "enable_lora" not in engine_kwargs("m", "t", ModelArgs(), 4, None, [])


def test_vllm_logprobs_translation():
    from tunestack.inference.vllm_engine import to_logprob

    entry = {5: SimpleNamespace(logprob=-0.1), 7: SimpleNamespace(logprob=-2.0), 9: SimpleNamespace(logprob=-3.0)}
    scored = to_logprob(entry, 7, 2)
    assert scored.token_id == 7 and scored.logprob == -2.0 and scored.top == [(5, -0.1), (7, -2.0)]
    assert to_logprob(None, 1, 2) is None


def test_sglang_translation():
    from tunestack.inference.sglang_engine import generate_kwargs, sampling_dict, to_logprobs

    values = sampling_dict(SAMPLED)
    assert values["max_new_tokens"] == 7 and values["top_k"] == 40 and values["sampling_seed"] == 3
    assert values["presence_penalty"] == 0.5 and values["stop_token_ids"] == [9]
    assert sampling_dict(SamplingParams(json_object=True))["json_schema"] == '{"type": "object"}'
    request = GenerationRequest([1, 2, 3], SamplingParams(logprobs=2, prompt_logprobs=1), print, adapter="math")
    kwargs = generate_kwargs(request)
    assert kwargs["input_ids"] == [1, 2, 3] and kwargs["lora_path"] == "math" and kwargs["stream"]
    assert kwargs["return_logprob"] and kwargs["top_logprobs_num"] == 2 and kwargs["logprob_start_len"] == 0
    scored = to_logprobs([(-0.5, 4, None)], [[(-0.5, 4, None), (-1.0, 6, None)]], 2)
    assert scored[0].token_id == 4 and scored[0].top == [(4, -0.5), (6, -1.0)]


def test_lmdeploy_translation_and_refusals():
    from tunestack.inference.engine import UnsupportedRequest
    from tunestack.inference.lmdeploy_engine import engine_kwargs, generation_kwargs

    plain = SamplingParams(max_new_tokens=5, temperature=0.5, top_k=10, seed=1, logprobs=3)
    kwargs = generation_kwargs(plain)
    assert kwargs["do_sample"] and kwargs["temperature"] == 0.5 and kwargs["random_seed"] == 1
    assert kwargs["logprobs"] == 3 and kwargs["top_k"] == 10
    assert not generation_kwargs(SamplingParams())["do_sample"]
    with pytest.raises(UnsupportedRequest, match="presence"):
        generation_kwargs(SAMPLED)
    assert engine_kwargs(ModelArgs(), 8, 512, {"a": "/x"}) == {"max_batch_size": 8, "dtype": "auto",
                                                               "session_len": 512, "adapters": {"a": "/x"}}


def test_llama_cpp_translation_and_gguf_requirement(tiny_model_dir):
    from tunestack.errors import ConfigError
    from tunestack.inference.llamacpp_engine import gguf_file, sample_kwargs

    assert sample_kwargs(SamplingParams())["top_k"] == 1 and sample_kwargs(SamplingParams())["temp"] == 0.0
    sampled = sample_kwargs(SAMPLED)
    assert sampled["temp"] == 0.7 and sampled["top_k"] == 40 and sampled["repeat_penalty"] == 1.1
    with pytest.raises(ConfigError, match="export --to gguf"):
        gguf_file(ModelArgs(model=str(tiny_model_dir)), SimpleNamespace(kind="local"))


def test_emit_tokens_drops_the_end_token():
    from tunestack.inference.async_engine import emit_tokens, finish_name

    seen = []
    request = GenerationRequest([1], SamplingParams(stop_token_ids=[8]), seen.append)
    emit_tokens(request, [4, 5, 2], [], "stop", {2})
    assert [(o.token_id, o.finish_reason) for o in seen] == [(4, None), (5, "stop")]
    seen.clear()
    emit_tokens(request, [8], [], "stop", {2})
    assert [(o.token_id, o.finish_reason) for o in seen] == [(None, "stop")]
    assert finish_name({"type": "length"}) == "length" and finish_name(SimpleNamespace(type="abort")) == "stop"
    assert finish_name(None) is None


def test_media_reach_vllm_as_read_with_one_placeholder_each(llava_dir):
    """An engine that expands placeholders itself (vLLM) gets the rendered text's own ids, one <image> token per
    picture, and the pictures as read; vLLM's TokensPrompt carries them as multi_modal_data."""
    from tiny_vlms import image, png_data_url

    from tunestack.inference.chat import Chat
    from tunestack.inference.chat_prompt import vision_prompt
    from tunestack.inference.vllm_engine import vllm_prompt
    from tunestack.model.vision import load_processor

    processor = load_processor(llava_dir)
    pictures = [image((200, 30, 40), (20, 24)), image((20, 160, 40), (30, 18))]
    messages = [{"role": "user", "content": [*({"type": "image_url", "image_url": {"url": png_data_url(p)}}
                                               for p in pictures), {"type": "text", "text": "Same?"}]}]
    ids, media = vision_prompt(processor, messages, raw=True)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                                       {"type": "text", "text": "Same?"}]}],
                                         add_generation_prompt=True, tokenize=False)
    assert ids == processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 2
    assert [m.size for m in media["image"]] == [(20, 24), (30, 18)] and set(media) == {"image"}
    expanded, tensors = vision_prompt(processor, messages)  # what the pt engine gets: expanded, as tensors
    assert len(expanded) > len(ids) and "pixel_values" in tensors
    assert vllm_prompt(ids, media) == {"prompt_token_ids": ids, "multi_modal_data": {"image": media["image"]}}
    one = {"image": media["image"][:1]}
    assert vllm_prompt([5], one)["multi_modal_data"] == {"image": media["image"][0]}
    assert vllm_prompt([5], None) == {"prompt_token_ids": [5]}

    class ExpandingEngine:  # records what Chat hands an engine that expands media itself
        expands_media = True

        def generate(self, prompts, params, media=None):
            self.seen = (prompts, media)
            return [[] for _ in prompts]

    engine = ExpandingEngine()
    Chat(engine, processor.tokenizer, processor=processor).answer([messages], SamplingParams(max_new_tokens=1))
    assert engine.seen[0] == [ids] and engine.seen[1][0]["image"][1].size == (30, 18)


def test_a_text_only_backend_still_refuses_media():
    from tunestack.inference.async_engine import AsyncLoopEngine
    from tunestack.inference.engine import UnsupportedRequest

    outputs = []
    engine = AsyncLoopEngine([0])
    try:
        engine.submit(GenerationRequest([1, 2], SamplingParams(), outputs.append, media={"pixel_values": None}))
    finally:
        engine.close()
    assert isinstance(outputs[0].error, UnsupportedRequest) and "images" in str(outputs[0].error)
