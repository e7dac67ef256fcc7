"""Which files the web UI may read: only those under `--allowed_paths` (default: the working folder and the runs
folder), checked after resolving `..` and symbolic links."""

from __future__ import annotations

from pathlib import Path

from tunestack.errors import TunestackError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
SKIPPED = ("checkpoints", "tensorboard", "node_modules", "__pycache__", "site-packages")
"""Folders the pickers never list files from."""


class PathNotAllowedError(TunestackError):
    """A path typed into the UI that is missing or lies outside the allowed folders."""


def resolve_allowed(paths: list[str | Path]) -> list[Path]:
    return list(dict.fromkeys(Path(p).expanduser().resolve() for p in paths))


def check_path(text: str | Path, allowed: list[Path], must_exist: bool = True, what: str = "path") -> Path:
    """The resolved path `text`, relative paths taken from the working folder; raises PathNotAllowedError when it
    lies outside every folder in `allowed` or (with `must_exist`) does not exist."""
    raw = str(text).strip()
    if not raw:
        raise PathNotAllowedError(f"{what}: empty; type a path")
    path = Path(raw).expanduser().resolve()
    if not any(path == root or path.is_relative_to(root) for root in allowed):
        roots = ", ".join(str(root) for root in allowed)
        raise PathNotAllowedError(f"{what} {raw}: outside the folders this UI may read ({roots}); start "
                                  "`tunestack ui --allowed_paths` with a folder that holds it")
    if must_exist and not path.exists():
        raise PathNotAllowedError(f"{what} {raw}: no such file or folder")
    return path


def is_path_like(text: str) -> bool:
    """Whether a model or dataset field holds a path (rather than an alias, built-in or hub id such as org/name)."""
    raw = text.strip()
    return (raw.startswith(("/", "./", "../", "~", ".\\")) or raw.lower().endswith(DATA_SUFFIXES + (".gguf",))
            or Path(raw).expanduser().exists())


def find_files(roots: list[Path], suffixes: tuple[str, ...] = DATA_SUFFIXES, limit: int = 200,
               max_depth: int = 3) -> list[str]:
    """Files with `suffixes` under `roots` (hidden folders and checkpoints skipped), for the pickers' choices;
    shown relative to the working folder where they lie under it."""
    found: list[str] = []
    cwd = Path.cwd().resolve()

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit or entry.name.startswith(".") or entry.name in SKIPPED \
                    or entry.name.endswith(".egg-info"):
                continue
            if entry.is_dir() and depth < max_depth:
                walk(entry, depth + 1)
            elif entry.is_file() and entry.suffix.lower() in suffixes:
                found.append(_shown(entry, cwd))

    for root in roots:
        if root.is_dir():
            walk(root, 0)
    return list(dict.fromkeys(found))


def _shown(path: Path, cwd: Path) -> str:
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
