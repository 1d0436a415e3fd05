"""From a data config to a corpus ready to serve: labels from its reader, audio from the cache.

The DataModule and ``ambemo data summary`` both go through ``load_corpus``, so they see exactly
the same utterances and the same skips.

Readers (``data.name``) are ``CorpusReader`` entries of ``ambemo.registry.CORPORA``; the built-in
ones register below: ``synthetic`` (the built-in corpus, generated on first use into
``data.root``), ``manifest`` (``data.path``, a JSONL file), ``iemocap`` (``data.root`` =
IEMOCAP_full_release) and ``crema_d`` (``data.root`` = a CREMA-D copy). A corpus from outside the
package registers its own reader the same way (docs/extending.md, "Adding a corpus"). The audio
cache goes to ``data.cache_dir``, by default ``.ambemo-cache/`` in the corpus folder
(``data.root``, or the manifest's folder).

Each built-in reader names its settings class, declared beside it below (``SyntheticConfig``,
``ManifestConfig``, ``IEMOCAPConfig``, ``CremaDConfig``): ``cfg.data`` holds ``DataConfig``'s
keys, which every corpus has, and the chosen corpus's own, each checked by its class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from omegaconf import DictConfig

from ambemo.data.audio import TARGET_RATE
from ambemo.data.cache import AudioCache, open_audio_cache
from ambemo.data.crema_d import read_crema_d
from ambemo.data.iemocap import read_iemocap
from ambemo.data.manifest import OUT_OF_SET, Utterance, manifest_classes, read_manifest
from ambemo.data.settings import DataConfig
from ambemo.data.skips import CorpusError, SkipReport
from ambemo.data.synthetic import generate_corpus
from ambemo.errors import ConfigError
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
    settings: type[DataConfig] = DataConfig
    """The corpus's settings class: the schema of ``cfg.data`` when this corpus is chosen, a
    ``DataConfig`` subclass with the corpus's own fields, which its ``check`` validates."""


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
# The built-in readers and their settings


@dataclass
class SyntheticConfig(DataConfig):
    """The built-in synthetic corpus's settings: its split sizes (it is generated with them)."""

    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {k: (0, True) for k in ("n_train", "n_val", "n_test")}

    n_train: int = 1200
    """Synthetic corpus: number of training clips."""
    n_val: int = 150
    """Synthetic corpus: number of validation clips."""
    n_test: int = 300
    """Synthetic corpus: number of test clips."""


@dataclass
class SpeakerSplitsConfig(DataConfig):
    """Seeded speaker-disjoint validation and test shares (``manifest``, ``crema_d``)."""

    val_fraction: float = 0.1
    """Seeded validation share of the speakers (``crema_d``; ``manifest`` lines without a split)."""
    test_fraction: float = 0.1
    """Seeded test share of the speakers (``crema_d``; ``manifest`` lines without a split)."""

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        data = cfg.data
        if min(data.val_fraction, data.test_fraction) < 0 or data.val_fraction + data.test_fraction >= 1:
            raise ConfigError("'data.val_fraction' and 'data.test_fraction' must be >= 0 with a sum below 1")


@dataclass
class OutOfSetVotesConfig(DataConfig):
    """What happens to votes for categories outside ``classes`` (``iemocap``, ``crema_d``)."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"out_of_set_votes": OUT_OF_SET}

    out_of_set_votes: str = "renormalise"
    """Votes for categories outside ``classes`` (``iemocap``, ``crema_d``): ``renormalise`` drops them
    and normalises the rest; ``drop_utterance`` skips the utterance. Both are counted."""


@dataclass
class ManifestConfig(SpeakerSplitsConfig):
    """A JSONL manifest's settings: the file, and the split shares of its lines without a split."""

    path: str | None = None
    """``manifest``: the JSONL manifest file (its audio paths are relative to it)."""

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        data = cfg.data
        if not data.path:
            raise ConfigError("data=manifest needs data.path=FILE.jsonl")
        if not data.classes:  # filled before the shared checks, which need at least two classes
            try:
                data.classes = manifest_classes(data.path)
            except ValueError as err:
                raise ConfigError(f"data.classes=[] takes the manifest's class names, but {err}") from None
        super().check(cfg)


@dataclass
class IEMOCAPConfig(OutOfSetVotesConfig):
    """IEMOCAP's settings: the leave-one-session-out fold, its validation dialogs, how the
    evaluators' judgements become votes."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"multi_label_votes": ("each", "split")}

    fold: int = 1
    """``iemocap``: leave-one-session-out fold k in 1..5: test = Session k, val = a seeded
    ``val_fraction`` of the other four sessions' dialogs, train = the rest."""
    val_fraction: float = 0.1
    """Seeded validation share of the training sessions' dialogs (``iemocap``)."""
    multi_label_votes: str = "each"
    """``iemocap``: an evaluator naming k categories gives each one vote (``each``) or 1/k (``split``)."""
    consensus_in_classes: bool = False
    """``iemocap``: keep only utterances whose consensus label is one of ``classes`` (the usual
    5,531-utterance set with the 4 classes)."""

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        data = cfg.data
        if not 1 <= data.fold <= 5:
            raise ConfigError(f"'data.fold' must be 1..5 (the IEMOCAP session to test on), got {data.fold}")
        if not 0 <= data.val_fraction < 1:
            raise ConfigError(f"'data.val_fraction' must be >= 0 and below 1, got {data.val_fraction}")


@dataclass
class CremaDConfig(SpeakerSplitsConfig, OutOfSetVotesConfig):
    """CREMA-D's settings: the seeded actor-disjoint splits and the out-of-set votes."""


def _read_manifest(source: Path, cfg: DictConfig, report: SkipReport) -> list[Utterance]:
    return read_manifest(source, list(cfg.classes), report, cfg.seed, cfg.val_fraction, cfg.test_fraction)


def _manifest_file(cfg: DictConfig) -> Path:
    if not cfg.path:
        raise CorpusError("data=manifest needs data.path=FILE.jsonl")
    return Path(cfg.path)


def _read_synthetic(source: Path, cfg: DictConfig, report: SkipReport) -> list[Utterance]:
    # every line of the generated manifest has its split: no shares to fill others with
    return read_manifest(source, list(cfg.classes), report, cfg.seed)


def _generate_synthetic(cfg: DictConfig) -> None:
    sizes = {"n_train": cfg.n_train, "n_val": cfg.n_val, "n_test": cfg.n_test}
    generate_corpus(cfg.root, seed=cfg.seed, max_seconds=cfg.max_seconds, **sizes)


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
    CorpusReader(
        _read_synthetic,
        source=lambda cfg: Path(cfg.root) / "manifest.jsonl",
        prepare=_generate_synthetic,
        settings=SyntheticConfig,
    )
)
CORPORA.register("manifest")(CorpusReader(_read_manifest, source=_manifest_file, settings=ManifestConfig))
CORPORA.register("iemocap")(CorpusReader(_read_iemocap, settings=IEMOCAPConfig))
CORPORA.register("crema_d")(CorpusReader(_read_crema_d, settings=CremaDConfig))
