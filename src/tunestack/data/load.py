"""Turn dataset names (files, folders, built-ins, registered names, hub ids) into canonical train and val splits."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING

from tunestack.config.args import DataArgs
from tunestack.data.builtin import BUILTIN_DATASETS, builtin_rows
from tunestack.data.formats import TASKS, canonical_rows, features_for, uses_media, uses_tools
from tunestack.data.hub_datasets import hub_rows
from tunestack.data.readers import read_rows
from tunestack.data.registry import read_dataset_info
from tunestack.data.sources import Part, Source, resolve
from tunestack.errors import DataError

if TYPE_CHECKING:
    import datasets


@dataclass
class DataSplits:
    """The training rows, the validation rows (if any) and a report of where every row came from."""

    train: datasets.Dataset | datasets.IterableDataset
    val: datasets.Dataset | None
    report: dict  # per source: name, files (each with its detected format and rows), rows read and sampled; totals


@dataclass(frozen=True)
class _Options:
    """What reading a part needs besides the part; plain and picklable, so streaming workers get their own copy."""

    task: str
    system: str | None
    model_name: str | None
    model_author: str | None
    streaming: bool = False
    on_bad_media: str = "fail"


def load_datasets(args: DataArgs, task: str = "sft", *, seed: int = 42) -> DataSplits:
    """Read, validate and convert every dataset in `args`; every bad row raises DataError before a model loads.

    Validation rows come from --val_dataset, else from registered `val` files, else a seeded --val_ratio split.
    """
    _check_args(args, task)
    registry = read_dataset_info(args.dataset_info) if args.dataset_info else {}
    sources = [resolve(spec, registry, task) for spec in args.dataset]
    val_sources, val_from = _val_sources(args, sources, registry, task)
    opts = _Options(task, args.system, args.model_name, args.model_author, args.streaming, args.on_bad_media)
    val_rows, val_report = _read_all(val_sources, replace(opts, streaming=False), seed)
    if args.streaming:
        train, train_report = _stream(sources, opts)
    else:
        rows, train_report = _read_all(sources, opts, seed)
        if val_from is None and args.val_ratio > 0:
            rows, val_rows = _split(rows, args.val_ratio, seed)
            val_from = "val_ratio"
        train = _dataset(rows, task)
    report = {
        "task": task,
        "streaming": args.streaming,
        "train": train_report,
        "val": val_report,
        "val_from": val_from,
        "train_rows": None if args.streaming else len(train),
        "val_rows": len(val_rows),
    }
    return DataSplits(train=train, val=_dataset(val_rows, task) if val_rows else None, report=report)


def _check_args(args: DataArgs, task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task is {task!r}; expected one of {', '.join(TASKS)}")
    if not args.dataset:
        builtins = ", ".join(BUILTIN_DATASETS)
        raise DataError(f"no dataset given: pass --dataset FILE, a folder or a built-in ({builtins})")
    if not 0 <= args.val_ratio < 1:
        raise DataError(f"--val_ratio is {args.val_ratio}; expected a fraction in [0, 1), e.g. 0.05")
    if args.streaming and args.val_ratio > 0 and not args.val_dataset:
        raise DataError(
            f"--streaming and --val_ratio {args.val_ratio} cannot be combined (a streamed dataset has no known size "
            "to split); pass --val_dataset FILE instead, or drop --streaming"
        )


def _val_sources(args: DataArgs, sources: list[Source], registry: dict, task: str) -> tuple[list, str | None]:
    if args.val_dataset:
        return [resolve(spec, registry, task) for spec in args.val_dataset], "val_dataset"
    declared = [Source(f"{s.spec} (val)", s.val) for s in sources if s.val]
    return declared, "dataset_info" if declared else None


def _located_rows(part: Part, opts: _Options):
    if part.kind == "file":
        return read_rows(Path(part.target))
    if part.kind == "builtin":
        return builtin_rows(part.target, opts.task, opts.model_name, opts.model_author)
    return hub_rows(part.target, part.subset, part.split, opts.streaming)


def _part_rows(part: Part, opts: _Options, stats: dict):
    rows = _located_rows(part, opts)
    if part.preprocess is not None:
        rows = part.preprocess(rows)
    base_dir = Path(part.target).parent if part.kind == "file" else None
    return canonical_rows(rows, opts.task, opts.system, part.columns, stats, base_dir=base_dir,
                          on_bad_media=opts.on_bad_media)


def _read_all(sources: list[Source], opts: _Options, seed: int) -> tuple[list[dict], list[dict]]:
    """Every row of every source, converted and validated, with one report entry per source."""
    rows, report = [], []
    for source in sources:
        files, source_rows = [], []
        for part in source.parts:
            stats = {"file": _label(part), "format": None, "rows": 0}
            source_rows += list(_part_rows(part, opts, stats))
            if not stats["rows"]:
                raise DataError(f"{stats['file']}: empty dataset (no rows)")
            if stats.get("skipped_media") and stats["skipped_media"] == stats["rows"]:
                raise DataError(f"{stats['file']}: no rows left: every row has an image that cannot be read "
                                f"({stats['media_problem']})")
            files.append(stats)
        read = len(source_rows)
        if source.count:
            source_rows = random.Random(seed).sample(source_rows, min(source.count, read))
        rows += source_rows
        report.append({"name": source.spec, "files": files, "rows_read": read, "rows_sampled": len(source_rows)})
    return rows, report


def _stream(sources: list[Source], opts: _Options):
    """A lazy dataset over every source; the first row of each part is checked now, later rows when reached."""
    from datasets import IterableDataset

    report, tools = [], False
    for source in sources:
        files = []
        for part in source.parts:
            stats = {"file": _label(part), "format": None, "rows": 0}
            first = next(_part_rows(part, opts, stats), None)
            if first is None:
                raise DataError(f"{stats['file']}: empty dataset (no rows)")
            if uses_media(first):
                raise DataError(f"{stats['file']}: --streaming does not read rows with images or audio yet; drop "
                                "--streaming")
            tools = tools or (opts.task == "sft" and uses_tools(first))
            files.append({"file": stats["file"], "format": stats["format"], "rows": None})
        report.append({"name": source.spec, "files": files, "rows_read": None, "rows_sampled": source.count})
    kwargs = {"sources": sources, "opts": opts, "tools": tools}
    features = features_for(opts.task, tools=tools)
    return IterableDataset.from_generator(_stream_rows, features=features, gen_kwargs=kwargs), report


def _stream_rows(sources: list[Source], opts: _Options, tools: bool = False):
    """In streaming mode `NAME#N` takes the first N rows of the source. The features hold tools when a file's first
    row has them (`tools`); a later row with tools otherwise would lose them, and stops the run instead."""
    for source in sources:
        rows = islice(chain.from_iterable(_part_rows(part, opts, {}) for part in source.parts), source.count)
        for row in rows:
            if tools:
                row = {"tools": None, **row}
            elif opts.task == "sft" and uses_tools(row):
                raise DataError(f"{source.spec}: with --streaming, tools or tool calls must appear in the first row "
                                "of a file (the streamed dataset takes its columns from those rows); put such a row "
                                "first, or drop --streaming")
            yield row


def _split(rows: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out a seeded `ratio` of the rows (at least one); the rest keep their order."""
    n_val = max(1, round(len(rows) * ratio))
    if n_val >= len(rows):
        raise DataError(
            f"--val_ratio {ratio} leaves no training rows out of {len(rows)}; lower it or pass --val_dataset"
        )
    held = set(random.Random(seed).sample(range(len(rows)), n_val))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _label(part: Part) -> str:
    if part.kind == "hub":
        return f"{part.target}{':' + part.subset if part.subset else ''}@{part.split}"
    return part.target


def _dataset(rows: list[dict], task: str):
    from datasets import Dataset

    if task == "sft" and any(uses_media(row) for row in rows):
        if any(uses_tools(row) for row in rows):
            raise DataError("rows with images or audio and rows with tools cannot be trained on together yet; train "
                            "on them in two runs")
        rows = [{"images": [], "audios": [], "videos": [], "objects": None, **row} for row in rows]
        return Dataset.from_list(rows, features=features_for(task, media=True))
    if task == "sft" and any(uses_tools(row) for row in rows):
        rows = [{"tools": None, **row} for row in rows]
        return Dataset.from_list(rows, features=features_for(task, tools=True))
    return Dataset.from_list(rows, features=features_for(task))
