"""`tunestack serve`: check the flags, build the engine and run the HTTP app under uvicorn."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tunestack.config import ModelArgs, ServeArgs
from tunestack.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")


def parse_adapters(specs: list[str], served_name: str, problems: list[str]) -> dict[str, str]:
    """NAME=PATH pairs; each bad one adds a line to `problems`."""
    adapters = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            problems.append(f"--adapter {spec}: expected NAME=PATH, e.g. --adapter math=runs/sft-math")
        elif not _NAME.fullmatch(name):
            problems.append(f"--adapter {spec}: the name may hold letters, digits and . _ : / -")
        elif name in adapters or name == served_name:
            problems.append(f"--adapter {spec}: the name {name} is already taken")
        elif not Path(path).exists():
            problems.append(f"--adapter {spec}: {path} does not exist")
        else:
            adapters[name] = path
    return adapters


def api_keys(args: ServeArgs, problems: list[str]) -> list[str]:
    """--api_key (or TUNESTACK_API_KEY) and the keys in --api_key_file; never printed or logged."""
    key = args.api_key or os.environ.get("TUNESTACK_API_KEY", "").strip()
    keys = [key] if key else []
    if args.api_key_file:
        path = Path(args.api_key_file)
        if not path.is_file():
            problems.append(f"--api_key_file: file {path} does not exist")
            return keys
        keys += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not keys:
            problems.append(f"--api_key_file: {path} holds no keys (one per line)")
    return keys


def run_serve(model_args: ModelArgs, args: ServeArgs) -> None:
    """Serve until SIGTERM or Ctrl-C (then drain, see serve/shutdown.py)."""
    server, engine = build_server(model_args, args)
    try:
        server.run()
    finally:
        engine.close()


def _accepted(processor) -> list[str]:
    """What media requests may carry: images, audio, videos."""
    from tunestack.media import MEDIA_NOUNS
    from tunestack.model.vision import media_kinds

    return [MEDIA_NOUNS[kind] for kind in media_kinds(processor)] if processor is not None else []


def build_server(model_args: ModelArgs, args: ServeArgs):
    """The uvicorn server over a loaded engine, ready to run: (server, engine). The caller closes the engine."""
    served_name = args.served_model_name or model_args.model
    problems: list[str] = []
    adapters = parse_adapters(args.adapter, served_name, problems)
    keys = api_keys(args, problems)
    if adapters:  # before the model loads: each must be an adapter of the base alone
        from tunestack.inference.loading import adapter_problems

        problems += adapter_problems(adapters)
    if problems:
        raise ConfigError(problems)
    from tunestack.inference.async_engine import require

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, module, "serve", "tunestack serve")
    import uvicorn

    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving
    from tunestack.serve.shutdown import DrainingServer

    options = EngineOptions(named_adapters=adapters, max_batch=args.max_concurrency, max_context=args.max_model_len,
                            allow_pickle=args.allow_pickle, decoding=args)
    parts = build_engine(model_args, args.backend, options)
    limits = ServeLimits(args.max_concurrency, args.max_queue, args.default_max_tokens, args.request_timeout or None,
                         args.max_request_bytes)
    from tunestack.data.tokenize import template_kwargs

    serving = Serving(parts.engine, parts.tokenizer, served_name, limits, template_kwargs(args.enable_thinking),
                      parts.processor)
    config = uvicorn.Config(build_app(serving, keys), host=args.host, port=args.port, log_level="warning",
                            timeout_graceful_shutdown=5)
    server = DrainingServer(config, serving, args.drain_timeout)
    print(f"serving {', '.join([served_name, *adapters])} on http://{args.host}:{args.port}/v1"
          + (" (API key required)" if keys else "") + "".join(
              f", {name} accepted" for name in _accepted(parts.processor)),
          file=sys.stderr, flush=True)
    return server, parts.engine
