"""Audio-language models (Qwen2-Audio) end to end on a tiny random one: clips decoded through PyAV (resampled, mixed
to mono), audio rows in every shape the data takes, the batch the processor's own tokens with the loss on the
answer only, LoRA training through the real CLI (language model and projector adapted, audio tower untouched),
`tunestack infer --audio` and `tunestack serve` with OpenAI's `input_audio` parts answering as transformers'
`generate` does, and the errors for audio given to a model that cannot hear it."""

from __future__ import annotations

import json

import openai
import pytest
import torch

from helpers import cli, write_jsonl
from server_helpers import multimodal_client
from tiny_audio import RATE, reference_generate, save_tiny_qwen2_audio, save_wav, tone, wav_base64, wav_bytes

pytest.importorskip("av", reason="audio is decoded through PyAV: pip install 'tunestack[media]'")

PITCHES = {"low": 220.0, "high": 1760.0}


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory):
    return save_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"))


@pytest.fixture(scope="module")
def reference(audio_model):
    from tiny_audio import load_reference

    return load_reference(audio_model)


@pytest.fixture(scope="module")
def pitch_data(tmp_path_factory):
    """Rows in three shapes: audio parts with relative paths, an `audios` column beside <audio>, and a text row."""
    root = tmp_path_factory.mktemp("pitches")
    rows = []
    for name, hz in PITCHES.items():
        save_wav(root / f"{name}.wav", tone(hz, 0.6))
        rows.append({"messages": [{"role": "user", "content": [{"type": "audio", "audio": f"{name}.wav"},
                                                               {"type": "text", "text": "Pitch?"}]},
                                  {"role": "assistant", "content": f"{name.capitalize()}."}]})
        rows.append({"messages": [{"role": "user", "content": "<audio>Is it high or low?"},
                                  {"role": "assistant", "content": f"It is {name}."}], "audios": [f"{name}.wav"]})
    rows.append({"messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}]})
    return write_jsonl(root / "pitches.jsonl", rows * 2)


def test_clips_are_decoded_resampled_and_mixed_to_mono(tmp_path):
    from tunestack.media import MediaError, load_audio

    stereo = save_wav(tmp_path / "stereo.wav", tone(440.0, 0.5, rate=8000, channels=2), rate=8000)
    samples = load_audio(str(stereo), "row 3", RATE)
    assert samples.dtype.name == "float32" and abs(len(samples) - RATE // 2) <= 32  # 0.5 s at 16 kHz
    assert 0.45 < float(abs(samples).max()) < 0.55  # the two equal channels averaged, not summed
    assert len(load_audio(str(stereo), "row 3")) == 4000  # its own rate when none is asked for
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    with pytest.raises(MediaError, match=r"^row 7: .*broken.wav is not readable audio"):
        load_audio(str(tmp_path / "broken.wav"), "row 7", RATE)
    with pytest.raises(MediaError, match=r"^row 8: audio file .*missing.wav not found"):
        load_audio(str(tmp_path / "missing.wav"), "row 8", RATE)


def test_every_audio_shape_becomes_the_same_canonical_row(tmp_path):
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.errors import DataError

    clip = save_wav(tmp_path / "clip.wav", tone(330.0, 0.3))
    answer = {"role": "assistant", "content": "A tone."}
    shapes = [
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": "clip.wav"},
                                                   {"type": "text", "text": "What?"}]}, answer]},
        {"messages": [{"role": "user", "content": "<audio>What?"}, answer], "audios": ["clip.wav"]},
        {"conversations": [{"from": "human", "value": "<audio>What?"}, {"from": "gpt", "value": "A tone."}],
         "audios": [{"path": "clip.wav"}]},
    ]
    for i, row in enumerate(shapes):
        data = write_jsonl(tmp_path / f"shape{i}.jsonl", [row])
        got = list(load_datasets(DataArgs(dataset=[str(data)])).train)
        assert got == [{"messages": [{"role": "user", "content": "<audio>What?"}, answer], "images": [],
                        "audios": [str(clip)], "videos": [], "objects": None}]
    # OpenAI's input_audio: base64 kept as a data URL
    inline = {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": wav_base64(tone(330.0, 0.3)), "format": "wav"}},
        {"type": "text", "text": "What?"}]}, answer]}
    row = list(load_datasets(DataArgs(dataset=[str(write_jsonl(tmp_path / "inline.jsonl", [inline]))])).train)[0]
    assert row["audios"][0].startswith("data:audio/wav;base64,UklGR")
    two_placeholders = {"messages": [{"role": "user", "content": "<audio><audio>What?"}, answer], "audios": ["clip.wav"]}
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: 1 audio\(s\) but 2 <audio> placeholder\(s\)"):
        load_datasets(DataArgs(dataset=[str(write_jsonl(tmp_path / "bad.jsonl", [shapes[1], two_placeholders]))]))


