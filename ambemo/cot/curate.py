"""``ambemo curate``: write verified structured CoTs for a corpus's training split into a store.

    ambemo curate MANIFEST_OR_CORPUS_DIR --store STORE.jsonl [--model M] [--concurrency N]
        [--max-cost USD] [--dry-run] [--text-only] [--max-attempts K] [--threshold T] [--limit N]
        [--classes a,b,c | crema_d | iemocap] [--skip-failed] [--config FILE.yaml]
        [--report FILE.json] [--no-progress] [key=value ...]

Only the ``train`` split is curated: a rationale is written with the human votes in view, so
one for a validation or test clip would leak its label. The endpoint and key come from
``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; every other setting is ``CurateConfig``
(``ambemo/cot/config.py``, defaults in ``conf/curate/default.yaml``).

Per clip: up to ``max_attempts`` times, ask for a rationale, validate it, let a reader predict a
distribution from the rationale alone, and accept when JS(reader, votes) <= ``threshold`` bits.
Every finished clip is one fsynced line in the store, written by the worker that finished it;
a rerun skips every clip whose key already has a final record (``accepted`` / ``rejected``) and
retries ``failed`` ones (``--skip-failed`` leaves them). ``--max-cost`` stops new requests once
this run's spend, from the API's ``usage``, reaches the ceiling; ``--dry-run`` only estimates.

Exit status: 0 when every due clip got a final record, 3 when some failed or were not started
(rerun to retry them), 2 for a usage or configuration error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from ambemo.cot import protocol
from ambemo.cot.acoustics import describe_file
from ambemo.cot.budget import Budget, Usage
from ambemo.cot.client import ApiFailure, CurationClient, audio_part
from ambemo.cot.config import CurateConfig, load_config, price_for
from ambemo.cot.store import FINAL, STORE_VERSION, CotStore, Key, read_store
from ambemo.data.labels import LABEL_SETS
from ambemo.data.manifest import ManifestError, Utterance, read_manifest
from ambemo.metrics.functional import js_divergence
from ambemo.model.prompts import format_cot

log = logging.getLogger(__name__)
EXIT_OK, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 2, 3, 130
_SHOW_FAILURES = 10


@dataclass(frozen=True)
class Job:
    """One training clip due for curation."""

    utt: Utterance
    sha256: str
    key: Key


@dataclass
class Report:
    """What a run did (or, with ``dry_run``, would cost). ``as_dict`` is what ``--report`` writes."""

    manifest: str
    store: str
    model: str
    mode: str
    prompt_version: str
    endpoint: str | None = None
    dry_run: bool = False
    train_clips: int = 0
    already_done: int = 0
    unreadable: int = 0
    """Training clips whose audio could not be read (listed in ``failures``, not stored)."""
    skipped_failed: int = 0
    due: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    not_started: int = 0
    attempts: int = 0
    verified_attempts: int = 0
    accepted_first_attempt: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    stopped: str | None = None
    interrupted: bool = False
    repaired_truncated_line: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    store_counts: dict[str, int] = field(default_factory=dict)
    store_cost_usd: float = 0.0
    """Spend recorded in the store over all runs (this run's is ``cost_usd``)."""
    estimate: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted share of the clips that reached a verdict this run."""
        decided = self.accepted + self.rejected
        return self.accepted / decided if decided else None

    @property
    def complete(self) -> bool:
        return not self.dry_run and self.failed == 0 and self.not_started == 0 and self.unreadable == 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usage"] = self.usage.as_dict()
        out["acceptance_rate"] = self.acceptance_rate
        out["failures"] = [{"id": i, "reason": r} for i, r in self.failures]
        return out

    def format(self) -> str:
        lines = [
            f"[ambemo curate] {self.manifest} -> {self.store}",
            f"  model {self.model} ({self.mode} input), prompt {self.prompt_version}"
            + (f", endpoint {self.endpoint}" if self.endpoint else ""),
            f"  training clips {self.train_clips}: {self.already_done} already final in the store"
            + (f", {self.skipped_failed} failed ones skipped" if self.skipped_failed else "")
            + (f", {self.unreadable} with unreadable audio" if self.unreadable else "")
            + f", {self.due} due",
        ]
        if self.dry_run:
            e = self.estimate
            audio = f"{e['audio_seconds']:.1f} s of audio; " if self.mode == "audio" else ""
            lines += [
                f"  dry run, no requests: {audio}estimated tokens for one attempt per clip: input "
                f"{e['input_tokens']:,} (audio {e['audio_tokens']:,}), output {e['output_tokens']:,} "
                f"in {e['requests']:,} requests",
                f"  estimated cost ${e['cost_usd']:.4f} (one attempt per clip), at most ${e['cost_max_usd']:.4f} "
                f"({e['max_attempts']} attempts per clip)",
            ]
            return "\n".join(lines)
        rate = f"{100 * self.acceptance_rate:.1f} %" if self.acceptance_rate is not None else "n/a"
        u = self.usage
        lines += [
            f"  accepted {self.accepted}, rejected {self.rejected}, failed {self.failed}, "
            f"not started {self.not_started}",
            f"  acceptance rate {rate} (accepted / (accepted + rejected)); attempts {self.attempts}, "
            f"{self.verified_attempts} verified, {self.accepted_first_attempt} clips accepted at the first attempt",
            f"  tokens: input {u.input_tokens:,} (audio {u.audio_tokens:,}), output {u.output_tokens:,} "
            f"in {u.requests:,} requests; cost ${self.cost_usd:.4f} (from the API's usage)",
        ]
        if self.repaired_truncated_line:
            lines.append("  removed a truncated last line left in the store by a killed run")
        if self.stopped:
            lines.append(f"  stopped early: {self.stopped}")
        for uid, reason in self.failures[:_SHOW_FAILURES]:
            lines.append(f"  failed {uid}: {reason}")
        if len(self.failures) > _SHOW_FAILURES:
            lines.append(f"  ... {len(self.failures) - _SHOW_FAILURES} more failures (see the store)")
        counts = ", ".join(f"{k} {v}" for k, v in self.store_counts.items())
        lines.append(f"  store now: {counts}; ${self.store_cost_usd:.4f} spent over all runs; {self.wall_s:.1f} s")
        return "\n".join(lines)


def resolve_manifest(source: str | Path) -> Path:
    """A manifest path, or a corpus folder holding ``manifest.jsonl``."""
    path = Path(source)
    manifest = path / "manifest.jsonl" if path.is_dir() else path
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: no such manifest (give a manifest.jsonl or a corpus folder)")
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan(cfg: CurateConfig, manifest: Path, existing: dict[Key, dict], retry_failed: bool) -> tuple[list[Job], dict]:
    """The training clips, keyed; returns (due jobs, counts of what is skipped and why).

    A clip whose audio cannot be read has no key, so it is listed in ``counts["unreadable"]``
    (and the report) rather than stored; the others go ahead.
    """
    train = [u for u in read_manifest(manifest, cfg.classes) if u.split == "train"]
    if cfg.limit:
        train = train[: cfg.limit]
    version = protocol.prompt_version(cfg.text_only)
    due: list[Job] = []
    counts: dict[str, Any] = {"train_clips": len(train), "already_done": 0, "skipped_failed": 0, "unreadable": []}
    for utt in train:
        try:
            sha = _sha256(utt.audio)
        except OSError as err:  # no key without the audio: reported, not stored
            counts["unreadable"].append((utt.id, f"cannot read audio {utt.audio}: {err.strerror or err}"))
            continue
        key: Key = (utt.id, sha, version, cfg.model)
        previous = existing.get(key)
        if previous is not None and previous["status"] in FINAL:
            counts["already_done"] += 1
        elif previous is not None and not retry_failed:
            counts["skipped_failed"] += 1
        else:
            due.append(Job(utt, sha, key))
    return due, counts


def estimate(cfg: CurateConfig, jobs: Sequence[Job]) -> dict[str, Any]:
    """Dry-run token and cost estimate: text tokens from characters, audio tokens from seconds.

    One attempt per clip (a rationale and a verification); ``cost_max_usd`` assumes every clip
    uses all ``max_attempts``. In text-only mode the first clip's descriptors stand for all.
    """
    cpt = cfg.chars_per_token
    descriptors = describe_file(jobs[0].utt.audio) if cfg.text_only and jobs else None
    reader_text = protocol.verification_text(cfg.classes, "x" * int(cfg.est_output_tokens * cpt))
    verify_in = round((len(protocol.VERIFY_SYSTEM) + len(reader_text)) / cpt)
    usage, seconds = Usage(), 0.0
    for job in jobs:
        text = protocol.generation_text(cfg.classes, job.utt.distribution, job.utt.transcript, descriptors)
        audio_tokens = 0
        if not cfg.text_only:
            try:
                duration = sf.info(str(job.utt.audio)).duration
            except (RuntimeError, sf.LibsndfileError):  # counted as failed in a real run; free here
                duration = 0.0
            seconds += duration
            audio_tokens = round(duration * cfg.audio_tokens_per_second)
        prompt = round((len(protocol.GENERATE_SYSTEM) + len(text)) / cpt) + audio_tokens
        usage = usage + Usage(2, prompt + verify_in, audio_tokens, cfg.est_output_tokens + cfg.est_verify_output_tokens)
    price = price_for(cfg)
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "audio_tokens": usage.audio_tokens,
        "output_tokens": usage.output_tokens,
        "audio_seconds": seconds,
        "cost_usd": usage.cost(price),
        "cost_max_usd": usage.cost(price) * cfg.max_attempts,
        "max_attempts": cfg.max_attempts,
    }


class Curator:
    """Processes jobs on a thread pool; each worker writes its clip's record to the store itself."""

    def __init__(self, cfg: CurateConfig, client: CurationClient, store: CotStore, budget: Budget) -> None:
        self.cfg = cfg
        self.client = client
        self.store = store
        self.budget = budget

    def _record(self, job: Job, status: str, attempts: list[dict], usage: Usage, **extra: Any) -> dict:
        u = job.utt
        record = {
            "store_version": STORE_VERSION,
            "id": u.id,
            "audio_sha256": job.sha256,
            "prompt_version": job.key[2],
            "model": self.cfg.model,
            "status": status,
            "cot": None,
            "js": None,
            "verified": None,
            "reason": None,
            "classes": list(self.cfg.classes),
            "target": list(u.distribution),
            "threshold": self.cfg.threshold,
            "attempts": attempts,
            "usage": usage.as_dict(),
            "cost_usd": usage.cost(self.budget.price),
            "mode": "text" if self.cfg.text_only else "audio",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        self.store.append(record)
        return record

    def process(self, job: Job) -> dict | None:
        """Curate one clip; returns its (already stored) record, or None if it never started."""
        if not self.budget.may_request():
            return None
        try:
            return self._attempts(job)
        except Exception as err:  # a bug must cost one clip, not the run
            log.debug("clip %s: %s", job.utt.id, self.client.redact(traceback.format_exc()))
            reason = self.client.redact(f"internal error: {type(err).__name__}: {err}")
            return self._record(job, "failed", [], Usage(), reason=reason)

    def _attempts(self, job: Job) -> dict | None:
        cfg, u = self.cfg, job.utt
        try:
            data = u.audio.read_bytes()
            if hashlib.sha256(data).hexdigest() != job.sha256:
                return self._record(job, "failed", [], Usage(), reason="audio file changed during the run")
            audio = None if cfg.text_only else audio_part(u.audio, data)
            descriptors = describe_file(io.BytesIO(data)) if cfg.text_only else None
        except (OSError, RuntimeError, ValueError, sf.LibsndfileError) as err:
            return self._record(job, "failed", [], Usage(), reason=f"cannot read audio {u.audio.name}: {err}")
        attempts: list[dict] = []
        usage = Usage()
        previous: tuple[str, Sequence[float]] | None = None
        target = torch.tensor(u.distribution, dtype=torch.float64)

        def stop(reason: str) -> dict | None:
            if not usage.requests and not attempts:
                return None  # nothing was sent for this clip: not started, nothing to record
            return self._record(job, "failed", attempts, usage, reason=reason)

        for _ in range(cfg.max_attempts):
            if not self.budget.may_request():
                return stop(f"stopped before attempt {len(attempts) + 1}: {self.budget.stop_reason}")
            try:
                answer = self.client.rationale(audio, descriptors, u.transcript, u.distribution, previous)
            except ApiFailure as failure:
                return self._fail(job, attempts, usage, failure)
            usage = usage + answer.usage
            self.budget.add(answer.usage)
            if answer.invalid is not None:
                attempts.append(_attempt(None, None, None, "invalid", answer.invalid))
                continue
            cot_text = format_cot(answer.value)
            if not self.budget.may_request():
                attempts.append(_attempt(cot_text, None, None, "unverified", "stopped before verification"))
                return stop(f"stopped before verification: {self.budget.stop_reason}")
            try:
                reading = self.client.verify(cot_text)
            except ApiFailure as failure:
                attempts.append(_attempt(cot_text, None, None, "unverified", failure.reason))
                return self._fail(job, attempts, usage, failure)
            usage = usage + reading.usage
            self.budget.add(reading.usage)
            if reading.invalid is not None:
                attempts.append(_attempt(cot_text, None, None, "invalid", f"verification: {reading.invalid}"))
                continue
            verified = list(reading.value.distribution)
            js = float(js_divergence(torch.tensor(verified, dtype=torch.float64), target))
            if js <= cfg.threshold:
                attempts.append(_attempt(cot_text, verified, js, "accepted", None))
                return self._record(job, "accepted", attempts, usage, cot=cot_text, js=js, verified=verified)
            attempts.append(_attempt(cot_text, verified, js, "rejected", f"JS {js:.3f} > threshold {cfg.threshold}"))
            if cfg.feedback:
                previous = (protocol.rationale_for_reader(cot_text), verified)
        verified_attempts = [a for a in attempts if a["js"] is not None]
        best = min(verified_attempts, key=lambda a: a["js"]) if verified_attempts else None
        reasons = "; ".join(f"{i + 1}: {a['reason']}" for i, a in enumerate(attempts))
        return self._record(
            job,
            "rejected",
            attempts,
            usage,
            js=best["js"] if best else None,
            verified=best["verified"] if best else None,
            reason=f"no attempt accepted ({reasons})"[:1000],
        )

    def _fail(self, job: Job, attempts: list[dict], usage: Usage, failure: ApiFailure) -> dict:
        if failure.fatal:
            self.budget.halt(f"no clip can succeed: {failure.reason}")
        return self._record(job, "failed", attempts, usage, reason=failure.reason)


def _attempt(cot: str | None, verified: list[float] | None, js: float | None, outcome: str, reason: str | None) -> dict:
    return {"cot": cot, "verified": verified, "js": js, "outcome": outcome, "reason": reason}


def curate(
    cfg: CurateConfig,
    source: str | Path,
    store_path: str | Path,
    *,
    dry_run: bool = False,
    retry_failed: bool = True,
    progress: bool = True,
    client: CurationClient | None = None,
) -> Report:
    """Curate the training split of ``source`` into ``store_path`` (see the module docstring)."""
    started = time.time()
    manifest = resolve_manifest(source)
    price = price_for(cfg)  # fail before any work when the run could not be costed
    report = Report(
        manifest=str(manifest),
        store=str(store_path),
        model=cfg.model,
        mode="text" if cfg.text_only else "audio",
        prompt_version=protocol.prompt_version(cfg.text_only),
        dry_run=dry_run,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors from many threads: intra-op threads only contend
    try:
        if dry_run:
            jobs, counts = plan(cfg, manifest, read_store(store_path).latest(), retry_failed)
            _fill_plan(report, jobs, counts)
            report.estimate = estimate(cfg, jobs)
            report.store_counts = read_store(store_path).counts()
            return report
        client = client or CurationClient(cfg)
        report.endpoint = client.endpoint
        print(f"[ambemo curate] requests go to {client.describe_endpoint()}, model {cfg.model}", file=sys.stderr)
        with CotStore(store_path) as store:
            report.repaired_truncated_line = store.repaired_tail
            jobs, counts = plan(cfg, manifest, store.contents.latest(), retry_failed)
            _fill_plan(report, jobs, counts)
            budget = Budget(price, cfg.max_cost)
            _run(Curator(cfg, client, store, budget), jobs, report, progress)
            report.usage = budget.usage
            report.cost_usd = budget.spent
            report.stopped = budget.stop_reason
        after = read_store(store_path)
        report.store_counts, report.store_cost_usd = after.counts(), after.total_cost()
        return report
    finally:
        torch.set_num_threads(threads)
        report.wall_s = time.time() - started


def _fill_plan(report: Report, jobs: list[Job], counts: dict) -> None:
    report.train_clips = counts["train_clips"]
    report.already_done = counts["already_done"]
    report.skipped_failed = counts["skipped_failed"]
    report.due = len(jobs)
    report.unreadable = len(counts["unreadable"])
    report.failures.extend(counts["unreadable"])


def _run(curator: Curator, jobs: list[Job], report: Report, progress: bool) -> None:
    from tqdm.auto import tqdm

    budget, cfg = curator.budget, curator.cfg
    bar = tqdm(total=len(jobs), unit="clip", desc="curate", disable=not progress or None, dynamic_ncols=True)
    consecutive = 0
    handled: set[Future] = set()

    def handle(future: Future) -> None:
        nonlocal consecutive
        handled.add(future)
        record = None if future.cancelled() else future.result()
        bar.update(1)
        if record is None:
            report.not_started += 1
        else:
            status = record["status"]
            setattr(report, status, getattr(report, status) + 1)
            report.attempts += len(record["attempts"])
            report.verified_attempts += sum(a["js"] is not None for a in record["attempts"])
            report.accepted_first_attempt += status == "accepted" and len(record["attempts"]) == 1
            if status == "failed":
                report.failures.append((record["id"], record["reason"]))
                consecutive += 1
                limit = cfg.max_consecutive_failures
                if limit and consecutive >= limit and not budget.stop.is_set():
                    budget.halt(f"{consecutive} clips failed in a row; last: {record['reason']}")
            else:
                consecutive = 0
        bar.set_postfix_str(
            f"ok {report.accepted} rej {report.rejected} fail {report.failed} ${budget.spent:.4f}", refresh=False
        )

    pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="curate")
    futures = [pool.submit(curator.process, job) for job in jobs]
    try:
        for future in as_completed(futures):
            handle(future)
    except KeyboardInterrupt:
        report.interrupted = True
        budget.halt("interrupted")
        pool.shutdown(wait=True, cancel_futures=True)  # in-flight requests finish and are recorded
        for future in futures:
            if future not in handled:
                handle(future)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _classes(value: str) -> list[str]:
    names = LABEL_SETS.get(value)
    return list(names) if names else [c.strip() for c in value.split(",") if c.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ambemo curate",
        description="Write verified structured CoTs for the training split of a corpus (see ambemo/cot/curate.py).",
        epilog="Extra key=value arguments set any CurateConfig field (ambemo/cot/config.py), e.g. temperature=0.5. "
        "The endpoint and key come from OPENAI_BASE_URL and OPENAI_API_KEY.",
    )
    parser.add_argument("source", help="manifest.jsonl or a corpus folder holding one")
    parser.add_argument("overrides", nargs="*", help="key=value settings (CurateConfig fields)")
    parser.add_argument("--store", required=True, help="the JSONL CoT store (created, or resumed)")
    parser.add_argument("--model", help="model name (default from conf/curate/default.yaml)")
    parser.add_argument("--concurrency", type=int, help="clips in flight at once")
    parser.add_argument("--max-cost", type=float, help="stop new requests once this run spent this many USD")
    parser.add_argument("--dry-run", action="store_true", help="estimate tokens and cost; send nothing")
    parser.add_argument("--text-only", action="store_true", help="send measured acoustic descriptors, not audio")
    parser.add_argument("--max-attempts", type=int, help="rationales per clip before it is rejected")
    parser.add_argument("--threshold", type=float, help="accept when JS(reader, votes) <= this (bits)")
    parser.add_argument("--limit", type=int, help="only the first N training clips")
    parser.add_argument("--classes", type=_classes, help="comma-separated classes, or crema_d / iemocap")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry clips whose last record failed")
    parser.add_argument("--config", help="a YAML file of CurateConfig settings")
    parser.add_argument("--report", help="also write the final report as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


_FLAGS = ("model", "concurrency", "max_cost", "max_attempts", "threshold", "limit", "classes")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ambemo curate`` command; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    flags = [f"{name}={getattr(args, name)}" for name in _FLAGS if getattr(args, name) is not None]
    if args.classes is not None:
        flags = [f for f in flags if not f.startswith("classes=")] + [f"classes=[{','.join(args.classes)}]"]
    if args.text_only:
        flags.append("text_only=true")
    try:
        cfg = load_config([*args.overrides, *flags], args.config)
        report = curate(
            cfg,
            args.source,
            args.store,
            dry_run=args.dry_run,
            retry_failed=not args.skip_failed,
            progress=not args.no_progress,
        )
    except ValueError as err:  # CurateConfigError, ManifestError, StoreError ...: bad input, said plainly
        print(f"ambemo curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(report.format())
    if args.report:
        Path(args.report).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    if report.interrupted:
        print("ambemo curate: interrupted; finished clips are in the store, rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if report.dry_run or report.complete else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
