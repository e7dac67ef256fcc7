"""`tunestack wizard`: questions in the terminal that build a training command and run it, then chat with, evaluate,
export or serve the result. Every step runs and prints a `tunestack ...` command, so all of it can be repeated from a
shell. `--yes` takes every default: train, evaluate, export (and serve with --serve) unattended.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tunestack.config import WizardArgs
from tunestack.ui import foreground
from tunestack.ui.menu import BACK, Option, Terminal
from tunestack.ui.wizard_questions import SKIP, Answers, questions


def run_wizard(args: WizardArgs) -> int:
    try:
        return Wizard(args).run()
    except EOFError:  # answers piped in ran out
        print("\nwizard: no more input", file=sys.stderr)
        return 1


class Wizard:
    def __init__(self, args: WizardArgs):
        self.args = args
        self.term = Terminal(auto=args.yes)
        self.answers = Answers(args.model, args.method, args.tuner, args.dataset, args.model_name, args.model_author,
                               args.output_dir or time.strftime("runs/wizard-%Y%m%d-%H%M%S"))
        if args.max_steps > 0:
            self.answers.settings["max_steps"] = str(args.max_steps)

    def run(self) -> int:
        steps = [*questions(self.answers, self.term), self.confirm]
        at = 0
        while True:
            if not _walk(steps, at):
                self.term.say("bye")
                return 0
            if self._run(self.answers.train_command(), events=self.answers.run, show=False) == 0:
                break
            if self.term.auto:
                return 1
            at = len(steps) - 1  # back to the command: try again, or change an answer with q
        return self.finish_unattended() if self.term.auto else self.after_training()

    def confirm(self):
        self.term.say(f"\ncommand:\n  {foreground.shown(self.answers.train_command())}")
        self.term.say(f"memory estimate: {self.estimate()}")
        return self.term.choose("Start training?", [Option("start training", True),
                                                     Option("back: change the answers", BACK)])

    def estimate(self) -> str:
        if self.answers.method not in ("sft", "pt"):
            return f"`tunestack estimate` plans sft and pt runs, not {self.answers.method}"
        code, out = foreground.run(["tunestack", "estimate", *self.answers.flags(), "--json"], show=False)
        try:
            return _estimate_summary(json.loads(out)) if code == 0 else "not available (the error is above)"
        except (ValueError, KeyError, TypeError):
            return "not available (unreadable output)"

    def after_training(self) -> int:
        options = [Option("chat: answer one prompt", self.chat_once), Option("chat in the terminal", self.chat),
                   Option("evaluate", self.evaluate), Option("export a merged model", self.export),
                   Option("serve an OpenAI-compatible API", self.serve), Option("quit", None)]
        while True:
            action = self.term.choose(f"\nWhat next with {self.answers.run}?", options)
            if action is None or action is BACK:
                self.term.say("bye")
                return 0
            action()

    def finish_unattended(self) -> int:
        for action in (self.evaluate, self.export) + ((self.serve,) if self.args.serve else ()):
            if action() != 0:
                return 1
        return 0

    def chat_once(self) -> int:
        prompt = self.term.ask("prompt")
        return 0 if prompt is BACK else self._run([*self._infer(), "--prompt", prompt])

    def chat(self) -> int:
        return foreground.attached(self._infer())

    def evaluate(self) -> int:
        default = ",".join(self.args.tasks) or ("self-cognition" if self.answers.self_cognition() else "arith")
        tasks = self.term.ask("evaluation tasks", default)
        if tasks is BACK:
            return 0
        argv = ["tunestack", "eval", "--model", self.answers.run, "--tasks", tasks, "--limit", str(self.args.limit)]
        if "self-cognition" in tasks:
            argv += ["--model_name", self.answers.model_name, "--model_author", self.answers.model_author]
        out = str(Path(self.answers.folder) / "eval")
        return self._run([*argv, "--output_dir", out], events=out)

    def export(self) -> int:
        out = self.term.ask("export folder", str(Path(self.answers.folder) / "export"))
        if out is BACK:
            return 0
        return self._run(["tunestack", "export", "--model", self.answers.run, "--output_dir", out], events=out)

    def serve(self) -> int:
        port = self.term.ask("port", str(self.args.port))
        if port is BACK:
            return 0
        self.term.say(f"serving on http://127.0.0.1:{port}/v1 until Ctrl-C")
        return foreground.attached(["tunestack", "serve", "--model", self.answers.run, "--port", port])

    def _infer(self) -> list[str]:
        tokens = [] if self.args.max_new_tokens is None else ["--max_new_tokens", str(self.args.max_new_tokens)]
        return ["tunestack", "infer", "--model", self.answers.run, *tokens]

    def _run(self, argv: list[str], events: str | None = None, show: bool = True) -> int:
        return foreground.run(argv, events, log_dir=self.answers.run, show=show)[0]


def _walk(steps: list, at: int) -> bool:
    """Ask from question `at` on; q goes back one question. False when q leaves the first question."""
    forward = True
    while 0 <= at < len(steps):
        answer = steps[at]()
        forward = answer is not BACK and (answer is not SKIP or forward)
        at += 1 if forward else -1
    return at == len(steps)


def _estimate_summary(estimate: dict) -> str:
    """One line from `tunestack estimate --json`: memory needed of memory available, and the training time."""
    def gib(n: float) -> str:
        return f"{n / 2**30:.2f} GiB"

    fits = "fits" if estimate["fits"] else "does not fit"
    device = estimate["device"]["name"]
    summary = f"{gib(estimate['needed_bytes'])} of {gib(estimate['budget_bytes'])} on {device}: {fits}"
    seconds = (estimate.get("time") or {}).get("seconds")
    if seconds is not None:
        summary += f"; training about {seconds / 60:.1f} min" if seconds >= 60 else f"; training about {seconds:.0f} s"
    if estimate.get("recommendation"):
        summary += f"\n  a plan that fits: {estimate['recommendation']['command']}"
    return summary
