"""The settings every corpus has: ``DataConfig``, the base of each corpus's settings class.

A corpus reader (``ambemo.data.corpus.CorpusReader``) names its settings class, a subclass of
``DataConfig`` declared beside it with the settings only that corpus reads; ``cfg.data`` is typed by
the chosen corpus's class (``ambemo.config.corpus_settings``). The built-in corpora's are in
``ambemo.data.corpus``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from omegaconf import DictConfig

from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.errors import ConfigError
from ambemo.schema import SectionSettings


@dataclass
class DataConfig(SectionSettings):
    """Settings every corpus has: which one, its classes, the audio limits, the bad-input policies,
    the caches and the batching.

    Each corpus's own settings are a subclass, declared beside its reader and named by the
    reader's ``settings`` (``ambemo.data.corpus.IEMOCAPConfig``...); ``cfg.data`` is typed by the
    chosen corpus's class (``corpus_settings``). A corpus whose reader names none (a plugin's)
    has these settings only."""

    SECTION: ClassVar[str] = "data"
    NOUN: ClassVar[str] = "corpus"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "on_bad_labels": ("error", "skip"),
        "on_bad_audio": ("error", "skip"),
        "max_duration_policy": ("truncate", "skip"),
    }
    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {
        k: (0, True) for k in ("num_workers", "limit_train", "limit_eval")
    }

    name: str = "synthetic"
    """Corpus reader (registered in ``ambemo.registry.CORPORA``): ``synthetic`` (the built-in speech
    corpus, generated on first use), ``manifest`` (a JSONL manifest, ``path``), ``iemocap`` (the
    official release), ``crema_d`` (a CREMA-D copy), or a plugin's."""
    root: str = "data/builtin"
    """Folder of the corpus, relative to the working directory: ``synthetic``: where it is generated;
    ``iemocap``: the IEMOCAP_full_release folder; ``crema_d``: the folder with AudioWAV/ and
    processedResults/ (``manifest`` reads ``path`` instead)."""
    classes: list[str] = field(default_factory=lambda: list(CREMA_D_CLASSES))
    """Emotion classes in label order; the read-out scores exactly these names. With ``manifest``,
    ``[]`` takes the manifest's class names, sorted alphabetically."""
    seed: int = 0
    """Seed of the synthetic corpus (clip sampling, prosody jitter, vote redraw, splits) and of the
    other corpora's seeded splits (CREMA-D actors, manifest lines without a split, IEMOCAP val dialogs)."""
    on_bad_labels: str = "error"
    """A bad label line (not JSON, unknown class, negative/NaN/zero votes, duplicate id...): ``error``
    names every one with file and line and stops; ``skip`` leaves them out, counted and listed."""
    on_bad_audio: str = "error"
    """A missing, unreadable, corrupt, empty, too short or silent audio file, or one below 4 kHz:
    ``error`` names every one and stops; ``skip`` leaves them out, counted and listed."""
    max_seconds: float = 3.0
    """Longest audio in seconds (see ``max_duration_policy``)."""
    max_duration_policy: str = "truncate"
    """Clips longer than ``max_seconds``: ``truncate`` (keep the start) or ``skip``; both are counted."""
    cache_dir: str | None = None
    """Where decoded 16 kHz audio is cached (HF ``datasets`` tables keyed by the audio files and
    audio settings); None = ``.ambemo-cache/`` in the corpus folder (``root``, or the manifest's)."""
    batch_size: int = 32
    """Training batch size (per device)."""
    bucket_by_length: bool = False
    """Training batches of similar length (shuffled groups of ~50 batches sorted by estimated tokens:
    audio seconds x 25 + text characters / 4), so less of each batch is padding. Batch order and
    membership stay random from epoch to epoch, but less so than plain shuffling."""
    eval_batch_size: int = 64
    """Validation/test batch size (per device); evaluation generates, so it is memory-bound differently."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the main process; features are cached in memory)."""
    cot_store: str | None = None
    """Curated CoT store (JSONL from ``ambemo curate``): its accepted reasoning replaces the
    corpus's own for the training clips it covers."""
    cache_encoded: bool = True
    """Keep each clip's encoded prompt (token ids, log-mel features) in memory after first use, so
    features are extracted once, not every epoch. About 150 KB per clip with 3 s windows, 1.5 MB
    with Qwen2-Audio's 30 s windows: turn off for large corpora on small hosts."""
    limit_train: int = 0
    """Use only the first N training clips (0 = all). For quick experiments and tests."""
    limit_eval: int = 0
    """Use only the first N validation and test clips each (0 = all)."""

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        data = cfg.data
        if len(set(data.classes)) != len(data.classes) or len(data.classes) < 2:
            raise ConfigError(f"data.classes must list at least two distinct names, got {list(data.classes)}")
        for key in ("batch_size", "eval_batch_size"):
            if data[key] < 1:
                raise ConfigError(f"'data.{key}' must be >= 1")
        if data.max_seconds <= 0:
            raise ConfigError("'data.max_seconds' must be > 0")
