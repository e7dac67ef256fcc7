"""Images, audio and videos in messages: one canonical content part per kind, and loaders for files, data URLs
and http(s) URLs.

Rows, server requests and the terminal chat all bring media in their own shapes (`{"type": "image", "image": ...}`,
OpenAI's `image_url` and `input_audio`, `images` / `audios` columns); `image_part` and `audio_part` turn each into
`{"type": "image", "image": REF}` or `{"type": "audio", "audio": REF}`, where REF is an absolute path, a `data:` URL
or an http(s) URL. Media stay such references until a processor needs pixels or samples: `load_image` and
`load_audio` (and `load_video`) read them then, with a timeout and a size cap, and name the row or request when
they cannot.

It sits at the top of the package, beside `message_text`, because `data`, `inference`, `serve` and `eval` all use it
and none of them may import another. PIL is imported only when an image is read, PyAV (the `media` extra) only when
audio or video is decoded.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tunestack.errors import DataError

IMAGE_PARTS = ("image", "image_url", "input_image")
"""Content part types that carry an image (ours, OpenAI chat's, OpenAI responses')."""
AUDIO_PARTS = ("audio", "input_audio", "audio_url")
"""Content part types that carry audio (ours, OpenAI chat's base64 `input_audio`, vLLM's `audio_url`)."""
VIDEO_PARTS = ("video", "video_url")
"""Content part types that carry a video (ours, vLLM's `video_url`)."""
MAX_VIDEO_BYTES = 200 * 1024 * 1024
"""The largest video file or download read (200 MiB)."""
VIDEO_FPS = 2.0
"""Frames sampled per second of video by default (Qwen2-VL's rate), `--fps`."""
VIDEO_MAX_FRAMES = 64
"""The most frames sampled from one video by default, `--max_frames`."""
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""The largest image or audio file or download read (20 MiB)."""
URL_TIMEOUT_S = 10.0
"""How long an http(s) image or audio file may take to arrive."""


class MediaError(DataError):
    """An image, audio or video file that cannot be read: missing, too large, not decodable, or a URL that failed or
    timed out."""


def is_image_part(part) -> bool:
    return isinstance(part, dict) and part.get("type") in IMAGE_PARTS


def media_kind(part) -> str | None:
    """"image", "audio" or "video" for a content part that carries one, else None."""
    kind = part.get("type") if isinstance(part, dict) else None
    return ("image" if kind in IMAGE_PARTS else "audio" if kind in AUDIO_PARTS
            else "video" if kind in VIDEO_PARTS else None)


def media_part(part: dict, where: str, base_dir: Path | None = None) -> dict:
    """The canonical part of an image, audio or video part (`image_part`, `audio_part`, `video_part`)."""
    return {"audio": audio_part, "video": video_part}.get(media_kind(part), image_part)(part, where, base_dir)


def video_part(part: dict, where: str, base_dir: Path | None = None) -> dict:
    """The canonical `{"type": "video", "video": REF}` for ours or vLLM's `{"type": "video_url", "video_url":
    {"url": ...}}`; MediaError naming `where` when the part holds no reference."""
    value = part.get(part.get("type"))
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value.strip():
        raise MediaError(f'{where}: a video part needs a path or URL, e.g. {{"type": "video", "video": "clip.mp4"}} '
                         'or {"type": "video_url", "video_url": {"url": "https://..."}}')
    return {"type": "video", "video": image_reference(value.strip(), base_dir)}


def audio_part(part: dict, where: str, base_dir: Path | None = None) -> dict:
    """The canonical `{"type": "audio", "audio": REF}` for any audio part: ours, vLLM's `{"type": "audio_url",
    "audio_url": {"url": ...}}`, or OpenAI's `{"type": "input_audio", "input_audio": {"data": BASE64, "format":
    "wav"}}` (kept as a data URL). Raises MediaError naming `where` when the part holds no reference."""
    kind = part.get("type")
    value = part.get(kind) if kind in ("audio", "audio_url") else None
    if kind == "input_audio":
        payload = part.get("input_audio")
        data = payload.get("data") if isinstance(payload, dict) else None
        if isinstance(data, str) and data.strip():
            value = f"data:audio/{payload.get('format') or 'wav'};base64,{data.strip()}"
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value.strip():
        raise MediaError(f'{where}: an audio part needs a path or URL, e.g. {{"type": "audio", "audio": "a.wav"}} '
                         'or {"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}')
    return {"type": "audio", "audio": image_reference(value.strip(), base_dir)}


def image_part(part: dict, where: str, base_dir: Path | None = None) -> dict:
    """The canonical `{"type": "image", "image": REF}` for any image part; a relative path is taken relative to
    `base_dir` (the data file's folder; kept relative without one). Raises MediaError naming `where` when the part
    holds no reference."""
    value = part.get("image") if part.get("type") == "image" else part.get("image_url", part.get("image"))
    if isinstance(value, dict):  # OpenAI: {"type": "image_url", "image_url": {"url": ..., "detail": ...}}
        value = value.get("url")
    if not isinstance(value, str) or not value.strip():
        raise MediaError(f'{where}: an image part needs a path or URL, e.g. {{"type": "image", "image": "cat.png"}} '
                         f'or {{"type": "image_url", "image_url": {{"url": "https://..."}}}}')
    return {"type": "image", "image": image_reference(value.strip(), base_dir)}


def image_reference(value: str, base_dir: Path | None = None) -> str:
    """A path, data URL or URL as a reference that needs no context: a relative path is taken relative to
    `base_dir`, and stays relative without one."""
    if value.startswith(("data:", "http://", "https://")):
        return value
    if value.startswith("file://"):
        value = value[len("file://"):]
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    return str((Path(base_dir) / path).absolute()) if base_dir is not None else str(path)


def image_bytes(ref: str, where: str, timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_IMAGE_BYTES,
                kind: str = "image") -> bytes:
    """The encoded bytes behind a reference, at most `max_bytes`; MediaError naming `where` otherwise (and the
    media's `kind`: image, audio or video)."""
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header:
            example = "data:image/png;base64,..." if kind == "image" else "data:audio/wav;base64,..."
            raise MediaError(f"{where}: data URL is not base64 ({header[:40]}); expected {example}")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(f"{where}: the data URL's base64 payload does not decode") from None
    elif ref.startswith(("http://", "https://")):
        data = _download(ref, where, timeout, max_bytes, kind)
    else:
        try:
            size = os.path.getsize(ref)
        except OSError:
            raise MediaError(f"{where}: {kind} file {ref} not found") from None
        if size > max_bytes:
            raise MediaError(f"{where}: {kind} file {ref} is {size / 2**20:.1f} MiB; the limit is "
                             f"{max_bytes / 2**20:.0f} MiB")
        data = Path(ref).read_bytes()
    if len(data) > max_bytes:
        raise MediaError(f"{where}: {kind} is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    return data


def _download(url: str, where: str, timeout: float, max_bytes: int, kind: str = "image") -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "tunestack"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except TimeoutError:
        raise MediaError(f"{where}: {kind} URL {url} timed out after {timeout:g} s") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise MediaError(f"{where}: {kind} URL {url} timed out after {timeout:g} s") from None
        raise MediaError(f"{where}: {kind} URL {url} could not be fetched ({reason})") from None
    if len(data) > max_bytes:
        raise MediaError(f"{where}: {kind} at {url} is larger than the {max_bytes / 2**20:.0f} MiB limit")
    return data


def load_image(ref: str, where: str, timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_IMAGE_BYTES):
    """The image behind `ref` as an RGB `PIL.Image`, fully decoded; MediaError naming `where` when it cannot be."""
    import io

    from PIL import Image, UnidentifiedImageError

    data = image_bytes(ref, where, timeout, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        shown = ref if not ref.startswith("data:") else "the data URL"
        raise MediaError(f"{where}: {shown} is not a readable image ({type(exc).__name__}: {exc})") from None


def load_audio(ref: str, where: str, sampling_rate: int | None = None, timeout: float = URL_TIMEOUT_S,
               max_bytes: int = MAX_IMAGE_BYTES):
    """The audio behind `ref` (any format FFmpeg reads: wav, flac, mp3, ogg, ...) as mono float32 samples in a numpy
    array, resampled to `sampling_rate` (kept at the file's own rate when None); MediaError naming `where` when it
    cannot be decoded. Decoding goes through PyAV (`pip install 'tunestack[media]'`)."""
    import numpy as np

    with _decoding(ref, where, "audio", timeout, max_bytes) as (av, container, stream):
        # planar float at the wanted rate, channels averaged as librosa's to_mono does (FFmpeg's own downmix
        # scales the channels differently)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=sampling_rate or stream.rate)
        chunks = [out.to_ndarray().mean(axis=0) for frame in container.decode(stream)
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(None)]
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if not samples.size:
        raise MediaError(f"{where}: {_shown(ref)} holds no audio samples")
    return samples.astype(np.float32, copy=False)


class VideoFrames:
    """Frames sampled from a video: `frames`, RGB uint8 of shape (frames, height, width, 3), and the rate they were
    sampled at (`fps`, frames per second of the video's time), which models with time-aware positions read."""

    def __init__(self, frames, fps: float):
        self.frames = frames
        self.fps = fps

    def __len__(self) -> int:
        return len(self.frames)


def load_video(ref: str, where: str, fps: float = VIDEO_FPS, max_frames: int = VIDEO_MAX_FRAMES,
               timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_VIDEO_BYTES) -> VideoFrames:
    """Frames of the video behind `ref` (any container and codec FFmpeg reads), sampled evenly at `fps` frames per
    second of video, at most `max_frames` and at least 2 (fewer when the video has fewer frames), as transformers'
    Qwen2-VL video processor samples them; MediaError naming `where` when it cannot be decoded. Decoding goes
    through PyAV (`pip install 'tunestack[media]'`)."""
    import numpy as np

    with _decoding(ref, where, "video", timeout, max_bytes) as (_, container, stream):
        total = stream.frames or sum(1 for _ in container.decode(stream))  # counted when not recorded
        rate = float(stream.average_rate or stream.guessed_rate or 0) or float(total)  # unknown: read as 1 second
        count = min(max(round(total / rate * fps), 2), max_frames, total)
        wanted = {int(i * total / count) for i in range(count)}
        container.seek(0)
        # only the sampled frames are converted and kept (a long video is never held whole)
        frames = [frame.to_ndarray(format="rgb24") for index, frame in enumerate(container.decode(stream))
                  if index in wanted]
    if not frames:
        raise MediaError(f"{where}: {_shown(ref)} holds no video frames")
    return VideoFrames(np.stack(frames), fps=len(frames) / (total / rate))


def _shown(ref: str) -> str:
    return ref if not ref.startswith("data:") else "the data URL"


@contextlib.contextmanager
def _decoding(ref: str, where: str, kind: str, timeout: float, max_bytes: int):
    """(av, an open PyAV container, its first `kind` stream: audio or video) for the media behind `ref`; anything
    FFmpeg cannot decode, while open or while decoding, becomes a MediaError naming `where`."""
    import io

    try:
        import av
    except ImportError:
        from tunestack.errors import MissingExtraError

        raise MissingExtraError("av (PyAV)", "media", f"{where}: decoding {kind}") from None
    data = image_bytes(ref, where, timeout, max_bytes, kind=kind)
    try:
        with av.open(io.BytesIO(data)) as container:
            streams = getattr(container.streams, kind)
            if not streams:
                raise MediaError(f"{where}: {_shown(ref)} holds no {kind} stream")
            yield av, container, streams[0]
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, IndexError, ZeroDivisionError) as exc:
        what = "readable audio" if kind == "audio" else "a readable video"
        raise MediaError(f"{where}: {_shown(ref)} is not {what} ({type(exc).__name__}: {exc})") from None


IMAGE_PLACEHOLDER = "<image>"
"""Where an image sits in a message's text, in data with an `images` column and in canonical rows."""
AUDIO_PLACEHOLDER = "<audio>"
"""Where an audio clip sits in a message's text, in data with an `audios` column and in canonical rows."""
VIDEO_PLACEHOLDER = "<video>"
"""Where a video sits in a message's text, in data with a `videos` column and in canonical rows."""
PLACEHOLDERS = {"image": IMAGE_PLACEHOLDER, "audio": AUDIO_PLACEHOLDER, "video": VIDEO_PLACEHOLDER}
MEDIA_COLUMNS = {"image": "images", "audio": "audios", "video": "videos"}
"""Each kind's column in rows (and key in a message read from media parts until its row gathers them)."""
MEDIA_NOUNS = {"image": "images", "audio": "audio", "video": "videos"}
"""Each kind as messages name it."""


def placeholder_text(pieces: list[str | dict]) -> str:
    """A message's content as one string: text parts joined as `join_text_parts` joins them, each media part (a
    dict such as `{"type": "image"}` or `{"type": "audio"}`) as its placeholder (IMAGE_PLACEHOLDER,
    AUDIO_PLACEHOLDER) with no separator around it, so `content_parts` gives the parts back exactly."""
    from tunestack.message_text import join_text_parts

    out, run = [], []
    for piece in pieces:
        if isinstance(piece, dict):
            out += [join_text_parts(run), PLACEHOLDERS[piece["type"]]] if run else [PLACEHOLDERS[piece["type"]]]
            run = []
        else:
            run.append(piece)
    if run:
        out.append(join_text_parts(run))
    return "".join(out)


def content_parts(text: str) -> list[dict]:
    """A placeholder string as processor chat templates take content: `{"type": "image"}`, `{"type": "audio"}`,
    `{"type": "video"}` and `{"type": "text", "text": ...}` parts, in order, without empty text parts."""
    import re

    kinds = {placeholder: kind for kind, placeholder in PLACEHOLDERS.items()}
    parts = []
    for piece in re.split("(" + "|".join(map(re.escape, kinds)) + ")", text):
        if piece in kinds:
            parts.append({"type": kinds[piece]})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts
