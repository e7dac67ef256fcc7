"""Pydantic models of the OpenAI requests the server accepts; they reject bad values before any work starts."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tunestack.message_text import content_text

logger = logging.getLogger("tunestack.serve")
_SURROGATE = re.compile("[\ud800-\udfff]")


class FieldError(ValueError):
    """A request value the server refuses, with the dotted path of its field (`messages.0.content`)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _find_surrogate(value, path: str) -> str | None:
    """The path of the first string (or key) holding a lone UTF-16 surrogate, which JSON allows and Unicode text
    cannot hold (the tokenizer and the UTF-8 encoder refuse it)."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and _SURROGATE.search(key):
            return path or "body"
        found = _find_surrogate(item, where)
        if found:
            return found
    return None


class _Request(BaseModel):
    """Fields we do not know are accepted (clients send many) and logged by name, never silently used."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _refuse_surrogates(cls, data):
        field = _find_surrogate(data, "")
        if field is not None:
            raise FieldError(field or "body", "holds a lone UTF-16 surrogate (such as \\ud800), which is not "
                             "valid Unicode; send the text as UTF-8 or as escaped surrogate pairs")
        return data

    @model_validator(mode="after")
    def _log_unknown(self):
        if self.model_extra:
            logger.warning("%s: ignoring unknown fields %s", type(self).__name__, sorted(self.model_extra))
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object"] = "text"


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str = Field(min_length=1)  # a data URL (data:image/png;base64,...) or an http(s) URL
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's processor decides the resolution


class ImagePart(BaseModel):
    """OpenAI's image part, `{"type": "image_url", "image_url": {"url": ...}}`; read once the request is admitted."""

    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(BaseModel):
    data: str = Field(min_length=1)  # base64 of the encoded file
    format: str = Field("wav", pattern="^[A-Za-z0-9]{1,10}$")  # wav, mp3, flac, ogg, ...: what FFmpeg reads


class AudioURL(BaseModel):
    url: str = Field(min_length=1)  # a data URL (data:audio/wav;base64,...) or an http(s) URL


class AudioPart(BaseModel):
    """OpenAI's audio input, `{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}`."""

    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURLPart(BaseModel):
    """vLLM's audio by URL, `{"type": "audio_url", "audio_url": {"url": ...}}`."""

    type: Literal["audio_url"]
    audio_url: AudioURL


class VideoURL(BaseModel):
    url: str = Field(min_length=1)  # a data URL (data:video/mp4;base64,...) or an http(s) URL


class VideoURLPart(BaseModel):
    """vLLM's video by URL, `{"type": "video_url", "video_url": {"url": ...}}`."""

    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | ImagePart | AudioPart | AudioURLPart | VideoURLPart, Field(discriminator="type")]
MEDIA_PARTS = (ImagePart, AudioPart, AudioURLPart, VideoURLPart)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The content as the model sees it: text parts joined by the rule training uses."""
        return content_text(self.content)

    def media_parts(self) -> list[int]:
        """The positions of the image, audio and video parts in the content."""
        return [j for j, part in enumerate(self.content or ()) if isinstance(part, MEDIA_PARTS)]

    def message(self) -> dict:
        """The message as a plain dict (role and content, media parts as OpenAI sends them)."""
        content = self.content if self.content is None or isinstance(self.content, str) else \
            [part.model_dump(exclude_none=True) for part in self.content]
        return {"role": self.role, "content": content}


class _Sampling(_Request):
    """Settings shared by chat and text completions (OpenAI's ranges; top_k and repetition_penalty as in vLLM)."""

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens even past the end token (benchmarks)
    seed: int | None = Field(None, ge=0, lt=2**63 - 64)  # choice i of n samples with seed + i
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    @model_validator(mode="after")
    def _check_stop(self):
        if len(self.stop_strings()) > 16:
            raise FieldError("stop", "at most 16 stop strings")
        return self


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict | None = None  # as vLLM accepts: {"enable_thinking": false} for Qwen3

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @model_validator(mode="after")
    def _check_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise FieldError("top_logprobs", "needs logprobs set to true")
        return self


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    def token_limit(self) -> int | None:
        return self.max_tokens

    @model_validator(mode="after")
    def _check_prompt(self):
        if isinstance(self.prompt, list) and not self.prompt:
            raise FieldError("prompt", "must not be empty")
        if isinstance(self.prompt, list) and any(isinstance(p, list) and not p for p in self.prompt):
            raise FieldError("prompt", "token lists must not be empty")
        if self.max_tokens == 0 and not self.echo:
            raise FieldError("max_tokens", "0 is only allowed with echo (scoring the prompt)")
        return self

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]
        return list(self.prompt)
