"""`tunestack infer`: one prompt to stdout, a JSONL file of prompts, or a streaming multi-turn terminal chat."""

from __future__ import annotations

import sys
from pathlib import Path

from tunestack.config import InferArgs, ModelArgs
from tunestack.inference.chat_prompt import chat_prompt_ids
from tunestack.inference.detokenize import Detokenizer
from tunestack.inference.engine import Engine, SamplingParams


class Chat:
    """Text in, text out over an engine on token ids, with the tokenizer's chat template."""

    def __init__(self, engine: Engine, tokenizer, system: str | None = None, template_kwargs: dict | None = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.system = system
        self.template_kwargs = template_kwargs or {}

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        if self.system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system}] + messages
        return chat_prompt_ids(self.tokenizer, messages, self.template_kwargs)

    def answer(self, conversations: list[list[dict]], params: SamplingParams) -> list[str]:
        outputs = self.engine.generate([self.prompt_ids(c) for c in conversations], params)
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]

    def stream(self, messages: list[dict], params: SamplingParams):
        """Yield text pieces as tokens arrive, never splitting a multi-byte character; each token is decoded with a
        few tokens of context, not the whole reply again."""
        detokenizer = Detokenizer(self.tokenizer)
        for token in self.engine.stream(self.prompt_ids(messages), params):
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
    if problems:
        raise ConfigError(problems)


def run_infer(model_args: ModelArgs, args: InferArgs) -> None:
    validate_infer(args)
    if args.score:
        from tunestack.inference.score import run_score

        return run_score(model_args, args)
    from tunestack.inference.backends import EngineOptions, create_engine
    from tunestack.inference.prompt_file import answer_file, answered_rows, read_prompts

    prompts = read_prompts(args.input) if args.input else None
    done = answered_rows(args.output, prompts, args.input) if args.resume else 0  # checked before loading a model

    engine, tokenizer = create_engine(model_args, args.backend,
                                      EngineOptions(adapters=args.adapter, max_batch=args.batch_size,
                                                    allow_pickle=args.allow_pickle))
    from tunestack.data.tokenize import template_kwargs

    chat = Chat(engine, tokenizer, args.system, template_kwargs(args.enable_thinking))
    params = sampling(args)
    try:
        if args.prompt is not None:
            print(chat.answer([[{"role": "user", "content": args.prompt}]], params)[0], flush=True)
        elif prompts is not None:
            answer_file(chat, prompts, args, params, done)
        else:
            _interactive(chat, params)
    finally:
        engine.close()


def _interactive(chat: Chat, params: SamplingParams) -> None:
    print("chat: type a message; /clear starts over, /exit (or Ctrl-D) quits", file=sys.stderr)
    history: list[dict] = []
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            history = []
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
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

