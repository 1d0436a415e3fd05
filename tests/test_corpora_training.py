"""A manifest of 22.05 kHz speech trains and evaluates with ``data=manifest``; cross-corpus class mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ambemo.config import compose
from ambemo.data.class_map import ClassMapError, map_classes
from ambemo.data.labels import CREMA_D_CLASSES, IEMOCAP_CLASSES
from ambemo.data.synthetic import generate_corpus
from ambemo.train import train


def test_manifest_at_22khz_trains_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Speech (eSpeak NG, CREMA-D sentences) written at 22.05 kHz; splits left to the reader.
    corpus = tmp_path / "speech22k"
    generate_corpus(corpus, seed=0, n_train=16, n_val=4, n_test=4, sample_rate=22050, workers=1)
    manifest = corpus / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "split"}) + "\n" for x in lines))

    cfg = compose(
        "sft",
        [
            "data=manifest",
            f"data.path={manifest}",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "data.batch_size=8",
            "data.eval_batch_size=8",
            f"out_dir={tmp_path / 'runs'}",
            "strategy.max_new_tokens=24",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "trainer.check_val_every_n_epoch=1",
            "logger=csv",
        ],
    )
    assert tuple(cfg.data.classes) == CREMA_D_CLASSES  # from the manifest's keys, sorted
    run_dir = train(cfg)

    printed = capsys.readouterr().out
    assert "[ambemo] data: manifest from" in printed and "no utterance skipped" in printed
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert summary["test"]["n"] == len(rows) > 0
    assert all(set(r["distribution"]) == set(CREMA_D_CLASSES) for r in rows)
    cache = json.loads(next((corpus / ".ambemo-cache").glob("manifest-*/cache.json")).read_text())
    assert cache["counts"] == {"resampled from 22050 Hz": 24}


def test_cross_corpus_class_map() -> None:
    # A CREMA-D model read out on IEMOCAP: anger, happiness, sadness, neutral -> model indices
    assert map_classes(IEMOCAP_CLASSES, CREMA_D_CLASSES) == [0, 3, 5, 4]
    assert map_classes(["Angry", "Neutral state", "happy"], CREMA_D_CLASSES) == [0, 4, 3]
    with pytest.raises(ClassMapError, match=r"\['frustration', 'surprise'\] have no counterpart"):
        map_classes(["anger", "frustration", "surprise"], CREMA_D_CLASSES)
    with pytest.raises(ClassMapError, match="same model class twice"):
        map_classes(["happy", "happiness"], CREMA_D_CLASSES)
