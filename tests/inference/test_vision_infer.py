"""Images at inference: the pt engine against transformers' generate (LLaVA, and Qwen2-VL's M-RoPE positions), the
processor-rendered prompt, and `tunestack infer --image` / the terminal chat's /image through the real CLI."""

from __future__ import annotations

import pytest
import torch

from helpers import cli
from tiny_vlms import build_tiny_qwen2_vl, image, qwen2_vl_inputs, reference_generate, save_png, save_tiny_qwen2_vl
from tunestack.inference.engine import SamplingParams
from tunestack.inference.pt import PtEngine

QUESTION = "What is 12 + 30?"


def asking(*images_first, text=QUESTION) -> list[dict]:
    """One user message: an image part per picture, then the text."""
    return [{"role": "user", "content": [*({"type": "image"} for _ in images_first), {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    return [save_png(image(), folder / "red.png"), save_png(image((20, 160, 40), (30, 18)), folder / "green.png")]


def processor_inputs(processor, messages, images):
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[images] if images else None, return_tensors="pt", add_special_tokens=False)
    media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    return inputs["input_ids"][0].tolist(), media


def test_image_requests_decode_in_the_batch_and_equal_generate(llava):
    model, processor = llava
    images = [image(), image((20, 160, 40), (30, 18))]
    ids, media = processor_inputs(processor, asking(*images), images)
    one_ids, one_media = processor_inputs(processor, asking(images[1]), images[1:])
    text_ids = processor.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    expected = [reference_generate(None, asking(*images), images, 10, llava),
                reference_generate(None, asking(images[1]), images[1:], 10, llava)]
    with torch.no_grad():
        expected_text = model.generate(torch.tensor([text_ids]), max_new_tokens=10, do_sample=False)[0, len(text_ids):]
    engine = PtEngine(model, processor.tokenizer.pad_token_id, [processor.tokenizer.eos_token_id], max_batch=4)
    try:
        params = SamplingParams(max_new_tokens=10)
        together = engine.generate([text_ids, ids, one_ids, ids], params, media=[None, media, one_media, media])
    finally:
        engine.close()
    eos = processor.tokenizer.eos_token_id
    text_tokens = expected_text.tolist()
    assert together == [text_tokens[:text_tokens.index(eos)] if eos in text_tokens else text_tokens,
                        expected[0], expected[1], expected[0]]


def test_an_image_request_that_fails_leaves_the_running_batch_alone(llava):
    model, processor = llava
    ids, media = processor_inputs(processor, asking(image()), [image()])
    text_ids = processor.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    engine = PtEngine(model, processor.tokenizer.pad_token_id, [processor.tokenizer.eos_token_id], max_batch=4)
    try:
        running = engine.stream(text_ids, SamplingParams(max_new_tokens=20, ignore_eos=True))
        first = next(running)
        with pytest.raises(Exception):  # pixel values of the wrong size: the vision tower refuses them
            engine.generate([ids], SamplingParams(max_new_tokens=4), media=[{"pixel_values": torch.zeros(1, 3, 8, 8)}])
        assert len([first, *running]) == 20
        assert engine.generate([ids], SamplingParams(max_new_tokens=4, ignore_eos=True), media=[media])[0]
    finally:
        engine.close()


def test_qwen2_vl_images_keep_their_mrope_positions_in_the_batch():
    model, image_processor, tokenizer = build_tiny_qwen2_vl()
    pictures = [image(size=(40, 30)), image((0, 100, 30), (60, 60))]
    inputs = qwen2_vl_inputs(tokenizer, image_processor, asking(*pictures), pictures)
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=10, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert int(model.model.rope_deltas) != 0  # the text after the images sits at other positions than its index
    text_ids = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected_text = model.generate(torch.tensor([text_ids]), max_new_tokens=10, do_sample=False)[0, len(text_ids):]
    media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    ids = inputs["input_ids"][0].tolist()
    engine = PtEngine(model, tokenizer.pad_token_id, [tokenizer.eos_token_id], max_batch=4)
    try:
        params = SamplingParams(max_new_tokens=10, ignore_eos=True)
        together = engine.generate([text_ids, ids, ids], params, media=[None, media, media])
    finally:
        engine.close()
    assert together == [expected_text.tolist(), expected.tolist(), expected.tolist()]


def test_text_requests_prefill_together_and_each_image_request_alone():
    from tunestack.inference.engine import GenerationRequest
    from tunestack.inference.pt import _prefill_groups

    text, other_text = (GenerationRequest([1, 2], SamplingParams(), print) for _ in range(2))
    seeing = GenerationRequest([1, 9, 9], SamplingParams(), print, media={"pixel_values": torch.zeros(1, 3, 2, 2)})
    assert _prefill_groups([text, seeing, other_text, seeing]) == [[text, other_text], [seeing], [seeing]]


def test_prompt_renders_through_the_processor_and_joins_text_parts(llava):
    from tunestack.inference.chat_prompt import vision_prompt

    _, processor = llava
    picture = image()
    conversation = [{"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image", "image": picture},
                                                 {"type": "text", "text": "What"}, {"type": "text", "text": "is it?"}]}]
    ids, media = vision_prompt(processor, conversation)
    expected_ids, expected_media = processor_inputs(processor, [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"},
                                     {"type": "text", "text": "What\nis it?"}]}], [picture])
    assert ids == expected_ids and set(media) == set(expected_media) == {"pixel_values"}
    assert torch.equal(media["pixel_values"], expected_media["pixel_values"])
    assert ids.count(processor.image_token_id) == 4
    text_ids, no_media = vision_prompt(processor, [{"role": "user", "content": QUESTION}])
    assert no_media is None and text_ids == processor_inputs(processor, asking(text=QUESTION), [])[0]


