"""Inference for applications: a tiny trained run, exported, applied to new audio through the CLI and
``ambemo.load``; the ambiguity threshold; the peft adapter export.

Two runs are trained once for the module (full fine-tuning, and LoRA for the adapter export), each
for one optimizer step: what is under test is that prediction reproduces evaluation exactly, not
what the model learned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import ambemo
from ambemo.cli import main
from ambemo.config import compose
from ambemo.data.audio import resample
from ambemo.errors import OutputPathError
from ambemo.inference.ambiguity import choose_threshold, normalised_entropy, split_votes
from ambemo.inference.export import export
from ambemo.inference.loading import ModelLoadError, load_run
from ambemo.inference.predictor import PredictInputError
from ambemo.train import train

RECORD_KEYS = {"id", "distribution", "top", "entropy", "ambiguous", "format_ok", "reasoning"}
CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]


@pytest.fixture(scope="module")
def runs(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA run trained for one optimizer step, and a full-weights run evaluated without training
    (its weights are the seeded random initialisation: enough to check the full-weights export)."""
    out = tmp_path_factory.mktemp("runs")
    fast = [
        f"data.root={small_corpus}",
        "data.n_train=48",
        "data.n_val=8",
        "data.n_test=8",
        "data.limit_train=8",
        "data.limit_eval=2",
        "data.batch_size=8",
        "data.eval_batch_size=2",
        "strategy.max_new_tokens=8",
        "strategy.own_readout_weight=0",
        "trainer.accelerator=cpu",
        "trainer.check_val_every_n_epoch=1",
        "logger=csv",
        f"out_dir={out}",
    ]
    made = {}
    for finetune, epochs in (("lora", 1), ("full", 0)):
        os.environ.pop("AMBEMO_RUN_DIR", None)
        made[finetune] = train(
            compose("sft_cot", [*fast, f"model.finetune={finetune}", f"trainer.max_epochs={epochs}"])
        )
    os.environ.pop("AMBEMO_RUN_DIR", None)
    return made


@pytest.fixture(scope="module")
def exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    return {kind: export(run, folder / kind) for kind, run in runs.items()}


