"""From a data config to a corpus ready to serve: labels from its reader, audio from the cache.

The DataModule and ``ambemo data summary`` both go through ``load_corpus``, so they see exactly
the same utterances and the same skips.

Readers (``data.name``) are ``CorpusReader`` entries of ``ambemo.registry.CORPORA``; the built-in
ones register below: ``synthetic`` (the built-in corpus, generated on first use into
``data.root``), ``manifest`` (``data.path``, a JSONL file), ``iemocap`` (``data.root`` =
IEMOCAP_full_release) and ``crema_d`` (``data.root`` = a CREMA-D copy). A corpus from outside the
package registers its own reader the same way (README "Adding a corpus"). The audio cache goes to
``data.cache_dir``, by default ``.ambemo-cache/`` in the corpus folder (``data.root``, or the
manifest's folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ambemo.data.audio import TARGET_RATE
from ambemo.data.cache import AudioCache, open_audio_cache
from ambemo.data.crema_d import read_crema_d
from ambemo.data.iemocap import read_iemocap
from ambemo.data.manifest import Utterance, read_manifest
from ambemo.data.skips import CorpusError, SkipReport
from ambemo.data.synthetic import generate_corpus
from ambemo.registry import CORPORA


def corpus_folder(cfg: DictConfig) -> Path:
    """``data.root``: where most corpora keep their labels and audio."""
    return Path(cfg.root)


@dataclass(frozen=True)
class CorpusReader:
    """How one corpus (a ``data.name``) is found and read; registered in ``ambemo.registry.CORPORA``."""

    read: Callable[[Path, DictConfig, SkipReport], list[Utterance]]
    """``(source, data config, report)`` -> every utterance (labels, audio paths, splits) of every
    split; a bad label goes to ``report`` (``report.skip``), which stops or skips it as configured."""
    source: Callable[[DictConfig], Path] = corpus_folder
    """Where the labels are read from: a label file, or the corpus folder. The audio cache goes in
    the corpus folder (the file's folder, for a file)."""
    prepare: Callable[[DictConfig], None] | None = None
    """Run before reading, e.g. to generate the corpus on first use."""
    check: Callable[[DictConfig], str | None] | None = None
    """Checks the settings only this corpus reads (the data config): what is wrong, naming the key,
    or None. ``ambemo.config`` raises it as a config error, for the chosen corpus only."""


def reader(cfg: DictConfig) -> CorpusReader:
    """The reader registered under ``data.name`` (an error lists the registered ones)."""
    found = CORPORA[cfg.name]
    if not isinstance(found, CorpusReader):
        raise CorpusError(f"data.name={cfg.name!r} is registered with {found!r}, not a CorpusReader")
    return found


@dataclass
class Corpus:
    """The usable utterances of a configured corpus (every split), their audio, and what was skipped."""

    name: str
    source: Path
    """The manifest file or the corpus folder the labels came from."""
    classes: list[str]
    rows: list[Utterance]
    audio: AudioCache
    report: SkipReport

    def split(self, name: str) -> list[Utterance]:
        return [r for r in self.rows if r.split == name]


def label_source(cfg: DictConfig) -> Path:
    """Where a configured corpus's labels are read from."""
    return reader(cfg).source(cfg)


def cache_dir(cfg: DictConfig) -> Path:
    """``data.cache_dir``, or ``.ambemo-cache`` beside the labels (in the corpus folder)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    source = label_source(cfg)
    return (source.parent if source.is_file() else source) / ".ambemo-cache"


def read_labels(cfg: DictConfig, report: SkipReport) -> list[Utterance]:
    """The configured reader's utterances (labels, audio paths, splits); bad labels go to ``report``."""
    return reader(cfg).read(label_source(cfg), cfg, report)


def load_corpus(cfg: DictConfig, sample_rate: int = TARGET_RATE) -> Corpus:
    """Read the labels, open (building once if needed) the audio cache, apply the bad-input switches."""
    prepare = reader(cfg).prepare
    if prepare is not None:
        prepare(cfg)
    report = SkipReport(on_bad_labels=cfg.on_bad_labels, on_bad_audio=cfg.on_bad_audio)
    rows = read_labels(cfg, report)
    audio = open_audio_cache(cfg.name, rows, cache_dir(cfg), sample_rate, cfg.max_seconds, cfg.max_duration_policy)
    report.skips.extend(audio.skips)
    report.counts.update(audio.counts)
    report.enforce("audio")
    usable = [r for r in rows if r.id in audio.index]
    if not usable:
        raise CorpusError(f"{label_source(cfg)}: no utterance is left ({report.headline()})")
    return Corpus(cfg.name, label_source(cfg), list(cfg.classes), usable, audio, report)


# --------------------------------------------------------------------------------------------
# The built-in readers


def _read_manifest(source: Path, cfg: DictConfig, report: SkipReport) -> list[Utterance]:
    return read_manifest(source, list(cfg.classes), report, cfg.seed, cfg.val_fraction, cfg.test_fraction)


def _manifest_file(cfg: DictConfig) -> Path:
    if not cfg.path:
        raise CorpusError("data=manifest needs data.path=FILE.jsonl")
    return Path(cfg.path)


def _generate_synthetic(cfg: DictConfig) -> None:
    sizes = {"n_train": cfg.n_train, "n_val": cfg.n_val, "n_test": cfg.n_test}
    generate_corpus(cfg.root, seed=cfg.seed, max_seconds=cfg.max_seconds, **sizes)


def _check_iemocap(cfg: DictConfig) -> str | None:
    """The fold names one of IEMOCAP's five sessions."""
    return None if 1 <= cfg.fold <= 5 else f"'data.fold' must be 1..5 (the IEMOCAP session to test on), got {cfg.fold}"


def _read_iemocap(source: Path, cfg: DictConfig, report: SkipReport) -> list[Utterance]:
    return read_iemocap(
        source,
        list(cfg.classes),
        fold=cfg.fold,
        out_of_set=cfg.out_of_set_votes,
        multi_label=cfg.multi_label_votes,
        consensus_in_classes=cfg.consensus_in_classes,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        report=report,
    )


def _read_crema_d(source: Path, cfg: DictConfig, report: SkipReport) -> list[Utterance]:
    classes = list(cfg.classes)
    return read_crema_d(source, classes, cfg.out_of_set_votes, cfg.val_fraction, cfg.test_fraction, cfg.seed, report)


CORPORA.register("synthetic")(
    CorpusReader(_read_manifest, source=lambda cfg: Path(cfg.root) / "manifest.jsonl", prepare=_generate_synthetic)
)
CORPORA.register("manifest")(CorpusReader(_read_manifest, source=_manifest_file))
CORPORA.register("iemocap")(CorpusReader(_read_iemocap, check=_check_iemocap))
CORPORA.register("crema_d")(CorpusReader(_read_crema_d))
