"""``ambemo report``: per-run rows with bootstrap intervals, reference rows, Markdown and CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ambemo.metrics.metrics import score_distributions
from ambemo.report import build_rows, main, newest_runs

CLASSES = ["anger", "neutral", "sadness"]


def write_run(root: Path, experiment: str, stamp: str, shift: float, dataset: str = "synthetic") -> Path:
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
    summary = {"experiment": experiment, "dataset": dataset, "reference": {"prior": prior}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_table_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "sft", "20260101-000000", 0.5)
    good = write_run(runs, "sft", "20260102-000000", 0.1)  # newer: the one reported
    write_run(runs, "dpo_cot", "20260101-000000", 1.0)
    (runs / "grpo_cot" / "unfinished").mkdir(parents=True)  # no summary.json: ignored
    assert newest_runs(runs) == [runs / "dpo_cot" / "20260101-000000", good]

    out, table_csv = tmp_path / "t.md", tmp_path / "t.csv"
    assert main(["--runs", str(runs), "--out", str(out), "--csv", str(table_csv), "--bootstrap", "200"]) == 0
    table = capsys.readouterr().out
    assert table.rstrip("\n") == out.read_text().rstrip("\n")
    lines = [line for line in table.splitlines() if line.startswith("|")]
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


def test_paper_layout_methods_by_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    sft = write_run(runs, "sft", "20260101-000000", 0.1)
    write_run(runs, "sft", "20260102-000000", 0.2)
    dpo = write_run(runs, "dpo_cot", "20260101-000000", 0.5)
    cross = write_run(tmp_path / "other", "sft", "20260101-000000", 0.3, dataset="iemocap")
    # a run folder, an experiment folder (its newest run) and a runs folder (newest per experiment)
    assert main([str(sft), str(runs / "sft"), str(cross.parent.parent), "--bootstrap", "50"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["method"] + [
        f"{d}: {m}" for d in ("synthetic", "iemocap") for m in ("JS (bits)", "BC", "R2", "Brier")
    ]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines[2:]}
    # two runs of sft on one dataset are told apart; the iemocap run shares the first sft row
    assert list(rows) == ["sft", "sft (20260102-000000)", "(prior)"]
    assert rows["sft"][4] != "-" and rows["sft (20260102-000000)"][4:] == ["-"] * 4
    assert main([str(dpo), str(tmp_path / "missing")]) == 2
    assert "missing: not a folder" in capsys.readouterr().err


def test_older_runs_take_the_dataset_from_their_config(tmp_path: Path) -> None:
    run = write_run(tmp_path, "sft", "20260101-000000", 0.1)
    summary = json.loads((run / "summary.json").read_text())
    del summary["dataset"]  # written by runs before summary.json named it
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("data:\n  name: crema_d\n")
    assert [r["dataset"] for r in build_rows([run], resamples=10)] == ["crema_d", "crema_d"]
