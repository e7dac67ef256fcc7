"""The terminal chat of `tunestack infer`: a multi-turn conversation typed at a prompt, each answer streamed as it
is generated; /image PATH attaches a picture to the next message when the model can see, /audio PATH a clip when
it can hear."""

from __future__ import annotations

import sys

from tunestack.inference.chat import Chat
from tunestack.inference.engine import SamplingParams


def chat_in_terminal(chat: Chat, params: SamplingParams) -> None:
    """Read messages from the terminal and stream each answer; the conversation so far goes with every message.
    Commands: /image PATH (a vision-language model), /audio PATH (an audio-language model), /clear, /exit."""
    takes = _takes(chat.processor)
    print("chat: type a message; " + "".join(f"/{kind} PATH attaches {'an image' if kind == 'image' else 'a clip'} "
                                              "to your next message, " for kind in takes)
          + "/clear starts over, /exit (or Ctrl-D) quits", file=sys.stderr)
    history: list[dict] = []
    attached: list = []  # content parts attached with /image or /audio, sent with the next message
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            history, attached = [], []
            continue
        command = next((kind for kind in ("image", "audio") if text == f"/{kind}" or text.startswith(f"/{kind} ")),
                       None)
        if command:
            _attach(command, text.removeprefix(f"/{command}").strip(), attached, takes)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": [*attached, {"type": "text", "text": text}] if attached else text})
        attached = []
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


def _takes(processor) -> list[str]:
    """The kinds of media the model reads: "image" with an image processor, "audio" with a feature extractor."""
    return [kind for kind, reader in (("image", "image_processor"), ("audio", "feature_extractor"))
            if getattr(processor, reader, None) is not None]


def _attach(kind: str, path: str, attached: list, takes: list[str]) -> None:
    """/image PATH or /audio PATH: read the file now (a bad one is reported at once) and keep it for the next
    message."""
    from tunestack.errors import TunestackError
    from tunestack.media import image_reference, load_audio, load_image

    if kind not in takes:
        print(f"/{kind}: this model has no {'vision' if kind == 'image' else 'audio'} encoder and cannot take "
              f"{kind}s", file=sys.stderr)
    elif not path:
        print(f"/{kind}: give the file's path or URL, e.g. /{kind} {'cat.png' if kind == 'image' else 'clip.wav'}",
              file=sys.stderr)
    else:
        value = image_reference(path)
        try:
            if kind == "image":
                value = load_image(value, f"/image {path}")
            else:
                load_audio(value, f"/audio {path}")  # decoded again at the processor's rate when sent
        except TunestackError as exc:
            print(exc, file=sys.stderr)
            return
        attached.append({"type": kind, kind: value})
        count = sum(part["type"] == kind for part in attached)
        print(f"({kind} {count} attached to your next message)", file=sys.stderr)
