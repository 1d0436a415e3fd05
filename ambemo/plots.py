"""Test-split figures and tables of one run, from its per-utterance predictions.

Written to ``<run>/plots/`` (PNG + CSV, readable without W&B) and logged to W&B by
``ambemo.logging_wandb``:

- ``predictions.csv``: one row per utterance (id, human and predicted distribution, JS, vote
  entropy, human majority, predicted top class, reasoning, format_ok);
- ``samples.png``: predicted vs human distribution of a few clips, from the least to the most
  ambiguous (evenly spaced in vote entropy), as grouped bars;
- ``reliability.png`` / ``reliability.csv``: calibration. Left: top-class confidence vs how often
  the top class is the human majority (ties: the first class in label order, as in the metrics),
  in equal-width confidence bins, with the expected calibration error. Right: every predicted
  class probability vs the human vote share of that class, pooled and per class;
- ``ambiguity_buckets.png`` / ``ambiguity_buckets.csv``: JS, BC, R2, Brier and majority accuracy
  in vote-entropy terciles (utterances sorted by the entropy of the human distribution and split
  into three near-equal groups; ties may straddle a boundary, so each bucket lists its range).

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state, no display needed).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from ambemo.data.jsonl import iter_json_objects
from ambemo.metrics.functional import entropy, js_divergence
from ambemo.metrics.metrics import score_distributions

BUCKETS = ("low", "mid", "high")
BUCKET_METRICS = ("js", "bc", "r2", "brier", "accuracy")
SAMPLE_CLIPS = 6
BINS = 10


@dataclass
class Predictions:
    """A run's test predictions as tensors, in the class order of the first row's target."""

    ids: list[str]
    classes: list[str]
    pred: torch.Tensor
    target: torch.Tensor
    reasoning: list[str | None]
    format_ok: list[bool | None]

    @property
    def js(self) -> torch.Tensor:
        return js_divergence(self.pred, self.target)

    @property
    def vote_entropy(self) -> torch.Tensor:
        return entropy(self.target) + 0.0  # no -0.0 in tables


def read_predictions(rows: list[dict[str, Any]], source: str = "predictions") -> Predictions:
    """Rows as in ``predictions.jsonl`` (``id``, ``distribution``, ``target``[, ``reasoning``, ``format_ok``])."""
    if not rows:
        raise ValueError(f"{source}: no predictions")
    classes = list(rows[0]["target"])
    return Predictions(
        ids=[str(r["id"]) for r in rows],
        classes=classes,
        pred=torch.tensor([[r["distribution"][c] for c in classes] for r in rows], dtype=torch.float64),
        target=torch.tensor([[r["target"][c] for c in classes] for r in rows], dtype=torch.float64),
        reasoning=[r.get("reasoning") for r in rows],
        format_ok=[r.get("format_ok") for r in rows],
    )


def load_predictions(path: str | Path) -> Predictions:
    """A ``predictions.jsonl`` file."""
    return read_predictions([record for _, record in iter_json_objects(path)], str(path))


def _rounded(dist: torch.Tensor, classes: list[str]) -> str:
    return json.dumps({c: round(float(v), 4) for c, v in zip(classes, dist.tolist(), strict=True)})


def utterance_rows(p: Predictions) -> list[dict[str, Any]]:
    """One row per utterance: the predictions table."""
    js, ent = p.js.tolist(), p.vote_entropy.tolist()
    majority, top = p.target.argmax(-1).tolist(), p.pred.argmax(-1).tolist()
    return [
        {
            "id": uid,
            "human": _rounded(p.target[i], p.classes),
            "predicted": _rounded(p.pred[i], p.classes),
            "js": js[i],
            "vote_entropy": ent[i],
            "human_majority": p.classes[majority[i]],
            "predicted_top": p.classes[top[i]],
            "reasoning": p.reasoning[i] or "",
            "format_ok": "" if p.format_ok[i] is None else p.format_ok[i],
        }
        for i, uid in enumerate(p.ids)
    ]


def ambiguity_buckets(p: Predictions) -> list[dict[str, Any]]:
    """Metrics per vote-entropy tercile (empty terciles, with fewer than 3 utterances, are left out)."""
    ent = p.vote_entropy
    order = torch.argsort(ent, stable=True)
    rows = []
    for name, index in zip(BUCKETS, torch.tensor_split(order, 3), strict=True):
        if len(index) == 0:
            continue
        scores = score_distributions(p.pred[index], p.target[index])
        row = {"bucket": name, "n": len(index), "entropy_min": float(ent[index].min())}
        row["entropy_max"] = float(ent[index].max())
        row.update({m: float(scores[m]) for m in BUCKET_METRICS})
        rows.append(row)
    return rows


def _binned(x: torch.Tensor, y: torch.Tensor, bins: int) -> list[tuple[int, int, float, float]]:
    """(bin, n, mean x, mean y) over equal-width bins of x in [0, 1], non-empty bins only."""
    which = (x * bins).floor().clamp(0, bins - 1).long()
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append((b, int(mask.sum()), float(x[mask].mean()), float(y[mask].mean())))
    return out


def reliability(p: Predictions, bins: int = BINS) -> tuple[list[dict[str, Any]], float]:
    """Calibration rows (``curve`` = ``top-class``, ``all classes`` or a class name) and the
    expected calibration error of the top class (bin-size-weighted |accuracy - confidence|)."""
    confidence, top = p.pred.max(-1)
    correct = (top == p.target.argmax(-1)).double()
    rows: list[dict[str, Any]] = []
    curves = [("top-class", confidence, correct), ("all classes", p.pred.flatten(), p.target.flatten())]
    curves += [(c, p.pred[:, k], p.target[:, k]) for k, c in enumerate(p.classes)]
    for curve, x, y in curves:
        for b, n, mean_x, mean_y in _binned(x, y, bins):
            rows.append({"curve": curve, "bin": b, "n": n, "predicted": mean_x, "observed": mean_y})
    top_rows = [r for r in rows if r["curve"] == "top-class"]
    ece = sum(r["n"] * abs(r["observed"] - r["predicted"]) for r in top_rows) / len(p.ids)
    return rows, ece


def sample_indices(p: Predictions, count: int = SAMPLE_CLIPS) -> list[int]:
    """Up to ``count`` clips evenly spaced from the least to the most ambiguous."""
    order = torch.argsort(p.vote_entropy, stable=True).tolist()
    if len(order) <= count:
        return order
    return [order[round(k * (len(order) - 1) / (count - 1))] for k in range(count)]


def samples_figure(p: Predictions, count: int = SAMPLE_CLIPS) -> Figure:
    """Grouped bars, human vs predicted, for a few clips from low to high vote entropy."""
    picks = sample_indices(p, count)
    cols = min(3, len(picks))
    rows = -(-len(picks) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    x = torch.arange(len(p.classes)).numpy()
    js, ent = p.js, p.vote_entropy
    for k, i in enumerate(picks):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.bar(x - 0.2, p.target[i].numpy(), width=0.4, label="human")
        ax.bar(x + 0.2, p.pred[i].numpy(), width=0.4, label="predicted")
        ax.set_xticks(x, p.classes, rotation=30, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{p.ids[i]}  H={float(ent[i]):.2f} bits  JS={float(js[i]):.3f}", fontsize=9)
        if k == 0:
            ax.set_ylabel("probability")
            ax.legend(fontsize=8)
    fig.suptitle("Predicted vs human distribution (least to most ambiguous)")
    return fig


def reliability_figure(rows: list[dict[str, Any]], ece: float) -> Figure:
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    top_ax, class_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax in (top_ax, class_ax):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    top = [r for r in rows if r["curve"] == "top-class"]
    top_ax.plot([r["predicted"] for r in top], [r["observed"] for r in top], marker="o")
    for r in top:
        where = (r["predicted"], r["observed"])
        top_ax.annotate(str(r["n"]), where, fontsize=7, xytext=(3, 3), textcoords="offset points")
    top_ax.set_xlabel("top-class confidence")
    top_ax.set_ylabel("accuracy vs human majority")
    top_ax.set_title(f"Top class (ECE {ece:.3f}; labels: clips per bin)", fontsize=10)
    for curve in dict.fromkeys(r["curve"] for r in rows if r["curve"] != "top-class"):
        pts = [r for r in rows if r["curve"] == curve]
        pooled = curve == "all classes"
        class_ax.plot(
            [r["predicted"] for r in pts],
            [r["observed"] for r in pts],
            marker="o" if pooled else ".",
            linewidth=2.5 if pooled else 1,
            color="black" if pooled else None,
            label=curve,
        )
    class_ax.set_xlabel("predicted probability of a class")
    class_ax.set_ylabel("human vote share of that class")
    class_ax.set_title("Per class", fontsize=10)
    class_ax.legend(fontsize=7)
    return fig


def buckets_figure(rows: list[dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(3.0 * len(BUCKET_METRICS), 3.2), layout="constrained")
    labels = [f"{r['bucket']}\n{r['entropy_min']:.2f}-{r['entropy_max']:.2f}" for r in rows]
    for k, metric in enumerate(BUCKET_METRICS):
        ax = fig.add_subplot(1, len(BUCKET_METRICS), k + 1)
        ax.bar(labels, [r[metric] for r in rows], color=["#4c72b0", "#dd8452", "#c44e52"][: len(rows)])
        ax.set_title(metric.upper() if metric != "accuracy" else "majority accuracy", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Test metrics by ambiguity (vote-entropy terciles, bits)")
    return fig


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_plots(run_dir: Path, p: Predictions) -> dict[str, Path]:
    """Write every figure and table into ``<run_dir>/plots/``; returns name -> path."""
    folder = run_dir / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    calibration, ece = reliability(p)
    buckets = ambiguity_buckets(p)
    tables = {"predictions": utterance_rows(p), "reliability": calibration, "ambiguity_buckets": buckets}
    figures = {
        "samples": samples_figure(p),
        "reliability": reliability_figure(calibration, ece),
        "ambiguity_buckets": buckets_figure(buckets),
    }
    paths: dict[str, Path] = {}
    for name, rows in tables.items():
        paths[f"{name}.csv"] = folder / f"{name}.csv"
        write_csv(paths[f"{name}.csv"], rows)
    for name, fig in figures.items():
        paths[f"{name}.png"] = folder / f"{name}.png"
        fig.savefig(paths[f"{name}.png"], dpi=110)
    return paths