def test_the_batch_is_the_processors_own_tokens_with_loss_on_the_answer_only(audio_model, pitch_data):
    from transformers import AutoProcessor

    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.data.tokenize import IGNORE_INDEX
    from tunestack.data.vision import MediaCollator, encode_media_rows, part_messages
    from tunestack.media import load_audio
    from tunestack.model.vision import load_processor

    processor = load_processor(audio_model)
    rows = list(load_datasets(DataArgs(dataset=[str(pitch_data)])).train)[:5]
    batch = MediaCollator(processor, max_length=512)(encode_media_rows(rows, processor, "data"))
    reference = AutoProcessor.from_pretrained(audio_model)
    audio_token = reference.tokenizer.convert_tokens_to_ids("<|AUDIO|>")

    def reference_ids(messages, clips, prompt):
        text = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        return reference(text=[text], audio=clips, sampling_rate=RATE, add_special_tokens=False)["input_ids"][0]

    for i, row in enumerate(rows):
        messages = part_messages(row["messages"])
        clips = [load_audio(ref, "here", RATE) for ref in row["audios"]] or None
        ids = list(reference_ids(messages, clips, False))
        prompt_ids = list(reference_ids(messages[:-1], clips, True))
        kept = batch["attention_mask"][i].bool()
        assert batch["input_ids"][i][kept].tolist() == ids
        if clips:  # 0.6 s: (60 frames -> 30 -> 15) audio tokens, each expanded from one placeholder
            assert ids.count(audio_token) == 15 * len(clips)
        labels = batch["labels"][i][kept].tolist()
        assert labels[:len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)  # prompt and audio tokens
        answer = reference.tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
        assert answer == row["messages"][-1]["content"] + "<|im_end|>\n"
    assert batch["input_features"].shape[0] == sum(len(r["audios"]) for r in rows)
    assert "feature_attention_mask" in batch


def test_lora_trains_the_language_model_and_projector_and_leaves_the_audio_tower(audio_model, pitch_data,
                                                                                 tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    result = cli("sft", "--model", str(audio_model), "--dataset", str(pitch_data), "--output_dir", str(run),
                 "--max_steps", "8", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3",
                 "--logging_steps", "1", "--dtype", "fp32")
    assert "examples with 0 images, 8 audio clips" in result.stderr
    losses = [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])
    adapter = load_file(run / "final" / "adapter_model.safetensors")
    assert any(".lora_A." in k and "language_model" in k for k in adapter)
    assert any("multi_modal_projector" in k for k in adapter)  # the aligner trains in full, saved with the adapter
    assert not any("audio_tower" in k for k in adapter)
    assert json.loads((run / "run.json").read_text())["data"]["media"]["audios"] == 8
    # the run answers with a clip: the adapted model's greedy answer, as transformers and peft give it
    answer = cli("infer", "--model", str(run), "--audio", str(pitch_data.parent / "low.wav"), "--prompt", "Pitch?",
                 "--max_new_tokens", "6", "--dtype", "fp32").stdout.strip()
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    base = Qwen2AudioForConditionalGeneration.from_pretrained(audio_model, dtype=torch.float32)
    loaded = (PeftModel.from_pretrained(base, run / "final").eval(), AutoProcessor.from_pretrained(audio_model))
    tokens = reference_generate(None, [{"role": "user", "content": [{"type": "audio"},
                                                                    {"type": "text", "text": "Pitch?"}]}],
                                [tone(PITCHES["low"], 0.6)], 6, loaded)
    assert answer == loaded[1].tokenizer.decode(tokens, skip_special_tokens=True).strip()
    # the merged export loads with transformers' auto classes and gives the adapted model's logits
    from transformers import AutoModelForMultimodalLM

    cli("export", "--model", str(run), "--output_dir", str(tmp_path / "export"))
    merged = AutoModelForMultimodalLM.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "export")
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "audio"},
                                                                       {"type": "text", "text": "Pitch?"}]}],
                                         add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=[tone(PITCHES["high"], 0.6)], sampling_rate=RATE, return_tensors="pt",
                       add_special_tokens=False)
    with torch.no_grad():
        got, want = merged(**inputs).logits, loaded[0](**inputs).logits
        with loaded[0].disable_adapter():  # peft wrapped `base` in place: the untrained model is the adapter off
            untrained = loaded[0](**inputs).logits
    assert (got - want).abs().max() < 1e-4
    assert (want - untrained).abs().max() > 1e-3  # the adapter and projector changed the answer


