"""``ambemo report``: per-run rows with bootstrap intervals, reference rows, Markdown and CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ambemo.metrics.metrics import score_distributions
from ambemo.report import main, newest_runs

CLASSES = ["anger", "neutral", "sadness"]


def _run(root: Path, experiment: str, stamp: str, shift: float) -> Path:
    run = root / experiment / stamp
    run.mkdir(parents=True)
    gen = torch.Generator().manual_seed(len(experiment))
    target = torch.softmax(3 * torch.randn(40, 3, generator=gen), -1)
    pred = torch.softmax(torch.log(target) + shift * torch.randn(40, 3, generator=gen), -1)
    with open(run / "predictions.jsonl", "w") as f:
        for i, (p, t) in enumerate(zip(pred.tolist(), target.tolist(), strict=True)):
            row = {
                "id": f"u{i}",
                "distribution": dict(zip(CLASSES, p, strict=True)),
                "target": dict(zip(CLASSES, t, strict=True)),
            }
            f.write(json.dumps(row) + "\n")
    prior = {"js": 0.3, "bc": 0.7, "r2": 0.4, "brier": 0.05, "n": 40}
    summary = {"experiment": experiment, "dataset": "synthetic", "reference": {"prior": prior}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_table_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    _run(runs, "sft", "20260101-000000", 0.5)
    good = _run(runs, "sft", "20260102-000000", 0.1)  # newer: the one reported
    _run(runs, "dpo_cot", "20260101-000000", 1.0)
    (runs / "grpo_cot" / "unfinished").mkdir(parents=True)  # no summary.json: ignored
    assert newest_runs(runs) == [runs / "dpo_cot" / "20260101-000000", good]

    out, table_csv = tmp_path / "t.md", tmp_path / "t.csv"
    assert main(["--runs", str(runs), "--out", str(out), "--csv", str(table_csv), "--bootstrap", "200"]) == 0
    table = capsys.readouterr().out
    assert table.rstrip("\n") == out.read_text().rstrip("\n")
    lines = table.splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["dpo_cot", "sft", "(prior)"]

    rows = list(csv.DictReader(table_csv.read_text().splitlines()))
    sft_js = next(r for r in rows if r["method"] == "sft" and r["metric"] == "js")
    # the point value is the run's mean per-utterance JS, inside its bootstrap interval
    preds = [json.loads(line) for line in (good / "predictions.jsonl").read_text().splitlines()]
    pred = torch.tensor([[p["distribution"][c] for c in CLASSES] for p in preds], dtype=torch.float64)
    target = torch.tensor([[p["target"][c] for c in CLASSES] for p in preds], dtype=torch.float64)
    expected = score_distributions(pred, target)["js"]
    assert float(sft_js["value"]) == pytest.approx(expected, abs=1e-9)
    assert float(sft_js["low"]) < float(sft_js["value"]) < float(sft_js["high"])
    dpo_js = next(r for r in rows if r["method"] == "dpo_cot" and r["metric"] == "js")
    assert float(dpo_js["value"]) > float(sft_js["value"])  # noisier predictions score worse


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", str(tmp_path / "none")]) == 2
    assert "no finished runs" in capsys.readouterr().err
