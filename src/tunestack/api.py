"""The Python API: every command as a function taking the CLI's flags as keyword arguments, returning typed results.

    import tunestack
    run = tunestack.sft(model="smollm2-135m-instruct", dataset="self-cognition", model_name="Nova",
                        model_author="Acme", output_dir="runs/nova")
    print(run.final_loss, run.chat("Who are you?"))

Keyword arguments are parsed by the same dataclasses as the command line (`tunestack sft --help` lists them), so
a bad value raises the same ConfigError, listing every problem. Where it is natural, Python objects stand in for
names: a `datasets.Dataset` or a list of dicts as `dataset`, loaded `model` and `tokenizer` objects, Trainer
`callbacks`, and callables in `reward_funcs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunestack.results import EvalReport, Export, Run

__all__ = ["sft", "pt", "dpo", "kto", "orpo", "simpo", "cpo", "grpo", "rloo", "rm", "ppo", "train", "chat",
           "export", "evaluate", "estimate", "serve", "Server", "Run", "Export", "EvalReport"]


def train(method: str, **kwargs: Any) -> Run:
    """Train with any training command by name (`train("dpo", ...)` is `dpo(...)`)."""
    from tunestack.cli.commands import COMMANDS, training_presets
    from tunestack.config.parse import parse_groups

    command = COMMANDS.get(method)
    if command is None or not command.training:
        raise ValueError(f"{method!r} is not a training command; expected one of "
                         f"{', '.join(n for n, c in COMMANDS.items() if c.training)}")
    objects = _ObjectArgs.take(kwargs)
    groups = parse_groups(command.groups, [], prog=f"tunestack.{method}()", config=kwargs, source="argument",
                          presets=training_presets(method))
    model, data, tuner, train_args, parallel, *method_args = groups
    model, data, train_args = objects.apply(model, data, train_args, method)
    return train_parsed(method, model, data, tuner, train_args, parallel, *method_args, callbacks=objects.callbacks)


def train_parsed(method: str, model, data, tuner, train_args, parallel, *method_args, callbacks=None) -> Run:
    """Train from parsed argument groups: what the `tunestack METHOD` commands and `train()` both call."""
    from importlib import import_module

    from tunestack.train.lifecycle import run_training

    run = run_training(getattr(import_module(f"tunestack.train.{method}"), method.upper()), model, data, tuner,
                       train_args, method_args[0] if method_args else None, parallel=parallel, callbacks=callbacks)
    return Run(run.path)


def sft(**kwargs: Any) -> Run:
    """Supervised fine-tuning on chat / instruction data (`tunestack sft`)."""
    return train("sft", **kwargs)


def pt(**kwargs: Any) -> Run:
    """Continued pre-training on raw text (`tunestack pt`)."""
    return train("pt", **kwargs)


def dpo(**kwargs: Any) -> Run:
    """Direct preference optimisation on chosen/rejected pairs (`tunestack dpo`)."""
    return train("dpo", **kwargs)


def kto(**kwargs: Any) -> Run:
    """Kahneman-Tversky optimisation on labelled completions (`tunestack kto`)."""
    return train("kto", **kwargs)


def orpo(**kwargs: Any) -> Run:
    """Odds-ratio preference optimisation (`tunestack orpo`)."""
    return train("orpo", **kwargs)


def simpo(**kwargs: Any) -> Run:
    """Simple preference optimisation (`tunestack simpo`)."""
    return train("simpo", **kwargs)


def cpo(**kwargs: Any) -> Run:
    """Contrastive preference optimisation (`tunestack cpo`)."""
    return train("cpo", **kwargs)


def grpo(**kwargs: Any) -> Run:
    """Group relative policy optimisation with `reward_funcs` (names, PATH.py:FUNCTION, reward-model runs, or
    Python callables taking `(prompts, completions, **columns)` and returning one float per completion)."""
    return train("grpo", **kwargs)


def rloo(**kwargs: Any) -> Run:
    """REINFORCE leave-one-out with `reward_funcs`, as `grpo` (`tunestack rloo`)."""
    return train("rloo", **kwargs)


def rm(**kwargs: Any) -> Run:
    """A reward model trained on preference pairs (`tunestack rm`)."""
    return train("rm", **kwargs)


def ppo(**kwargs: Any) -> Run:
    """Proximal policy optimisation against a reward model run (`reward_model=`, as `tunestack ppo`)."""
    return train("ppo", **kwargs)


def chat(model: str | Path | Run, prompt: str | list[dict], **kwargs: Any) -> str:
    """One answer from `model` (a name, run directory or Run) to `prompt` (text, or a list of messages, whose parts
    may hold images, audio or videos), with `tunestack infer`'s flags (`max_new_tokens`, `temperature`, `system`,
    and `image=`, `audio=`, `video=` files for a text prompt, ...)."""
    from tunestack.config import InferArgs, ModelArgs
    from tunestack.config.parse import parse_groups
    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.inference.chat import Chat, read_media, sampling

    model_args, infer = parse_groups([ModelArgs, InferArgs], [], prog="tunestack.chat()", source="argument",
                                     config={**kwargs, "model": str(getattr(model, "path", model))})
    media = [part for kind in ("image", "audio", "video") for part in read_media(getattr(infer, kind), kind)]
    flags = " and ".join(f"{kind}=" for kind in ("image", "audio", "video") if getattr(infer, kind))
    options = EngineOptions(adapters=infer.adapter, max_batch=1, allow_pickle=infer.allow_pickle,
                            images_from=flags or None)
    parts = build_engine(model_args, infer.backend, options)
    try:
        if isinstance(prompt, str):
            prompt = [*media, {"type": "text", "text": prompt}] if media else prompt
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = prompt
        chat = Chat(parts.engine, parts.tokenizer, infer.system, processor=parts.processor)
        return chat.answer([messages], sampling(infer))[0]
    finally:
        parts.engine.close()


def export(model: str | Path | Run, output_dir: str | Path, **kwargs: Any) -> Export:
    """Merge, quantize or convert (`tunestack export`); returns the export with its sizes and perplexities."""
    from tunestack.config import ExportArgs, ModelArgs
    from tunestack.config.parse import parse_groups
    from tunestack.export.merge import run_export

    model_args, export_args = parse_groups(
        [ModelArgs, ExportArgs], [], prog="tunestack.export()", source="argument",
        config={**kwargs, "model": str(getattr(model, "path", model)), "output_dir": str(output_dir)})
    return Export(run_export(model_args, export_args))


def evaluate(model: str | Path | Run | None = None, tasks: str | list[str] | None = None,
             **kwargs: Any) -> EvalReport:
    """Benchmarks and your own tasks on a model, run, or a server (`url=`), as `tunestack eval`."""
    from tunestack.config import EvalArgs, ModelArgs
    from tunestack.config.parse import parse_groups
    from tunestack.eval.command import run_eval

    config = {**kwargs, "tasks": tasks or []}
    if model is not None:
        config["model"] = str(getattr(model, "path", model))
    model_args, eval_args = parse_groups([ModelArgs, EvalArgs], [], prog="tunestack.evaluate()", source="argument",
                                         config=config)
    import time

    out = Path(eval_args.output_dir or f"evals/{time.strftime('%Y%m%d-%H%M%S')}")
    run_eval(model_args, eval_args, out)
    return EvalReport(out)


def estimate(**kwargs: Any) -> dict[str, Any]:
    """Memory and time of an sft run before it starts (`tunestack estimate`, as its --json object: `peak_bytes`,
    the memory terms per device, tokens per step, the time, and a recommended plan when the run does not fit)."""
    from tunestack.cli.commands import COMMANDS, training_presets
    from tunestack.config.parse import parse_groups
    from tunestack.plan.estimate import build_estimate
    from tunestack.plan.report import as_json

    groups = parse_groups(COMMANDS["estimate"].groups, [], prog="tunestack.estimate()", config=kwargs,
                          source="argument", presets=training_presets("estimate"))
    return as_json(build_estimate(*groups))


@dataclass
class Server:
    """A server started by `serve(..., background=True)`: its base URL (for the `openai` client) and a stop handle."""

    url: str
    _server: Any
    _engine: Any
    _thread: Any

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting requests, let running ones finish, and free the model."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._engine.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(model: str | Path | Run, background: bool = False, **kwargs: Any) -> Server | None:
    """The OpenAI-compatible server (`tunestack serve`): blocking, or started in a background thread, returning a
    Server with its `url` and `stop()` (also a context manager)."""
    import threading
    import time

    from tunestack.config import ModelArgs, ServeArgs
    from tunestack.config.parse import parse_groups
    from tunestack.serve.server import build_server, run_serve

    model_args, serve_args = parse_groups([ModelArgs, ServeArgs], [], prog="tunestack.serve()", source="argument",
                                          config={**kwargs, "model": str(getattr(model, "path", model))})
    if not background:
        run_serve(model_args, serve_args)
        return None
    server, engine = build_server(model_args, serve_args)
    thread = threading.Thread(target=server.run, name="tunestack-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        engine.close()
        raise RuntimeError(f"the server did not start on {serve_args.host}:{serve_args.port} (is the port taken?)")
    port = server.servers[0].sockets[0].getsockname()[1] if serve_args.port == 0 else serve_args.port
    return Server(f"http://{serve_args.host}:{port}/v1", server, engine, thread)


@dataclass
class _ObjectArgs:
    """Arguments given as Python objects rather than names, taken out before the flags are parsed."""

    dataset: Any = None
    model: Any = None
    tokenizer: Any = None
    callbacks: list | None = None

    @classmethod
    def take(cls, kwargs: dict) -> _ObjectArgs:
        for key, value in kwargs.items():  # a Run stands for its directory (model=, ref_model=, reward_model=, ...)
            if isinstance(value, Run):
                kwargs[key] = str(value.path)
        found = cls(callbacks=list(kwargs.pop("callbacks", None) or []) or None)
        if "dataset" in kwargs and not isinstance(kwargs["dataset"], (str, Path)) and not _names(kwargs["dataset"]):
            found.dataset = kwargs.pop("dataset")
        if "model" in kwargs and not isinstance(kwargs["model"], (str, Path)):
            found.model = kwargs.pop("model")
            found.tokenizer = kwargs.pop("tokenizer", None)
            if found.tokenizer is None:
                raise ValueError("model= is a loaded model: pass its tokenizer= too")
        elif "tokenizer" in kwargs:
            raise ValueError("tokenizer= goes with a loaded model= object; with a model name, the model's own is used")
        for key in ("model", "dataset"):
            if isinstance(kwargs.get(key), Path):
                kwargs[key] = str(kwargs[key])
        funcs = kwargs.get("reward_funcs")
        if funcs is not None:  # function objects stand in the list under names the reward loader resolves
            from tunestack.train.reward_funcs import register_object

            funcs = funcs if isinstance(funcs, (list, tuple)) else [funcs]
            kwargs["reward_funcs"] = [register_object(f) if callable(f) else str(f) for f in funcs]
        return found

    def apply(self, model, data, train_args, method: str):
        """Write object arguments where the lifecycle reads names: data as JSONL, a model as a folder, both in the
        run directory, so that the run still describes itself."""
        import dataclasses
        import time

        if self.dataset is None and self.model is None:
            return model, data, train_args
        if train_args.output_dir is None:
            train_args = dataclasses.replace(train_args, output_dir=f"runs/{method}-{time.strftime('%Y%m%d-%H%M%S')}")
        inputs = Path(train_args.output_dir).with_name(Path(train_args.output_dir).name + ".inputs")
        if self.dataset is not None:
            rows = self.dataset.to_list() if hasattr(self.dataset, "to_list") else list(self.dataset)
            if not rows or not all(isinstance(r, dict) for r in rows):
                raise ValueError("dataset= must be a file or name, a datasets.Dataset, or a non-empty list of dicts")
            inputs.mkdir(parents=True, exist_ok=True)
            path = inputs / "train.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
            data = dataclasses.replace(data, dataset=[str(path)])
        if self.model is not None:
            folder = inputs / "model"
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            model = dataclasses.replace(model, model=str(folder))
        return model, data, train_args


def _names(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, Path)) for v in value)