def test_a_bad_image_names_its_part(llava):
    from tunestack.inference.chat_prompt import vision_prompt
    from tunestack.media import MediaError

    broken = [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                           {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]}]
    with pytest.raises(MediaError, match=r"messages\[0\]\.content\[1\]: the data URL's base64 payload"):
        vision_prompt(llava[1], broken)


def test_loading_brings_the_processor_for_a_vlm_only(llava_dir, tiny_model_dir):
    from tunestack.config import ModelArgs
    from tunestack.errors import ConfigError
    from tunestack.inference.loading import load_for_inference

    loaded = load_for_inference(ModelArgs(model=str(llava_dir), dtype="fp32"))
    assert loaded.processor is not None and loaded.tokenizer is loaded.processor.tokenizer
    assert type(loaded.model).__name__ == "LlavaForConditionalGeneration"
    assert load_for_inference(ModelArgs(model=str(tiny_model_dir), dtype="fp32")).processor is None
    with pytest.raises(ConfigError, match="--image: --model .* is a text-only model"):
        load_for_inference(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), images_from="--image")


def test_infer_with_images_prints_what_generate_answers(llava_dir, llava, pictures):
    model, processor = llava
    images = [load_png(p) for p in pictures]
    expected = reference_generate(None, asking(*images), images, 8, llava)
    result = cli("infer", "--model", str(llava_dir), "--dtype", "fp32", "--max_new_tokens", "8",
                 "--image", str(pictures[0]), "--image", str(pictures[1]), "--prompt", QUESTION)
    assert result.stdout.strip() == processor.tokenizer.decode(expected, skip_special_tokens=True).strip()


@pytest.mark.parametrize("version", ["2", "3"])
def test_a_qwen2_vl_checkpoint_answers_through_the_cli_as_generate_does(version, pictures, tmp_path):
    """Without torchvision transformers cannot build Qwen2VLProcessor or Qwen3VLProcessor (their video processors
    need it): tunestack builds the processor for images alone, and answers as generate does on inputs expanded by
    hand (Qwen3-VL: DeepStack features added in the language model's first layers, interleaved M-RoPE)."""
    path = save_tiny_qwen2_vl(tmp_path / f"qwen{version}-vl", seed=3, version=version)
    model, image_processor, tokenizer = build_tiny_qwen2_vl(seed=3, version=version)
    images = [load_png(p) for p in pictures]
    inputs = qwen2_vl_inputs(tokenizer, image_processor, asking(*images), images)
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    result = cli("infer", "--model", str(path), "--dtype", "fp32", "--max_new_tokens", "8",
                 "--image", str(pictures[0]), "--image", str(pictures[1]), "--prompt", QUESTION)
    assert result.stdout.strip() == tokenizer.decode(expected, skip_special_tokens=True).strip()
    from tunestack.model.vision import load_processor, media_kinds

    assert media_kinds(load_processor(path)) == ["image", "video"]  # videos without torchvision: test_video.py


