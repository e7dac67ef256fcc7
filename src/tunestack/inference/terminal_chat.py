"""The terminal chat of `tunestack infer`: a multi-turn conversation typed at a prompt, each answer streamed as it
is generated; /image PATH attaches a picture to the next message when the model can see, /audio PATH a clip when
it can hear, /video PATH a video."""

from __future__ import annotations

import sys

from tunestack.inference.chat import Chat
from tunestack.inference.engine import SamplingParams


def chat_in_terminal(chat: Chat, params: SamplingParams) -> None:
    """Read messages from the terminal and stream each answer; the conversation so far goes with every message.
    Commands: /image PATH (a vision-language model), /audio PATH (an audio-language model), /video PATH, /clear,
    /exit."""
    from tunestack.model.vision import media_kinds

    takes = media_kinds(chat.processor) if chat.processor is not None else []
    names = {"image": "an image", "audio": "a clip", "video": "a video"}
    print("chat: type a message; " + "".join(f"/{kind} PATH attaches {names[kind]} to your next message, "
                                              for kind in takes)
          + "/clear starts over, /exit (or Ctrl-D) quits", file=sys.stderr)
    history: list[dict] = []
    attached: list = []  # content parts attached with /image, /audio or /video, sent with the next message
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
        command = next((kind for kind in ("image", "audio", "video")
                        if text == f"/{kind}" or text.startswith(f"/{kind} ")), None)
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


def _attach(kind: str, path: str, attached: list, takes: list[str]) -> None:
    """/image, /audio or /video PATH: read the file now (a bad one is reported at once) and keep it for the next
    message."""
    from tunestack.errors import TunestackError
    from tunestack.inference.chat import read_media
    from tunestack.media import MEDIA_NOUNS

    if kind not in takes:
        print(f"/{kind}: this model cannot take {MEDIA_NOUNS[kind]}", file=sys.stderr)
    elif not path:
        example = {"image": "cat.png", "audio": "clip.wav", "video": "clip.mp4"}[kind]
        print(f"/{kind}: give the file's path or URL, e.g. /{kind} {example}", file=sys.stderr)
    else:
        try:  # audio and video are decoded again, as the processor says, when sent
            attached += read_media([path], kind, f"/{kind}")
        except TunestackError as exc:
            print(exc, file=sys.stderr)
            return
        count = sum(part["type"] == kind for part in attached)
        print(f"({kind} {count} attached to your next message)", file=sys.stderr)
