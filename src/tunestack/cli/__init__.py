"""The `tunestack` command: a table of subcommands, each parsing its argument groups and calling one function.

Nothing heavy is imported here: `tunestack --help` must not import torch.
"""

from __future__ import annotations

import sys

from tunestack.cli.commands import COMMANDS


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: tunestack COMMAND [flags]   (tunestack COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from tunestack import __version__

        print(f"tunestack {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"tunestack: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    try:
        return COMMANDS[name].run(rest) or 0
    except KeyboardInterrupt as interrupt:  # Ctrl-C: 130; a run stopped by SIGTERM says its own code (143)
        print(f"tunestack: {str(interrupt) or 'interrupted'}", file=sys.stderr)
        return getattr(interrupt, "exit_code", 130)
    except Exception as exc:
        from tunestack.errors import ConfigError, TunestackError

        if debug or not isinstance(exc, TunestackError):
            if not isinstance(exc, TunestackError):
                print(f"tunestack {name}: internal error; rerun with --debug for the traceback", file=sys.stderr)
            if debug:
                raise
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, ConfigError) and len(exc.problems) > 1:
            print(f"tunestack {name}: {len(exc.problems)} problems:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"tunestack {name}: error: {exc}", file=sys.stderr)
        return 2
