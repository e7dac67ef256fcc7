"""Turn argv (and an optional YAML file) into argument dataclasses, gathering every bad value into one error.

Parsing has no side effects: nothing is imported, downloaded or created here. transformers' `HfArgumentParser`
is not used because argparse's typed flags stop at the first bad value, and it cannot tell a flag given on the
command line from its default (which `--config` YAML merging needs) nor read comma-separated lists.
"""

from __future__ import annotations

import argparse
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path

from tunestack.errors import ConfigError

TRUE_WORDS = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _base_type(tp):
    """(scalar type, is_list, optional) of a field annotation such as `list[str]` or `int | None`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        scalar, is_list, _ = _base_type(args[0])
        return scalar, is_list, True
    if origin is list:
        return typing.get_args(tp)[0], True, False
    return tp, False, False


def _convert(flag: str, raw, scalar, choices, spellings: dict | None = None) -> object:
    """Convert one raw value (string from argv or a YAML scalar) to `scalar`, or raise ValueError with a fix;
    `spellings` maps other projects' spellings of a value to ours."""
    if spellings and isinstance(raw, str):
        raw = spellings.get(raw.lower(), raw)
    if scalar is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in TRUE_WORDS:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"--{flag}: expected true or false, got {raw!r}")
    try:
        value = scalar(raw)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number"}.get(scalar, scalar.__name__)
        raise ValueError(f"--{flag}: expected {kind}, got {raw!r}") from None
    if choices and value not in choices:
        raise ValueError(f"--{flag}: expected one of {', '.join(map(str, choices))}, got {raw!r}")
    return value


def field_problems(instance) -> list[str]:
    """Range problems of a dataclass instance's values, one line per flag, from the fields' `check` metadata."""
    problems = []
    for f in fields(instance):
        check = f.metadata.get("check")
        value = getattr(instance, f.name)
        if check is not None and value is not None and not check[0](value):
            problems.append(f"--{f.name}: expected {check[1]}, got {value!r}")
    return problems


def _split_list(raw) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def build_parser(prog: str, description: str, groups: list[type]) -> argparse.ArgumentParser:
    """An argparse parser whose flags come from the dataclass fields; values stay raw strings until converted."""
    parser = argparse.ArgumentParser(prog=prog, usage=f"{prog} [flags]", description=description, allow_abbrev=False)
    seen: set[str] = set()
    for group in groups:
        section = parser.add_argument_group(group.__name__.removesuffix("Args").lower(), group.__doc__)
        hints = typing.get_type_hints(group)
        for f in fields(group):
            if f.name in seen:
                continue
            seen.add(f.name)
            scalar, is_list, _ = _base_type(hints[f.name])
            names = [f"--{n}" for name in (f.name, *f.metadata.get("aliases", ()))
                     for n in dict.fromkeys((name, name.replace("_", "-")))]
            default = f.default_factory() if f.default is MISSING else f.default
            help_text = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                help_text += f" {{{','.join(f.metadata['choices'])}}}"
            if default not in (None, [], False):
                help_text += f" (default: {','.join(default) if isinstance(default, list) else default})"
            if scalar is bool:
                section.add_argument(*names, dest=f.name, nargs="?", const="true", default=None, help=help_text)
            elif is_list:
                section.add_argument(*names, dest=f.name, nargs="+", action="extend", default=None, help=help_text)
            else:
                section.add_argument(*names, dest=f.name, default=None, help=help_text)
    return parser


def _load_yaml(path: str) -> dict:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError([f"--config: file {path} does not exist"])
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"--config {path}: not valid YAML ({exc})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"--config {path}: expected a mapping of flag names to values"])
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_groups(groups: list[type], argv: list[str], prog: str = "tunestack", description: str = "",
                 config: dict | None = None, source: str = "config", elsewhere: dict[str, str] | None = None,
                 presets: Callable[[dict], dict] | None = None) -> list:
    """Parse argv into one instance per dataclass in `groups`; raises ConfigError listing every problem.

    `config` supplies values as YAML would (argv wins); `source` names them in messages (the Python API passes its
    keyword arguments here with source="argument"). `elsewhere` maps flags these groups lack but other commands
    take to what to say instead of "unknown flag". `presets(given)` returns values for flags given nowhere (a
    built-in data set's recommended settings), which then win over the fields' defaults."""
    parser = build_parser(prog, description, groups)
    namespace, unknown = parser.parse_known_args(argv)
    raw = {}
    problems = []
    known = {f.name for g in groups for f in fields(g)}
    after_unknown_flag = False
    for token in unknown:
        if not token.startswith("--") and after_unknown_flag:
            continue  # the value of an unknown flag, already reported with it
        after_unknown_flag = token.startswith("--") and "=" not in token
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            problems.append(f"{token.split('=', 1)[0]}: " + (elsewhere or {}).get(name, f"unknown flag{hint}"))
        else:
            problems.append(f"{token!r}: unexpected argument (flags take the form --name value)")
    config_path = getattr(namespace, "config", None)
    if config_path:
        try:
            raw.update(_load_yaml(config_path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if config:
        raw.update(config)
    aliases = {a: f.name for g in groups for f in fields(g) for a in f.metadata.get("aliases", ())}
    raw = {aliases.get(key, key): value for key, value in raw.items()}  # torch_dtype: bfloat16 in a YAML file
    for key in list(raw):
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{config_path or source}: unknown {'key' if source == 'config' else source} {key!r}{hint}")
            raw.pop(key)
    raw.update({k: v for k, v in vars(namespace).items() if v is not None})
    for key, value in (presets(raw) if presets else {}).items():
        raw.setdefault(key, value)
    results = []
    for group in groups:
        hints = typing.get_type_hints(group)
        values = {}
        for f in fields(group):
            if f.name not in raw:
                continue
            scalar, is_list, optional = _base_type(hints[f.name])
            value = raw[f.name]
            try:
                if is_list:
                    values[f.name] = [_convert(f.name, v, scalar, f.metadata.get("choices"), f.metadata.get("values"))
                                      for v in _split_list(value)]
                elif optional and str(value).lower() in ("none", "null"):
                    values[f.name] = None
                else:
                    if isinstance(value, list):
                        value = value[0] if len(value) == 1 else " ".join(map(str, value))
                    values[f.name] = _convert(f.name, value, scalar, f.metadata.get("choices"),
                                              f.metadata.get("values"))
            except ValueError as exc:
                problems.append(str(exc))
        results.append(group(**values))
        problems.extend(field_problems(results[-1]))
    if problems:
        raise ConfigError(problems)
    return results


def to_argv(groups: list, always: tuple | list = ()) -> list[str]:
    """The flags that reproduce parsed `groups` (values that differ from the defaults, and the fields named in
    `always` whatever their value), for relaunching."""
    argv = []
    for group in groups:
        for f in fields(group):
            value = getattr(group, f.name)
            default = f.default_factory() if f.default is MISSING else f.default
            if (value == default and f.name not in always) or f.name == "config":
                continue
            if isinstance(value, list):
                argv += [f"--{f.name}", ",".join(map(str, value))]
            else:
                argv += [f"--{f.name}", "none" if value is None else str(value).lower() if isinstance(value, bool)
                         else str(value)]
    return argv