def test_a_text_model_given_audio_data_says_so_before_loading(tiny_model_dir, pitch_data, tmp_path):
    result = cli("sft", "--model", str(tiny_model_dir), "--dataset", str(pitch_data), "--output_dir",
                 str(tmp_path / "run"), "--max_steps", "1", check=False)
    assert result.returncode != 0
    assert "has audio, but --model" in result.stderr and "is a text-only model" in result.stderr
    refused = cli("infer", "--model", str(tiny_model_dir), "--audio", str(pitch_data.parent / "low.wav"),
                  "--prompt", "Pitch?", check=False)
    assert refused.returncode != 0 and "text-only model (no vision or audio encoder)" in refused.stderr


def test_an_image_model_given_audio_data_says_so(llava_dir, pitch_data, tmp_path):
    result = cli("sft", "--model", str(llava_dir), "--dataset", str(pitch_data), "--output_dir",
                 str(tmp_path / "run"), "--max_steps", "1", check=False)
    assert result.returncode != 0 and "LlavaProcessor cannot read audio" in result.stderr


@pytest.fixture(scope="module")
def audio_client(audio_model):
    """The openai client of a uvicorn server on loopback serving the tiny Qwen2-Audio as `tiny`, built as `tunestack
    serve` builds it."""
    with multimodal_client(audio_model) as client:
        yield client


def test_the_server_hears_input_audio_as_generate_does(audio_client, reference):
    clips = [tone(PITCHES["low"], 0.6), tone(PITCHES["high"], 0.4)]
    content = [*({"type": "input_audio", "input_audio": {"data": wav_base64(c), "format": "wav"}} for c in clips),
               {"type": "text", "text": "Which is higher?"}]
    reply = audio_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                                 max_tokens=8, temperature=0)
    parts = [{"type": "audio"}, {"type": "audio"}, {"type": "text", "text": "Which is higher?"}]
    tokens = reference_generate(None, [{"role": "user", "content": parts}], clips, 8, reference)
    assert reply.choices[0].message.content == reference[1].tokenizer.decode(tokens, skip_special_tokens=True)
    prompt = reference[1].apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True,
                                              tokenize=False)
    expanded = reference[1](text=[prompt], audio=clips, sampling_rate=RATE, add_special_tokens=False)
    assert reply.usage.prompt_tokens == len(expanded["input_ids"][0])  # the clips' audio tokens count
    # text-only requests on the same server, and a clip that does not decode is a 400 naming the part
    plain = audio_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=4, temperature=0)
    assert plain.choices[0].finish_reason in ("stop", "length")
    broken = [{"type": "text", "text": "Hm?"},
              {"type": "input_audio", "input_audio": {"data": "bm90IGF1ZGlv", "format": "wav"}}]
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.content\[1\]: the data URL is not readable"):
        audio_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": broken}],
                                             max_tokens=4)
    image_part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.content\[0\]: this model reads audio but not "
                                                     r"image"):
        audio_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [image_part]}],
                                             max_tokens=4)


def test_wav_bytes_round_trip_through_the_decoder(tmp_path):
    """The tests' WAV writer and the decoder agree sample for sample (16-bit quantisation aside)."""
    import numpy as np

    from tunestack.media import load_audio

    samples = tone(500.0, 0.25)
    path = tmp_path / "t.wav"
    path.write_bytes(wav_bytes(samples))
    assert np.abs(load_audio(str(path), "t", RATE) - samples).max() < 1e-3
