"""The Runs tab: every run directory under the runs folder (status, method, model, steps, final loss), their loss
curves side by side, and the settings a run recorded in run.json."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from tunestack.ui.runs import RUN_COLUMNS, find_runs, loss_points, read_manifest, run_row

SETTINGS_KEYS = ("command", "status", "created", "base_model", "base_model_source", "tuner", "template", "precision",
                 "seed", "final_step", "final_loss", "chain", "config")
"""What the settings view shows of run.json, in order (data reports and library versions left out)."""


def build(ctx) -> None:
    root = ctx.runs_root
    with gr.Row():
        gr.Markdown(f"Runs under `{root}`; click a row to compare its loss curve and see its settings.")
        refresh = gr.Button("Refresh", size="sm", scale=0)
    table = gr.Dataframe(pd.DataFrame(columns=RUN_COLUMNS), interactive=False, elem_id="runs-table")
    compared = gr.Dropdown([], value=[], multiselect=True, label="Compare", elem_id="runs-compare")

    @gr.render(inputs=compared)
    def plot(names):  # drawn afresh for each choice: the legend's series are fixed when a plot is drawn
        gr.LinePlot(_curves(root, names), x="step", y="loss", color="run", color_map=_colors(names),
                    title="Training loss", height=300, elem_id="runs-loss")

    shown = gr.Dropdown([], value=None, label="Settings of", elem_id="runs-settings-of")
    settings = gr.JSON(label="run.json", elem_id="runs-settings")
    listed = gr.State(None)

    def list_runs(before):
        rows = [run_row(path, root) for path in find_runs(root)]
        if rows == before:
            return [gr.skip()] * 3 + [before]
        names = [row[0] for row in rows]
        frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
        return frame, gr.update(choices=names), gr.update(choices=names), rows

    def picked(current, event: gr.SelectData):
        name = event.row_value[0] if event.row_value else None
        if name is None:
            return gr.skip(), gr.skip()
        names = list(current or [])
        return (names if name in names else names + [name]), name

    refresh.click(list_runs, listed, [table, compared, shown, listed])
    gr.on(None, list_runs, listed, [table, compared, shown, listed])
    gr.Timer(3.0).tick(list_runs, listed, [table, compared, shown, listed], show_progress="hidden")
    table.select(picked, compared, [compared, shown])
    shown.change(lambda name: _settings(root, name), shown, settings)


def _curves(root, names: list[str]) -> pd.DataFrame:
    """The loss points of the named runs, one `run` column telling them apart."""
    points = [(name, point["step"], point["loss"]) for name in names or [] for point in loss_points(root / name)]
    return pd.DataFrame({"run": pd.Series([p[0] for p in points], dtype=str),
                         "step": pd.Series([p[1] for p in points], dtype=float),
                         "loss": pd.Series([p[2] for p in points], dtype=float)})


PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def _colors(names: list[str]) -> dict[str, str]:
    """A colour per compared run (the plot's legend takes its series from this map, not from the data)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names or [])}


def _settings(root, name: str | None) -> dict:
    if not name:
        return {}
    manifest = read_manifest(root / name)
    return {key: manifest[key] for key in SETTINGS_KEYS if key in manifest} | {"path": str(root / name)}

