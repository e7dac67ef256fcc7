"""What each model alias resolves to right now, without downloading or converting anything (`tunestack models`)."""

from __future__ import annotations

from tunestack.hub.fetch import MODEL_FILES, cached_snapshot
from tunestack.hub.gguf import converted_dir, embedded_gguf_path, is_converted
from tunestack.hub.registry import ALIASES, ModelAlias


def list_models() -> list[dict]:
    """One row per alias: `alias`, `hf_id`, `modelscope_id`, `template`, `description`, and where it would load from
    now: `kind` (embedded or hub), `path` (None until local) and `resolves_to` (in words)."""
    return [
        {
            "alias": name,
            "hf_id": alias.hf,
            "modelscope_id": alias.modelscope,
            "template": alias.template,
            "description": alias.description,
            **_whereabouts(name, alias),
        }
        for name, alias in ALIASES.items()
    ]


def _whereabouts(name: str, alias: ModelAlias) -> dict:
    """`kind`, `path` (None until local) and `resolves_to` (in words) for one alias."""
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
