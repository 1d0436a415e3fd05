"""The audio cache: a corpus's clips decoded once into a Hugging Face ``datasets`` table on disk.

Decoding, validating and resampling thousands of files takes minutes; it happens once per
corpus and configuration, on one process, and every later run (and every DDP rank) memory-maps
the result and reads no audio file at all.

Key: sha256 over ``FORMAT_VERSION``, the corpus name, the target sample rate, ``max_seconds``,
``max_duration_policy`` and, for every clip in label order, its id, audio path, file size and
modification time (``stat`` only, no read). Anything that changes what the model would hear (an
edited, replaced, added or removed file, a new rate or length cap) gives a new key and so a new
folder ``<cache_dir>/<corpus>-<key[:16]>``; a stale table is never used. Labels, classes, folds,
seeds and ``on_bad_*`` switches are not in the key: they are applied after the cache is read, so
changing them costs no audio decoding. Old folders are not deleted automatically; removing
``cache_dir`` is always safe.

A folder holds ``table/`` (``Dataset.save_to_disk``: id, audio as float32 samples, the file's
duration, source rate, channels, whether it was truncated) and ``cache.json`` (what was skipped
and why, what was resampled/mixed down/truncated). It is built in a hidden sibling and renamed
into place with ``cache.json`` written last, so a killed build never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, List, Value, load_from_disk

from ambemo.data.atomic import build_folder, remove_stale_builds
from ambemo.data.audio import AudioProblem, decode
from ambemo.data.manifest import Utterance
from ambemo.data.skips import CorpusError, Skip

#: Bump when what a table holds changes, so old tables are rebuilt.
FORMAT_VERSION = 1
FEATURES = Features(
    {
        "id": Value("string"),
        "audio": List(Value("float32")),
        "seconds": Value("float32"),
        "source_rate": Value("int32"),
        "channels": Value("int32"),
        "truncated": Value("bool"),
    }
)


@dataclass
class AudioCache:
    """A built table, opened (memory-mapped), and what its build skipped or changed."""

    folder: Path
    table: Dataset
    index: dict[str, int]
    skips: list[Skip]
    counts: dict[str, float]

    def samples(self, uid: str) -> np.ndarray:
        """Mono float32 samples of clip ``uid`` at the cache's rate."""
        return self.table[self.index[uid]]["audio"]

    def seconds(self, uids: Sequence[str]) -> np.ndarray:
        """Durations of the clips' files (before truncation), in ``uids`` order."""
        column = np.asarray(self.table["seconds"])
        return column[[self.index[u] for u in uids]] if uids else column[:0]


def _file_state(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def cache_key(name: str, rows: Sequence[Utterance], sample_rate: int, max_seconds: float, policy: str) -> str:
    """The hex key of a corpus's audio table (see the module docstring for what goes in)."""
    digest = hashlib.sha256()
    params = [FORMAT_VERSION, name, int(sample_rate), float(max_seconds), policy]
    digest.update(json.dumps(params).encode())
    for row in rows:
        digest.update(json.dumps([row.id, str(row.audio), _file_state(row.audio)]).encode())
    return digest.hexdigest()


def _is_complete(folder: Path) -> bool:
    return (folder / "cache.json").is_file() and (folder / "table").is_dir()


def _build(folder: Path, rows: Sequence[Utterance], sample_rate: int, max_seconds: float, policy: str) -> None:
    skips: list[Skip] = []
    counts: Counter[str] = Counter()
    kept = 0

    def clips() -> Iterator[dict]:
        for row in rows:
            try:
                clip = decode(row.audio, sample_rate, max_seconds, skip_long=policy == "skip")
            except AudioProblem as problem:
                skips.append(Skip(problem.kind, f"{row.audio} ({row.source})", problem.reason, problem.detail))
                continue
            if clip.source_rate != sample_rate:
                counts[f"resampled from {clip.source_rate} Hz"] += 1
            if clip.channels > 1:
                counts[f"mixed down from {clip.channels} channels"] += 1
            if clip.truncated:
                counts["truncated to max_seconds"] += 1
            nonlocal kept
            kept += 1
            yield {
                "id": row.id,
                "audio": clip.samples,
                "seconds": clip.seconds,
                "source_rate": clip.source_rate,
                "channels": clip.channels,
                "truncated": clip.truncated,
            }

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CorpusError(f"cannot create the audio cache in {folder.parent} ({err}); set data.cache_dir=DIR") from None
    remove_stale_builds(folder)
    build = build_folder(folder)
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    started = time.time()
    print(f"[ambemo] decoding {len(rows)} clips once into the audio cache {folder}")
    try:
        table = Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
        try:
            table = Dataset.from_generator(clips, features=FEATURES, cache_dir=str(build / "generator"))
        except ValueError:  # some datasets versions refuse a generator that yields nothing
            if kept:
                raise
        # Every clip skipped: keep an empty table (one shard, so it loads), which records that.
        table.save_to_disk(str(build / "table"), num_shards=None if kept else 1)
        del table
        shutil.rmtree(build / "generator", ignore_errors=True)
        info = {
            "format_version": FORMAT_VERSION,
            "sample_rate": sample_rate,
            "max_seconds": max_seconds,
            "max_duration_policy": policy,
            "clips": len(rows),
            "build_seconds": round(time.time() - started, 1),
            "skips": [asdict(s) for s in skips],
            "counts": dict(counts),
        }
        (build / "cache.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        if _is_complete(folder):  # a concurrent build (another node) finished first
            shutil.rmtree(build)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete leftover
            build.rename(folder)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def open_audio_cache(
    name: str,
    rows: Sequence[Utterance],
    cache_dir: str | Path,
    sample_rate: int,
    max_seconds: float,
    policy: str = "truncate",
) -> AudioCache:
    """The audio table for ``rows``, built first if no table with the same key exists."""
    folder = Path(cache_dir) / f"{name}-{cache_key(name, rows, sample_rate, max_seconds, policy)[:16]}"
    if not _is_complete(folder):
        _build(folder, rows, sample_rate, max_seconds, policy)
    info = json.loads((folder / "cache.json").read_text(encoding="utf-8"))
    table = load_from_disk(str(folder / "table")).with_format("numpy")
    index = {str(uid): i for i, uid in enumerate(table["id"])}
    return AudioCache(folder, table, index, [Skip(**s) for s in info["skips"]], info["counts"])
