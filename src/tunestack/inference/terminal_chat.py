"""The terminal chat of `tunestack infer`: a multi-turn conversation typed at a prompt, each answer streamed as it
is generated; /image PATH attaches a picture to the next message when the model can see."""

from __future__ import annotations

import sys

from tunestack.inference.chat import Chat
from tunestack.inference.engine import SamplingParams


def chat_in_terminal(chat: Chat, params: SamplingParams) -> None:
    """Read messages from the terminal and stream each answer; the conversation so far goes with every message.
    Commands: /image PATH (a vision-language model), /clear, /exit."""
    seeing = chat.processor is not None
    print("chat: type a message; " + ("/image PATH attaches an image to your next message, " if seeing else "")
          + "/clear starts over, /exit (or Ctrl-D) quits", file=sys.stderr)
    history: list[dict] = []
    images: list = []  # attached with /image, sent with the next message
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            history, images = [], []
            continue
        if text == "/image" or text.startswith("/image "):
            _attach(text.removeprefix("/image").strip(), images, seeing)
            continue
        if not text:
            continue
        content = [*({"type": "image", "image": i} for i in images), {"type": "text", "text": text}]
        history.append({"role": "user", "content": content if images else text})
        images = []
        print("assistant> ", end="", flush=True)
        reply = ""
        try:
            for piece in chat.stream(history, params):
                reply += piece
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            pass
        print(flush=True)
        history.append({"role": "assistant", "content": reply.strip()})


def _attach(path: str, images: list, seeing: bool) -> None:
    """/image PATH: read the image now (a bad one is reported at once) and keep it for the next message."""
    from tunestack.errors import TunestackError
    from tunestack.media import image_reference, load_image

    if not seeing:
        print("/image: this model is a text-only model (no vision encoder) and cannot take images", file=sys.stderr)
    elif not path:
        print("/image: give the image's path or URL, e.g. /image cat.png", file=sys.stderr)
    else:
        try:
            images.append(load_image(image_reference(path), f"/image {path}"))
        except TunestackError as exc:
            print(exc, file=sys.stderr)
            return
        print(f"(image {len(images)} attached to your next message)", file=sys.stderr)
