"""The built-in synthetic speech corpus: the framework's default data, made locally from a seed.

Why it exists: the real corpora (IEMOCAP, CREMA-D audio) cannot ship with the framework, yet
every experiment must run end to end offline and on CPU. This corpus keeps the *labels* real
and makes the *audio* learnable and reproducible: what each clip holds (real CREMA-D votes, a
synthetic voice, a CoT written from its cues) is ``ambemo.data.synthetic_clips``; the dataset
card and its reference scores are ``ambemo.data.synthetic_card``. This module builds the
corpus folder, and ``python -m ambemo.data.synthetic OUT_DIR`` (``ambemo data``) runs it.

``generate_corpus`` is idempotent: a complete corpus with the same parameters is reused; a
build happens in a temporary sibling folder renamed into place, and ``corpus.json`` (the
completeness marker) is written last, so a killed run never leaves a corpus that looks complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from ambemo.data.atomic import build_folder, remove_stale_builds
from ambemo.data.synth_voice import espeak_version, private_library
from ambemo.data.synthetic_card import dataset_card, reference_scores
from ambemo.data.synthetic_clips import COT_READINGS, FORMAT_VERSION, cues_line, manifest_line, plan_clips, render_clips


def _is_complete(out_dir: Path, params: dict) -> bool:
    try:
        info = json.loads((out_dir / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        info.get("complete") is True
        and info.get("format_version") == FORMAT_VERSION
        and info.get("params") == params
        and (out_dir / "manifest.jsonl").is_file()
    )


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to build over a folder that holds something other than a (possibly incomplete) corpus."""
    looks_like_corpus = (out_dir / "manifest.jsonl").exists() or (out_dir / "corpus.json").exists()
    if out_dir.exists() and any(out_dir.iterdir()) and not looks_like_corpus:
        raise FileExistsError(f"{out_dir} is not empty and is not a synthetic corpus; refusing to replace it")


def _install(build: Path, out_dir: Path) -> None:
    """Move a finished build to ``out_dir``, replacing an old or incomplete corpus there."""
    if not out_dir.exists():
        build.rename(out_dir)
        return
    _check_replaceable(out_dir)
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    out_dir.rename(old)
    build.rename(out_dir)
    shutil.rmtree(old)


def generate_corpus(
    out_dir: str | Path,
    seed: int = 0,
    n_train: int = 1200,
    n_val: int = 150,
    n_test: int = 300,
    sample_rate: int = 16000,
    max_seconds: float = 3.0,
    workers: int = 2,
    cot_reading: str = "cues",
) -> Path:
    """Build (or reuse) the synthetic corpus in ``out_dir``; returns the path of its ``manifest.jsonl``.

    The output depends only on the parameters other than ``workers`` (byte-identical audio and
    manifest for the same seed). An existing complete corpus with the same parameters is
    returned untouched; anything else there that looks like a corpus is rebuilt.
    ``cot_reading`` is what the CoT's synthesis states: ``cues`` (what the voice implies) or
    ``latent`` (the hidden target itself, as a teacher that sees the votes would write).
    """
    out_dir = Path(out_dir).resolve()
    if n_train < 1 or n_test < 1 or n_val < 0 or seed < 0:
        raise ValueError("need n_train >= 1, n_test >= 1, n_val >= 0 and seed >= 0")
    if sample_rate <= 0 or max_seconds <= 0 or workers < 1:
        raise ValueError("sample_rate and max_seconds must be positive and workers >= 1")
    if cot_reading not in COT_READINGS:
        raise ValueError(f"cot_reading must be 'cues' or 'latent', got {cot_reading!r}")
    params = {
        "seed": int(seed),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_test": int(n_test),
        "sample_rate": int(sample_rate),
        "max_seconds": float(max_seconds),
        "cot_reading": cot_reading,
    }
    manifest = out_dir / "manifest.jsonl"
    if _is_complete(out_dir, params):
        return manifest
    _check_replaceable(out_dir)
    clips = plan_clips(seed, {"train": n_train, "val": n_val, "test": n_test})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out_dir)
    build = build_folder(out_dir)
    shutil.rmtree(build, ignore_errors=True)
    (build / "wav").mkdir(parents=True)
    try:
        rendered = render_clips(clips, build / "wav", sample_rate, max_seconds, workers)
        with tempfile.TemporaryDirectory(prefix="ambemo-espeak-") as lib_dir:
            provenance = {
                "espeak_ng": espeak_version(private_library(lib_dir)),
                "espeakng_loader": metadata.version("espeakng-loader"),
            }
        lines = "".join(manifest_line(c, cot_reading) + "\n" for c in clips)
        (build / "manifest.jsonl").write_text(lines, encoding="utf-8")
        (build / "cues.jsonl").write_text("".join(cues_line(c) + "\n" for c in clips), encoding="utf-8")
        reference = reference_scores(clips)
        (build / "reference.json").write_text(json.dumps(reference, indent=2) + "\n", encoding="utf-8")
        card = dataset_card(params, clips, rendered, reference, provenance)
        (build / "CARD.md").write_text(card, encoding="utf-8")
        info = {
            "format": "ambemo-synthetic",
            "format_version": FORMAT_VERSION,
            "params": params,
            "provenance": provenance,
            "truncated": int(sum(truncated for _, truncated in rendered.values())),
            "complete": True,
        }
        (build / "corpus.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if _is_complete(out_dir, params):  # a concurrent build finished first
            shutil.rmtree(build)
        else:
            _install(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m ambemo.data.synthetic OUT_DIR [--seed N] ...``: build the corpus and print its manifest path."""
    parser = argparse.ArgumentParser(prog="python -m ambemo.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-val", type=int, default=150)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--max-seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = generate_corpus(
        args.out_dir,
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        sample_rate=args.sample_rate,
        max_seconds=args.max_seconds,
        workers=args.workers,
    )
    print(f"{manifest} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
