"""A tiny random Qwen2-Audio for tests, built on the spot (about a second, never a download), and audio to send it.

- `save_tiny_qwen2_audio(path)`: a Qwen2-Audio (a Whisper-style audio tower of 2 layers over 16 mel bins, a Qwen2
  language model 2 x 64) with its Qwen2AudioProcessor: a WhisperFeatureExtractor with a 2-second window at 16 kHz
  (so a clip of t seconds becomes about 25 t audio tokens) and the family's own chat template, which writes
  `Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>` for each clip.
- `tone(hz, seconds, rate, channels)`, `wav_bytes(samples, rate)`, `save_wav(path, ...)`, `wav_base64(...)`: clips.
- `reference_generate(model_dir, messages, clips, n)`: what plain transformers generates greedily on the processor's
  own inputs.
"""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

from helpers import build_tokenizer

RATE = 16000
AUDIO_TOKENS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")


def save_tiny_qwen2_audio(path, seed: int = 0) -> Path:
    import torch
    from transformers import (Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, Qwen2Config, WhisperFeatureExtractor)

    path = Path(path)
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(AUDIO_TOKENS)})
    features = WhisperFeatureExtractor(feature_size=16, sampling_rate=RATE, hop_length=160, chunk_length=2,
                                       n_fft=400)
    processor = Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer)  # the family's template
    tower = Qwen2AudioEncoderConfig(num_mel_bins=16, encoder_layers=2, encoder_attention_heads=2,
                                    encoder_ffn_dim=64, d_model=32, max_source_positions=100)
    text = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    config = Qwen2AudioConfig(audio_config=tower, text_config=text,
                              audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(seed)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tone(hz: float, seconds: float = 0.5, rate: int = RATE, channels: int = 1, amplitude: float = 0.5):
    """A sine tone as float32 samples, shape (n,) for one channel, (n, channels) otherwise."""
    import numpy as np

    wave_ = (amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    return wave_ if channels == 1 else np.repeat(wave_[:, None], channels, axis=1)


def wav_bytes(samples, rate: int = RATE) -> bytes:
    """16-bit PCM WAV of float samples in [-1, 1] ((n,) or (n, channels))."""
    import numpy as np

    samples = np.asarray(samples)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def save_wav(path, samples, rate: int = RATE) -> Path:
    Path(path).write_bytes(wav_bytes(samples, rate))
    return Path(path)


def wav_base64(samples, rate: int = RATE) -> str:
    return base64.b64encode(wav_bytes(samples, rate)).decode()


def load_reference(model_dir):
    """(model in float32, processor) of the saved tiny Qwen2-Audio through plain transformers."""
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    return (Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval(),
            AutoProcessor.from_pretrained(model_dir))


def reference_generate(model_dir, messages: list[dict], clips: list, max_new_tokens: int, loaded=None) -> list[int]:
    """Greedy token ids of `model.generate` on the processor's inputs for `messages` (content as lists of
    `{"type": "audio"}` / `{"type": "text"}` parts, the clips in order, as samples at RATE), the end token and what
    follows it cut."""
    from tiny_vlms import greedy_tokens

    model, processor = loaded or load_reference(model_dir)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=clips or None, sampling_rate=RATE, return_tensors="pt",
                       add_special_tokens=False)
    return greedy_tokens(model, inputs, processor.tokenizer.eos_token_id, max_new_tokens)