@pytest.mark.parametrize("family", ["llava-next", "gemma3"])
def test_llava_next_and_gemma3_answer_through_the_cli_as_generate_does(family, pictures, tmp_path):
    """Any-resolution tiles (LLaVA-NeXT: the image token count follows each picture's shape) and Gemma 3's soft
    image tokens, which attend to each other both ways (marked by the processor's token_type_ids)."""
    from tiny_vlms import save_tiny_gemma3, save_tiny_llava_next

    path = {"llava-next": save_tiny_llava_next, "gemma3": save_tiny_gemma3}[family](tmp_path / family, seed=4)
    images = [load_png(p) for p in pictures]
    expected = reference_generate(path, asking(*images), images, 8)
    result = cli("infer", "--model", str(path), "--dtype", "fp32", "--max_new_tokens", "8",
                 "--image", str(pictures[0]), "--image", str(pictures[1]), "--prompt", QUESTION)
    from transformers import AutoTokenizer

    assert result.stdout.strip() == AutoTokenizer.from_pretrained(path).decode(expected,
                                                                              skip_special_tokens=True).strip()
    assert len(expected) > 0


def test_terminal_chat_attaches_an_image_to_the_next_message(llava_dir, llava, pictures, tmp_path):
    model, processor = llava
    picture = load_png(pictures[0])
    expected = reference_generate(None, asking(picture), [picture], 6, llava)
    result = cli("infer", "--model", str(llava_dir), "--dtype", "fp32", "--max_new_tokens", "6",
                 input=f"/image {tmp_path}/missing.png\n/image {pictures[0]}\n{QUESTION}\n/exit\n")
    assert f"/image {tmp_path}/missing.png: image file" in result.stderr  # reported, and the chat goes on
    assert "(image 1 attached to your next message)" in result.stderr
    answer = result.stdout.split("assistant> ", 1)[1].split("\n")[0]
    assert answer.strip() == processor.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_images_for_a_text_model_fail_in_one_line_naming_the_flag(tiny_model_dir, pictures, tmp_path):
    from tunestack.config import InferArgs, ModelArgs
    from tunestack.errors import ConfigError
    from tunestack.inference.chat import run_infer
    from tunestack.media import MediaError

    result = cli("infer", "--model", str(tiny_model_dir), "--image", str(pictures[0]), "--prompt", "hi", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"--image: --model {tiny_model_dir} is a text-only model" in result.stderr
    model = ModelArgs(model=str(tiny_model_dir))
    with pytest.raises(MediaError, match=f"--image {tmp_path / 'none.png'}: image file"):  # before any model loads
        run_infer(model, InferArgs(prompt="hi", image=[str(tmp_path / "none.png")]))
    with pytest.raises(ConfigError, match="--image: the images of --prompt"):
        run_infer(model, InferArgs(image=[str(pictures[0])]))


def test_input_rows_with_images(llava_dir, llava, pictures, tiny_model_dir, tmp_path):
    import json

    from tunestack.config import InferArgs, ModelArgs
    from tunestack.errors import ConfigError
    from tunestack.inference.chat import run_infer

    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "image": pictures[0].name},
                                                       {"type": "text", "text": QUESTION}]}]},
            {"prompt": "hello world"}]
    prompts = pictures[0].parent / "rows.jsonl"  # image paths are relative to the file's folder
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=f"--input {prompts} \\(rows with images\\): --model .* text-only"):
        run_infer(ModelArgs(model=str(tiny_model_dir)), InferArgs(input=str(prompts), output=str(tmp_path / "x")))
    run_infer(ModelArgs(model=str(llava_dir), dtype="fp32"),
              InferArgs(input=str(prompts), output=str(tmp_path / "answers.jsonl"), max_new_tokens=6))
    answers = [json.loads(line)["response"] for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    picture = load_png(pictures[0])
    decode = llava[1].tokenizer.decode
    assert answers == [decode(reference_generate(None, asking(picture), [picture], 6, llava),
                              skip_special_tokens=True).strip(),
                       decode(reference_generate(None, asking(text="hello world"), [], 6, llava),
                              skip_special_tokens=True).strip()]


def load_png(path):
    from PIL import Image

    with Image.open(path) as picture:
        return picture.convert("RGB")
