"""What each model alias resolves to right now, without downloading or converting anything (`tunestack models`)."""

from __future__ import annotations

from tunestack.hub.fetch import MODEL_FILES, cached_snapshot
from tunestack.hub.gguf import converted_dir, embedded_gguf_path, is_converted
from tunestack.hub.registry import ALIASES, ModelAlias
from tunestack.hub.vision_default import vision_whereabouts

_COLUMNS = (("alias", "alias"), ("params", "size"), ("licence", "licence"), ("gated", "gated"),
            ("hf_id", "Hugging Face id"))
"""The table's columns on an alias's first line: row key and heading. The ModelScope id goes on the second line."""


def list_models() -> list[dict]:
    """One row per alias: `alias`, `family`, `params`, `licence`, `gated`, `hf_id`, `modelscope_id` (None where no
    id is known), `template`, `description`, and where it would load from now: `kind` (embedded or hub), `path`
    (None until local) and `resolves_to` (in words)."""
    return [
        {
            "alias": name,
            "family": alias.family,
            "params": alias.params,
            "licence": alias.licence,
            "gated": alias.gated,
            "hf_id": alias.hf,
            "modelscope_id": alias.modelscope,
            "template": alias.template,
            "description": alias.description,
            **_whereabouts(name, alias),
        }
        for name, alias in ALIASES.items()
    ]


def models_table(rows: list[dict]) -> str:
    """The rows of `list_models` as text within 100 columns (local paths aside): a heading per family; per alias
    one line with its size, licence, whether it is gated and its Hugging Face id, and one with its ModelScope id
    (`-` where none is known) and, once the model is local, where it loads from."""
    cells = [{**{key: str(row[key]) for key, _ in _COLUMNS}, "gated": "yes" if row["gated"] else "no"} for row in rows]
    widths = [max([len(heading)] + [len(c[key]) for c in cells]) for key, heading in _COLUMNS]
    lines = [_aligned([heading for _, heading in _COLUMNS], widths)]
    for family in dict.fromkeys(row["family"] for row in rows):
        lines.append(f"\n{family}")
        for row, cell in zip(rows, cells):
            if row["family"] == family:
                lines.append(_aligned([cell[key] for key, _ in _COLUMNS], widths))
                lines.append(f"    modelscope: {row['modelscope_id'] or '-'}")
                if row["path"] is not None or row["kind"] == "embedded":
                    lines.append(f"    now: {row['resolves_to']}")
    missing = [row["alias"] for row in rows if row["modelscope_id"] is None and row["kind"] != "embedded"]
    if missing:
        lines.append(f"\nNo known ModelScope id (use --hub hf): {', '.join(missing)}")
    return "\n".join(lines)


def _aligned(values: list[str], widths: list[int]) -> str:
    """One table line: the values padded to their column widths, indented under the family heading."""
    return ("  " + "  ".join(value.ljust(width) for value, width in zip(values, widths))).rstrip()


def _whereabouts(name: str, alias: ModelAlias) -> dict:
    """`kind`, `path` (None until local) and `resolves_to` (in words) for one alias."""
    if alias.built:
        return vision_whereabouts()
    gguf = embedded_gguf_path() if alias.embedded else None
    if gguf is not None:
        converted = converted_dir(gguf)
        if is_converted(converted):
            return {"kind": "embedded", "path": str(converted), "resolves_to": f"embedded GGUF, converted: {converted}"}
        return {"kind": "embedded", "path": None, "resolves_to": f"embedded GGUF {gguf} (converted on first use)"}
    cached = cached_snapshot(alias.hf, patterns=MODEL_FILES)
    if cached is not None:
        return {"kind": "hub", "path": str(cached), "resolves_to": f"hub {alias.hf} (cached: {cached})"}
    return {
        "kind": "hub",
        "path": None,
        "resolves_to": f"hub {alias.hf} (not downloaded: `tunestack download --model {name}`)",
    }
