"""Draw the loss curve of a run into loss.png."""

from __future__ import annotations

from pathlib import Path


SECOND_AXIS = (("rewards/margins", "reward margin"), ("reward", "mean reward"), ("eval_accuracy", "accuracy"))


def plot_loss(metrics: list[dict], path: Path) -> Path | None:
    """Plot training (and validation) loss against step; returns the file, or None when nothing was logged."""
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    val = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    if not train and not val:
        return None
    from matplotlib.figure import Figure  # no pyplot: the process's backend (a notebook's, say) stays as it is

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for points, label in ((train, "train"), (val, "validation")):
        if points:
            ax.plot(*zip(*points), label=label, marker="o" if len(points) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    for key, label in SECOND_AXIS:
        points = [(m["step"], m[key]) for m in metrics if key in m]
        if points:  # preference methods: the chosen-minus-rejected margin (or the mean reward) on a second axis
            right = ax.twinx()
            right.plot(*zip(*points), color="tab:green", label=label, marker="o" if len(points) < 30 else None)
            right.set_ylabel(label)
            right.legend(loc="upper right")
            break
    fig.tight_layout()
    tmp = path.with_name(".loss.png.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path