@pytest.fixture(scope="module")
def audio_dir(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WAV and FLAC at 16 kHz, WAV at 22.05 kHz, stereo FLAC at 22.05 kHz, and a corrupt file."""
    folder = tmp_path_factory.mktemp("audio")
    speech, rate = sf.read(small_corpus / "wav" / "syn00000.wav", dtype="float32")
    assert rate == 16_000
    other = resample(speech, 16_000, 22_050)
    sf.write(folder / "a16k.wav", speech, 16_000, subtype="PCM_16")
    sf.write(folder / "b16k.flac", speech, 16_000, subtype="PCM_16")
    sf.write(folder / "c22k.wav", other, 22_050, subtype="PCM_16")
    sf.write(folder / "d22k_stereo.flac", np.stack([other, 0.5 * other], axis=1), 22_050, subtype="PCM_16")
    (folder / "e_corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt this is not audio" + bytes(64))
    return folder


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _test_clips(corpus: Path, run: Path) -> tuple[list[str], list[str]]:
    """Audio paths and transcripts of the clips in a run's predictions.jsonl, in its order."""
    rows = {r["id"]: r for r in _records(corpus / "manifest.jsonl")}
    ids = [p["id"] for p in _records(run / "predictions.jsonl")]
    return [str(corpus / rows[i]["audio"]) for i in ids], [rows[i]["transcript"] for i in ids]


def test_predict_reproduces_the_runs_test_predictions(
    runs: dict[str, Path], exports: dict[str, Path], small_corpus: Path
) -> None:
    for run in runs.values():
        ambiguity = json.loads((run / "ambiguity.json").read_text())
        assert 0.0 <= ambiguity["threshold"] <= 1.0 and ambiguity["n"] == 2
        assert {"precision", "recall", "criterion"} <= set(ambiguity)
    # the run folder directly, and exports (no training config) of both kinds of weights
    for source, run in ((runs["lora"], runs["lora"]), (exports["lora"], runs["lora"]), (exports["full"], runs["full"])):
        paths, transcripts = _test_clips(small_corpus, run)
        expected = _records(run / "predictions.jsonl")
        got = ambemo.load(source, device="cpu").predict(paths, transcript=transcripts, batch_size=2)
        assert len(got) == len(expected) and not got.skipped
        for record, reference in zip(got, expected, strict=True):
            for name in CLASSES:
                assert record["distribution"][name] == pytest.approx(reference["distribution"][name], abs=1e-6)
            assert record["reasoning"] == reference["reasoning"]
            assert record["format_ok"] == reference["format_ok"]


def test_cli_and_api_on_new_audio(
    exports: dict[str, Path], audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = exports["lora"]  # the trained run
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", str(exported), str(audio_dir), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().err
    assert "e_corrupt.wav: unreadable or corrupt audio" in printed
    assert "predicted 4 of 5 clips (1 skipped)" in printed
    cli = _records(out)
    assert [Path(r["id"]).name for r in cli] == ["a16k.wav", "b16k.flac", "c22k.wav", "d22k_stereo.flac"]
    threshold = json.loads((exported / "ambiguity.json").read_text())["threshold"]
    for record in cli:
        assert set(record) == RECORD_KEYS
        assert list(record["distribution"]) == CLASSES
        assert sum(record["distribution"].values()) == pytest.approx(1.0, abs=1e-5)
        assert record["top"] == max(record["distribution"], key=record["distribution"].get)
        assert 0.0 <= record["entropy"] <= 1.0 and record["ambiguous"] == (record["entropy"] > threshold)
        assert isinstance(record["format_ok"], bool) and record["reasoning"].endswith("Emotion:")
    # the same 16-bit samples, as WAV or as FLAC: the same prediction
    assert cli[0]["distribution"] == cli[1]["distribution"]

    model = ambemo.load(exported, device="cpu")
    first = model.predict(str(audio_dir))
    assert [{k: v for k, v in r.items() if k != "id"} for r in first] == [
        {k: v for k, v in r.items() if k != "id"} for r in cli
    ]
    assert [s["id"] for s in first.skipped] == [str(audio_dir / "e_corrupt.wav")]
    assert "unreadable or corrupt audio" in first.skipped[0]["reason"]
    assert model.predict(str(audio_dir)) == first  # greedy decoding: identical inputs, identical outputs

    # in-memory audio (frames x channels at its own rate) reads like the file it came from
    stereo, rate = sf.read(audio_dir / "d22k_stereo.flac", dtype="float32")
    from_array = model.predict(stereo, sample_rate=rate, reasoning=False)
    assert from_array[0]["id"] == "array-0" and "reasoning" not in from_array[0]
    # (alone in its batch rather than padded with others: equal up to float rounding)
    assert from_array[0]["distribution"] == pytest.approx(cli[3]["distribution"], abs=1e-6)


def test_export_folder_and_model_card(exports: dict[str, Path], runs: dict[str, Path]) -> None:
    exported = exports["full"]
    meta = json.loads((exported / "ambemo.json").read_text())
    assert meta["weights"] == "full" and (exported / "model" / "config.json").is_file()
    assert meta["classes"] == CLASSES and meta["prompt_version"] == "ambemo-cot-v1"
    assert (exported / "processor" / "tokenizer.json").is_file() and not (exported / "adapter").exists()
    card = (exported / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    summary = json.loads((runs["full"] / "summary.json").read_text())
    assert front["base_model"] and front["datasets"] and "js" in front["metrics"]
    scores = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert scores["js"] == pytest.approx(summary["test"]["js"])
    assert "## Intended use and limits" in card and "## Ambiguity flag" in card
    with pytest.raises(OutputPathError, match="not an empty folder"):
        export(runs["full"], exported)


def test_lora_export_is_a_peft_adapter_with_identical_logits(
    runs: dict[str, Path], exports: dict[str, Path], audio_dir: Path
) -> None:
    from peft import PeftModel
    from transformers import Qwen2AudioForConditionalGeneration

    from ambemo.inference.predictor import AudioInput
    from ambemo.model.inputs import Clip
    from ambemo.model.readout import forward_logits

    folder = exports["lora"]
    assert (folder / "adapter" / "adapter_config.json").is_file() and not (folder / "model").exists()
    base = Qwen2AudioForConditionalGeneration.from_pretrained(folder / "base_model", local_files_only=True)
    adapted = PeftModel.from_pretrained(base, folder / "adapter").eval()

    trained = load_run(runs["lora"], torch.device("cpu"))
    clip = Clip("a", trained.load_audio(AudioInput("a", path=audio_dir / "a16k.wav")), "hello", target=None)
    batch = trained.encoder.prompt_batch([clip])
    with torch.no_grad():
        logits = forward_logits(adapted, batch)
        assert torch.equal(logits, forward_logits(trained.backbone.model, batch))
        with adapted.disable_adapter():  # and the trained adapter does change them
            assert not torch.allclose(logits, forward_logits(adapted, batch))
    from_export = ambemo.load(folder, device="cpu").predict(str(audio_dir / "a16k.wav"))
    assert from_export == trained.predict(str(audio_dir / "a16k.wav"))


def test_latest_resolver_and_bad_inputs(runs: dict[str, Path], tmp_path: Path):
    runs_dir = runs["full"].parent.parent
    model = ambemo.load("latest:sft_cot", device="cpu", runs_dir=runs_dir)
    assert model.source == str(runs["full"])  # the newest finished run
    with pytest.raises(ModelLoadError, match="no finished run of 'sft'"):
        ambemo.load("latest:sft", runs_dir=runs_dir)
    with pytest.raises(ModelLoadError, match="neither an exported model"):
        ambemo.load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PredictInputError, match="no audio files"):
        model.predict(str(empty))
    with pytest.raises(PredictInputError, match="sample_rate"):
        model.predict(np.zeros(16_000, dtype=np.float32))
    silent = model.predict([np.zeros(16_000, dtype=np.float32)], sample_rate=16_000)
    assert not silent and silent.skipped[0]["reason"].startswith("silent audio")


def test_threshold_separates_split_votes():
    # 6 clips, 3 with split human votes (top share <= 0.5)
    target = torch.tensor(
        [[0.5, 0.5, 0, 0], [0.4, 0.3, 0.3, 0], [0.9, 0.1, 0, 0], [0.6, 0.4, 0, 0], [1.0, 0, 0, 0], [0.5, 0.25, 0.25, 0]]
    )
    split = split_votes(target)
    assert split.tolist() == [True, True, False, False, False, True]
    model_entropy = torch.tensor([0.9, 0.8, 0.3, 0.6, 0.1, 0.5])
    chosen = choose_threshold(model_entropy, split)
    # > 0.4 flags the 3 split clips and 1 other: J = 1 - 1/3, F1 = 6/7. > 0.7 flags 2 split clips
    # and no other: J = 2/3 - 0 too, but F1 = 0.8; the tie goes to the higher F1.
    assert chosen["threshold"] == pytest.approx(0.4)
    assert chosen["recall"] == 1.0 and chosen["precision"] == 0.75 and chosen["youden_j"] == pytest.approx(2 / 3)
    assert chosen["f1"] == pytest.approx(6 / 7)
    assert choose_threshold(model_entropy, torch.zeros(6, dtype=torch.bool))["threshold"] == 1.0  # nothing split
    uniform = torch.full((1, 6), 1 / 6)
    assert normalised_entropy(uniform).item() == pytest.approx(1.0)
    assert normalised_entropy(torch.tensor([[1.0, 0, 0, 0, 0, 0]])).item() == 0.0
