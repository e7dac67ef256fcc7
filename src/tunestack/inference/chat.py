"""`tunestack infer`: one prompt to stdout, a JSONL file of prompts, or a streaming multi-turn terminal chat; with a
vision-language model, images too (--image for --prompt, /image PATH in the chat, image parts in --input rows), and
with an audio-language model audio (--audio, /audio PATH, audio parts), and videos (--video, /video PATH)."""

from __future__ import annotations

from pathlib import Path

from tunestack.config import InferArgs, ModelArgs
from tunestack.inference.chat_prompt import chat_prompt_ids, has_media, vision_prompt
from tunestack.inference.detokenize import Detokenizer
from tunestack.inference.engine import Engine, SamplingParams


class Chat:
    """Text (and images) in, text out over an engine on token ids, with the tokenizer's chat template, or for a
    vision-language model its processor's."""

    def __init__(self, engine: Engine, tokenizer, system: str | None = None, template_kwargs: dict | None = None,
                 processor=None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.system = system
        self.template_kwargs = template_kwargs or {}
        self.processor = processor

    def prompt(self, messages: list[dict]) -> tuple[list[int], dict | None]:
        """(prompt ids, the images' tensors or None) of a conversation, the system prompt put first."""
        from tunestack.errors import TunestackError

        if self.system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system}] + messages
        if self.processor is not None:  # an engine that expands placeholders itself takes the media as read
            return vision_prompt(self.processor, messages, self.template_kwargs,
                                 raw=getattr(self.engine, "expands_media", False))
        if has_media(messages):
            raise TunestackError("the conversation holds images or audio, and this model is a text-only model (no "
                                 "vision or audio encoder): use a multimodal model, or drop the media")
        return chat_prompt_ids(self.tokenizer, messages, self.template_kwargs), None

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.prompt(messages)[0]

    def answer(self, conversations: list[list[dict]], params: SamplingParams) -> list[str]:
        prompts = [self.prompt(c) for c in conversations]
        media = [m for _, m in prompts]
        outputs = self.engine.generate([ids for ids, _ in prompts], params, **({"media": media} if any(media) else {}))
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]

    def stream(self, messages: list[dict], params: SamplingParams):
        """Yield text pieces as tokens arrive, never splitting a multi-byte character; each token is decoded with a
        few tokens of context, not the whole reply again."""
        detokenizer = Detokenizer(self.tokenizer)
        ids, media = self.prompt(messages)
        for token in self.engine.stream(ids, params, **({"media": media} if media else {})):
            piece = detokenizer.add(token)
            if piece:
                yield piece
        tail = detokenizer.flush()
        if tail:
            yield tail


def sampling(args: InferArgs) -> SamplingParams:
    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)


def validate_infer(args: InferArgs) -> None:
    from tunestack.errors import ConfigError

    problems = []
    if args.output and not args.input:
        problems.append("--output: needs --input (the JSONL file of prompts to answer)")
    if args.input and not Path(args.input).is_file():
        problems.append(f"--input: file {args.input} does not exist")
    if args.prompt is not None and args.input:
        problems.append("--prompt and --input exclude each other")
    if args.resume and not (args.input and args.output):
        problems.append("--resume: needs --input and --output (the file of answers to continue)")
    if args.response is not None and not (args.score and args.prompt is not None):
        problems.append("--response: the answer --score rates; give it with --score and --prompt")
    if args.image and (args.prompt is None or args.score):
        problems.append("--image: the images of --prompt; give it with --prompt (in the terminal chat, attach an "
                        "image with /image PATH; in --input rows, as image parts of `messages`)")
    if args.image and args.backend not in ("pt", "vllm"):
        problems.append(f"--image: images are generated from with --backend pt or vllm, not {args.backend}")
    for flag, kind in (("--audio", "audio"), ("--video", "video")):
        if getattr(args, kind) and (args.prompt is None or args.score):
            problems.append(f"{flag}: the {kind} of --prompt; give it with --prompt (in the terminal chat, attach "
                            f"with /{kind} PATH; in --input rows, as {kind} parts of `messages`)")
        if getattr(args, kind) and args.backend not in ("pt", "vllm"):
            problems.append(f"{flag}: {kind} is generated from with --backend pt or vllm, not {args.backend}")
    if problems:
        raise ConfigError(problems)


def run_infer(model_args: ModelArgs, args: InferArgs) -> None:
    validate_infer(args)
    if args.score:
        from tunestack.inference.score import run_score

        return run_score(model_args, args)
    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.inference.prompt_file import answer_file, answered_rows, read_prompts

    prompts = read_prompts(args.input) if args.input else None
    done = answered_rows(args.output, prompts, args.input) if args.resume else 0  # checked before loading a model
    media = read_media(args.image, "image") + read_media(args.audio, "audio") + read_media(args.video, "video")
    images_from = " and ".join(f"--{kind}" for kind in ("image", "audio", "video") if getattr(args, kind))
    kinds = _media_kinds(prompts or [])
    if kinds:
        images_from = f"--input {args.input} (rows with {' and '.join(kinds)})"

    parts = build_engine(model_args, args.backend,
                         EngineOptions(adapters=args.adapter, max_batch=args.batch_size, allow_pickle=args.allow_pickle,
                                       images_from=images_from or None, decoding=args))
    engine = parts.engine
    from tunestack.data.tokenize import template_kwargs

    chat = Chat(engine, parts.tokenizer, args.system, template_kwargs(args.enable_thinking), parts.processor)
    params = sampling(args)
    try:
        if args.prompt is not None:
            content = [*media, {"type": "text", "text": args.prompt}]
            print(chat.answer([[{"role": "user", "content": content if media else args.prompt}]], params)[0],
                  flush=True)
        elif prompts is not None:
            answer_file(chat, prompts, args, params, done)
        else:
            from tunestack.inference.terminal_chat import chat_in_terminal

            chat_in_terminal(chat, params)
    finally:
        engine.close()


def _media_kinds(conversations: list[list[dict]]) -> list[str]:
    """"images", "audio", "videos": what the conversations' content parts carry."""
    from tunestack.media import media_kind

    from tunestack.media import MEDIA_NOUNS

    found = {media_kind(part) for messages in conversations for m in messages
             if isinstance(m.get("content"), list) for part in m["content"]}
    return [noun for kind, noun in MEDIA_NOUNS.items() if kind in found]


def read_media(references: list[str], kind: str, flag: str | None = None) -> list[dict]:
    """The --image (or --audio, --video: `kind`) files and URLs as content parts, images read and decoded before any
    model loads (a MediaError names `flag`, the --image flag by default); audio and video are checked for
    readability now, and decoded at the processor's rate (or sampling) once the model has loaded."""
    from tunestack.media import image_reference, load_audio, load_image, load_video

    parts = []
    for given in references:
        ref, where = image_reference(given), f"{flag or '--' + kind} {given}"
        if kind == "image":
            parts.append({"type": "image", "image": load_image(ref, where)})
            continue
        if kind == "audio":
            load_audio(ref, where)
        else:
            load_video(ref, where, max_frames=2)
        parts.append({"type": kind, kind: ref})
    return parts
