"""The built-in synthetic corpus: format, labels, reasoning, audio, determinism and rebuild rules."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ambemo.data import synth_voice, synthetic
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.data.synthetic import generate_corpus, main
from ambemo.data.synthetic_clips import CUES, PROTOTYPES, SENTENCES, VOTES_FILE, cue_reading, curated_cot
from ambemo.model.prompts import ANSWER_SLOT, parse_cot

SMALL = {"n_train": 16, "n_val": 4, "n_test": 4, "workers": 1}
KEYS = {"id", "audio", "transcript", "votes", "latent", "split", "cot", "speaker", "acted", "source_clip"}


def _lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _js_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Independent numpy JS divergence in bits (0 log 0 = 0), to check reference.json."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(-1)
    return 0.5 * (kl_p + kl_q)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("syn") / "corpus", seed=0, **SMALL)


@pytest.fixture(scope="module")
def vote_table() -> dict[str, dict[str, str]]:
    with VOTES_FILE.open(newline="", encoding="utf-8") as handle:
        return {row["fileName"]: row for row in csv.DictReader(handle)}


def test_manifest_schema_and_splits(corpus, vote_table):
    rows = _lines(corpus)
    assert len(rows) == 24
    assert [r["split"] for r in rows].count("train") == 16
    assert [r["split"] for r in rows].count("val") == 4
    assert [r["split"] for r in rows].count("test") == 4
    assert len({r["id"] for r in rows}) == 24
    assert len({r["source_clip"] for r in rows}) == 24  # sampled without replacement
    transcripts = {s.transcript for s in SENTENCES.values()}
    for row in rows:
        assert set(row) == KEYS
        assert row["audio"] == f"wav/{row['id']}.wav" and (corpus.parent / row["audio"]).is_file()
        assert list(row["votes"]) == list(CREMA_D_CLASSES) and list(row["latent"]) == list(CREMA_D_CLASSES)
        source = vote_table[row["source_clip"]]
        assert row["transcript"] in transcripts
        assert row["transcript"] == SENTENCES[source["sentence"]].transcript
        assert row["speaker"] == source["actor"]
        assert row["acted"] in CREMA_D_CLASSES and row["acted"][0].upper() == source["acted_emotion"]


def test_votes_are_multinomial_redraws_of_the_real_clip(corpus, vote_table):
    rows = _lines(corpus)
    redrawn = 0
    for row in rows:
        source = vote_table[row["source_clip"]]
        real = np.array([int(source[c]) for c in "ADFHNS"])
        votes = list(row["votes"].values())
        assert all(isinstance(v, int) and v >= 0 for v in votes)
        assert sum(votes) == int(source["n_votes"])
        np.testing.assert_allclose(list(row["latent"].values()), real / real.sum())
        # a class with no real vote has zero probability, so it can never be drawn
        assert all(v == 0 for v, r in zip(votes, real, strict=True) if r == 0)
        redrawn += votes != real.tolist()
    assert redrawn > len(rows) // 2  # the votes are resampled, not copied


def test_every_cot_parses_and_names_the_cue_reading_majority(corpus):
    cues = {
        row["id"]: np.array([row["cues"][c] for c in CUES])
        for row in map(json.loads, (corpus.parent / "cues.jsonl").read_text().splitlines())
    }
    for row in _lines(corpus):
        cot = row["cot"]
        assert cot.endswith(ANSWER_SLOT)
        parts = parse_cot(cot)
        assert parts is not None, cot
        # the synthesis states what the voice implies (the cue reading), not the hidden latent
        majority = CREMA_D_CLASSES[int(np.argmax(cue_reading(cues[row["id"]])))]
        assert f"would hear {majority}" in parts.synthesis
        assert 40 <= len(cot.split()) <= 90


def test_cue_reading_recovers_prototype_mixtures():
    for k in range(len(CREMA_D_CLASSES)):
        np.testing.assert_allclose(cue_reading(PROTOTYPES[k]), np.eye(len(CREMA_D_CLASSES))[k], atol=1e-3)
    mix = np.array([0.6, 0.0, 0.0, 0.0, 0.4, 0.0])
    np.testing.assert_allclose(cue_reading(mix @ PROTOTYPES), mix, atol=1e-3)


def test_cot_describes_the_cues():
    sentence = SENTENCES["DFA"]
    angry = np.array([0.9, 0.0, 0.0, 0.0, 0.1, 0.0])
    cot = curated_cot(sentence, PROTOTYPES[0], angry)
    parts = parse_cot(cot)
    assert parts.audio_analysis.startswith("Very loud volume, very fast speed, very high pitch")
    assert "suggest anger" in parts.audio_analysis and "jacket" in parts.text_analysis
    assert parts.synthesis.startswith("Clear reading: most listeners would hear anger")
    sad_or_neutral = np.array([0.0, 0.0, 0.0, 0.0, 0.55, 0.45])
    neutral_cues = PROTOTYPES[CREMA_D_CLASSES.index("neutral")]
    parts = parse_cot(curated_cot(sentence, neutral_cues, sad_or_neutral))
    assert parts.audio_analysis.startswith("Normal volume, normal speed") and "suggest neutral" in parts.audio_analysis
    assert "nothing clearly marks sadness" in parts.audio_analysis  # the minority, honestly unsupported
    assert parts.synthesis == "Fairly clear reading: about half of listeners would hear neutral and about half sadness."


def test_audio_is_mono_16k_pcm_within_max_seconds(corpus):
    durations = []
    for row in _lines(corpus):
        info = sf.info(corpus.parent / row["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert info.duration <= 3.0
        audio, _ = sf.read(corpus.parent / row["audio"])
        assert np.sqrt(np.mean(audio**2)) > 1e-3  # speech, not silence
        durations.append(info.duration)
    assert np.std(durations) > 0.1  # rates and sentences differ


def test_reference_scores(corpus):
    reference = json.loads((corpus.parent / "reference.json").read_text())
    rows = _lines(corpus)
    test = [r for r in rows if r["split"] == "test"]
    votes = np.array([list(r["votes"].values()) for r in test], dtype=float)
    votes /= votes.sum(1, keepdims=True)
    latent = np.array([list(r["latent"].values()) for r in test])
    train = np.array([list(r["votes"].values()) for r in rows if r["split"] == "train"], dtype=float)
    prior = (train / train.sum(1, keepdims=True)).mean(0)
    for name in ("prior", "oracle"):
        assert set(reference["test"][name]) == {"js", "bc", "r2", "brier", "n"}
        assert reference["test"][name]["n"] == 4
    assert reference["test"]["oracle"]["js"] == pytest.approx(_js_bits(latent, votes).mean())
    assert reference["test"]["prior"]["js"] == pytest.approx(_js_bits(np.tile(prior, (4, 1)), votes).mean())
    assert reference["test"]["prior"]["brier"] == pytest.approx(((prior - votes) ** 2).sum(1).mean() / 6)
    assert reference["test"]["oracle"]["js"] < reference["test"]["prior"]["js"]
    assert reference["test"]["oracle"]["bc"] > reference["test"]["prior"]["bc"]


def test_same_seed_is_byte_identical_and_independent_of_workers(corpus, tmp_path):
    again = generate_corpus(tmp_path / "again", seed=0, **{**SMALL, "workers": 2})
    assert _files(again.parent) == _files(corpus.parent)
    other = generate_corpus(tmp_path / "other", seed=1, **SMALL)
    assert other.read_bytes() != corpus.read_bytes()
    first_wav = sorted((other.parent / "wav").iterdir())[0]
    assert first_wav.read_bytes() != (corpus.parent / "wav" / first_wav.name).read_bytes()


def test_second_call_reuses_the_corpus(corpus, monkeypatch):
    before = _mtimes(corpus.parent)
    monkeypatch.setattr(synthetic, "plan_clips", lambda *args: pytest.fail("the corpus was planned again"))
    assert generate_corpus(corpus.parent, seed=0, **{**SMALL, "workers": 2}) == corpus
    assert _mtimes(corpus.parent) == before


def test_changed_parameters_or_incomplete_corpus_rebuild(tmp_path):
    manifest = generate_corpus(tmp_path / "c", seed=0, **SMALL)
    before = manifest.stat().st_mtime_ns
    generate_corpus(tmp_path / "c", seed=0, **SMALL, max_seconds=1.5)
    info = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert info["complete"] is True and info["params"]["max_seconds"] == 1.5
    assert manifest.stat().st_mtime_ns != before
    assert all(sf.info(p).duration <= 1.5 for p in (tmp_path / "c" / "wav").iterdir())
    (tmp_path / "c" / "corpus.json").unlink()  # as if a run died before finishing
    before = manifest.stat().st_mtime_ns
    generate_corpus(tmp_path / "c", seed=0, **SMALL, max_seconds=1.5)
    assert (tmp_path / "c" / "corpus.json").exists() and manifest.stat().st_mtime_ns != before
    assert not list(tmp_path.glob(".c.*"))  # no build or old folders left behind


def test_refuses_to_replace_a_folder_that_is_not_a_corpus(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_corpus(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_leftover_build_of_a_dead_process_is_removed(tmp_path):
    stale = tmp_path / ".c.building-999999999"
    (stale / "wav").mkdir(parents=True)
    generate_corpus(tmp_path / "c", **SMALL)
    assert not stale.exists()


def test_cli_builds_a_corpus(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--n-train", "6", "--n-val", "0", "--n-test", "2", "--workers", "1", "--seed", "3"])
    rows = _lines(tmp_path / "cli" / "manifest.jsonl")
    assert [r["split"] for r in rows] == ["train"] * 6 + ["test"] * 2
    assert json.loads((tmp_path / "cli" / "corpus.json").read_text())["params"]["seed"] == 3
    assert "manifest.jsonl" in capsys.readouterr().out


def _spec(**change) -> synth_voice.VoiceSpec:
    neutral = dict(zip(CUES, PROTOTYPES[CREMA_D_CLASSES.index("neutral")].tolist(), strict=True))
    fields = {"text": "The surface is slick.", "variant": "en-us+m3", "tremor_hz": 6.0, "lead_s": 0.1, "seed": 7}
    return synth_voice.VoiceSpec(**{**neutral, **fields, **change})


@pytest.fixture(scope="module")
def library():
    with tempfile.TemporaryDirectory() as folder:
        yield synth_voice.private_library(folder)


def _render(spec, library) -> np.ndarray:
    return synth_voice.render(spec, library, 16000, 3.0)[0].astype(np.float64)


def test_render_is_reproducible_within_a_process(library):
    first = _render(_spec(), library)
    for rate in (6.0, 3.0, 4.5):  # eSpeak keeps state from clip to clip unless it is reloaded
        _render(_spec(variant="en-us+f1", rate=rate, text="Don't forget a jacket."), library)
        np.testing.assert_array_equal(_render(_spec(), library), first)


def test_prosody_parameters_change_the_audio_as_intended(library):
    def level_db(x):
        frames = x[: x.size // 320 * 320].reshape(-1, 320)
        energy = (frames**2).mean(1)
        return 10 * np.log10(energy[energy > energy.max() * 10**-3.5].mean())

    def high_band_share(x):
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[np.fft.rfftfreq(x.size, 1 / 16000) > 2000].sum() / power.sum()

    def f0(x):  # autocorrelation pitch of the loudest 40 ms
        centre = int(np.argmax(np.convolve(x**2, np.ones(640), "same")))
        frame = x[centre - 320 : centre + 320]
        ac = np.correlate(frame, frame, "full")[639:]
        lag = 40 + int(np.argmax(ac[40:267]))  # 60-400 Hz
        return 16000 / lag

    base = _render(_spec(), library)
    assert level_db(_render(_spec(loud_db=8.0), library)) - level_db(base) == pytest.approx(8.0, abs=1.0)
    assert _render(_spec(rate=5.6), library).size < 0.85 * base.size
    assert high_band_share(_render(_spec(tilt=-6.0), library)) > 2 * high_band_share(base)
    assert f0(_render(_spec(f0_st=6.0), library)) > 1.25 * f0(base)
    assert high_band_share(_render(_spec(noise=0.35), library)) > high_band_share(base)
    truncated = synth_voice.render(_spec(rate=2.0), library, 16000, 0.5)
    assert truncated[1] and truncated[0].size == 8000
