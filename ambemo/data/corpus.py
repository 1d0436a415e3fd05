"""From a data config to a corpus ready to serve: labels from its reader, audio from the cache.

The DataModule and ``ambemo data summary`` both go through ``load_corpus``, so they see exactly
the same utterances and the same skips.

Readers (``data.name``): ``synthetic`` (the built-in corpus, generated on first use into
``data.root``), ``manifest`` (``data.path``, a JSONL file), ``iemocap`` (``data.root`` =
IEMOCAP_full_release) and ``crema_d`` (``data.root`` = a CREMA-D copy). The audio cache goes to
``data.cache_dir``, by default ``.ambemo-cache/`` in the corpus folder (``data.root``, or the
manifest's folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ambemo.data.audio import TARGET_RATE
from ambemo.data.cache import AudioCache, open_audio_cache
from ambemo.data.manifest import Utterance, read_manifest
from ambemo.data.report import CorpusError, DataReport

READERS = ("synthetic", "manifest", "iemocap", "crema_d")


@dataclass
class Corpus:
    """The usable utterances of a configured corpus (every split), their audio, and what was skipped."""

    name: str
    source: Path
    """The manifest file or the corpus folder the labels came from."""
    classes: list[str]
    rows: list[Utterance]
    audio: AudioCache
    report: DataReport

    def split(self, name: str) -> list[Utterance]:
        return [r for r in self.rows if r.split == name]


def label_source(cfg: DictConfig) -> Path:
    """Where a configured corpus's labels are read from."""
    if cfg.name == "synthetic":
        return Path(cfg.root) / "manifest.jsonl"
    if cfg.name == "manifest":
        if not cfg.path:
            raise CorpusError("data=manifest needs data.path=FILE.jsonl")
        return Path(cfg.path)
    return Path(cfg.root)


def cache_dir(cfg: DictConfig) -> Path:
    """``data.cache_dir``, or ``.ambemo-cache`` beside the labels (in the corpus folder)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    source = label_source(cfg)
    return (source.parent if cfg.name in ("synthetic", "manifest") else source) / ".ambemo-cache"


def read_labels(cfg: DictConfig, report: DataReport) -> list[Utterance]:
    """The configured reader's utterances (labels, audio paths, splits); bad labels go to ``report``."""
    classes = list(cfg.classes)
    source = label_source(cfg)
    if cfg.name in ("synthetic", "manifest"):
        return read_manifest(source, classes, report, cfg.seed, cfg.val_fraction, cfg.test_fraction)
    if cfg.name == "iemocap":
        from ambemo.data.iemocap import read_iemocap

        return read_iemocap(
            source,
            classes,
            fold=cfg.fold,
            out_of_set=cfg.out_of_set_votes,
            multi_label=cfg.multi_label_votes,
            consensus_in_classes=cfg.consensus_in_classes,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            report=report,
        )
    if cfg.name == "crema_d":
        from ambemo.data.crema_d import read_crema_d

        return read_crema_d(
            source, classes, cfg.out_of_set_votes, cfg.val_fraction, cfg.test_fraction, cfg.seed, report
        )
    raise CorpusError(f"unknown corpus data.name={cfg.name!r}; choose one of {', '.join(READERS)}")


def load_corpus(cfg: DictConfig, sample_rate: int = TARGET_RATE) -> Corpus:
    """Read the labels, open (building once if needed) the audio cache, apply the bad-input switches."""
    if cfg.name == "synthetic":
        from ambemo.data.synthetic import generate_corpus

        sizes = {"n_train": cfg.n_train, "n_val": cfg.n_val, "n_test": cfg.n_test}
        generate_corpus(cfg.root, seed=cfg.seed, max_seconds=cfg.max_seconds, **sizes)
    report = DataReport(on_bad_labels=cfg.on_bad_labels, on_bad_audio=cfg.on_bad_audio)
    rows = read_labels(cfg, report)
    audio = open_audio_cache(cfg.name, rows, cache_dir(cfg), sample_rate, cfg.max_seconds, cfg.max_duration_policy)
    report.skips.extend(audio.skips)
    report.counts.update(audio.counts)
    report.enforce("audio")
    usable = [r for r in rows if r.id in audio.index]
    if not usable:
        raise CorpusError(f"{label_source(cfg)}: no utterance is left ({report.headline()})")
    return Corpus(cfg.name, label_source(cfg), list(cfg.classes), usable, audio, report)
