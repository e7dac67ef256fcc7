"""Images in messages: one canonical content part, and one loader for files, data URLs and http(s) URLs.

Rows, server requests and the terminal chat all bring images in their own shapes (`{"type": "image", "image": ...}`,
OpenAI's `image_url`, an `images` column); `image_part` turns each into `{"type": "image", "image": REF}`, where REF
is an absolute path, a `data:` URL or an http(s) URL. Media stay such references until a processor needs pixels:
`load_image` reads them then, with a timeout and a size cap, and names the row or request when it cannot.

It sits at the top of the package, beside `message_text`, because `data`, `inference`, `serve` and `eval` all use it
and none of them may import another. PIL is imported only when an image is read.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.error
import urllib.request
from pathlib import Path

from tunestack.errors import DataError

IMAGE_PARTS = ("image", "image_url", "input_image")
"""Content part types that carry an image (ours, OpenAI chat's, OpenAI responses')."""
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""The largest image file or download read (20 MiB)."""
URL_TIMEOUT_S = 10.0
"""How long an http(s) image may take to arrive."""


class MediaError(DataError):
    """An image that cannot be read: missing, too large, not an image, or a URL that failed or timed out."""


def is_image_part(part) -> bool:
    return isinstance(part, dict) and part.get("type") in IMAGE_PARTS


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


def image_bytes(ref: str, where: str, timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The encoded bytes behind a reference, at most `max_bytes`; MediaError naming `where` otherwise."""
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header:
            raise MediaError(f"{where}: data URL is not base64 ({header[:40]}); expected data:image/png;base64,...")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(f"{where}: the data URL's base64 payload does not decode") from None
    elif ref.startswith(("http://", "https://")):
        data = _download(ref, where, timeout, max_bytes)
    else:
        try:
            size = os.path.getsize(ref)
        except OSError:
            raise MediaError(f"{where}: image file {ref} not found") from None
        if size > max_bytes:
            raise MediaError(f"{where}: image file {ref} is {size / 2**20:.1f} MiB; the limit is "
                             f"{max_bytes / 2**20:.0f} MiB")
        data = Path(ref).read_bytes()
    if len(data) > max_bytes:
        raise MediaError(f"{where}: image is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    return data


def _download(url: str, where: str, timeout: float, max_bytes: int) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "tunestack"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except TimeoutError:
        raise MediaError(f"{where}: image URL {url} timed out after {timeout:g} s") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise MediaError(f"{where}: image URL {url} timed out after {timeout:g} s") from None
        raise MediaError(f"{where}: image URL {url} could not be fetched ({reason})") from None
    if len(data) > max_bytes:
        raise MediaError(f"{where}: image at {url} is larger than the {max_bytes / 2**20:.0f} MiB limit")
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


IMAGE_PLACEHOLDER = "<image>"
"""Where an image sits in a message's text, in data with an `images` column and in canonical rows."""


def placeholder_text(texts_and_images: list[str | None]) -> str:
    """A message's content as one string: text parts joined as `join_text_parts` joins them, each image (None) as
    IMAGE_PLACEHOLDER with no separator around it, so `content_parts` gives the parts back exactly."""
    from tunestack.message_text import join_text_parts

    out, run = [], []
    for piece in texts_and_images:
        if piece is None:
            out += [join_text_parts(run), IMAGE_PLACEHOLDER] if run else [IMAGE_PLACEHOLDER]
            run = []
        else:
            run.append(piece)
    if run:
        out.append(join_text_parts(run))
    return "".join(out)


def content_parts(text: str) -> list[dict]:
    """A placeholder string as processor chat templates take content: `{"type": "image"}` and
    `{"type": "text", "text": ...}` parts, in order, without empty text parts."""
    parts = []
    for i, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts
