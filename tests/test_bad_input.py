"""Bad input, case by case: each ends with a message that names the file, line or key and says what
to do, a non-zero exit status, and nothing written before lost (run folders, checkpoints, outputs).
A run is never silently wrong: tools skip runs that are not finished, and say so.

Commands run in-process through ``ambemo.cli.main``. One tiny run is trained for the module
(``experiment=sft`` for 3 epochs with validation every 2 and ``trainer.test_weights=last``: the
epoch-end ``last.ckpt`` alone would be one epoch older than the tested weights).
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import SMALL as SMALL_CORPUS

import ambemo.train as recipe  # imported here, not in a test: Lightning's log handler keeps the stream of its import
from ambemo import cli
from ambemo.data.jsonl import iter_json_objects
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.data.manifest import read_manifest
from ambemo.errors import TrainingError
from ambemo.runs import (
    FAILED,
    FAST_DEV_RUN,
    INTERRUPTED,
    SUMMARY,
    latest_run,
    read_summary,
    run_folders,
    status,
    write_summary,
)

SMALL = ["data.batch_size=8", "data.eval_batch_size=2", "data.limit_train=8", "data.limit_eval=2", "logger=csv"]


def ambemo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``ambemo ARGS`` in-process: (exit status, everything printed)."""
    code = cli.main([str(a) for a in args])
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def train_sft(small_corpus: Path) -> list[str]:
    """``ambemo train experiment=sft`` on the test session's small corpus, on the CPU."""
    sizes = [f"data.{k}={v}" for k, v in SMALL_CORPUS.items()]
    return ["train", "experiment=sft", f"data.root={small_corpus}", *sizes, "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def trained(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run: 3 epochs of one step, validation after the 2nd, tested with its final weights."""
    out = tmp_path_factory.mktemp("runs")
    args = [
        *train_sft(small_corpus),
        *SMALL,
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=2",
        "trainer.test_weights=last",
        f"out_dir={out}",
    ]
    assert cli.main(args) == 0
    (run,) = run_folders(out, "sft")
    return run


def copy_run(run: Path, name: str, edit: Callable[[dict], None] | None = None) -> Path:
    """A copy of ``run`` beside it (a newer timestamp name), its summary edited."""
    copy = run.parent / name
    shutil.copytree(run, copy)
    if edit is not None:
        summary = read_summary(copy)
        edit(summary)
        write_summary(copy, summary)
    return copy


# ---- the weights a run was scored with ------------------------------------------------------


def test_the_tested_weights_are_saved_and_predict_reproduces_the_test_split(
    trained: Path, small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = read_summary(trained)
    assert summary["status"] == "finished" and summary["test_weights"] == "last.ckpt"
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3  # the final weights, not those of the last validation (step 2)
    manifest = {r["id"]: r for _, r in iter_json_objects(small_corpus / "manifest.jsonl")}
    tested = [r for _, r in iter_json_objects(trained / "predictions.jsonl")]
    clips = trained.parent / "clips.jsonl"
    clips.write_text(
        "".join(
            json.dumps(
                {
                    "id": r["id"],
                    "audio": str(small_corpus / manifest[r["id"]]["audio"]),
                    "transcript": manifest[r["id"]]["transcript"],
                }
            )
            + "\n"
            for r in tested
        )
    )
    out = trained.parent / "again.jsonl"
    code, printed = ambemo(capsys, "predict", trained, clips, "--out", out, "--no-progress", "--batch-size", 2)
    assert code == 0, printed
    again = [json.loads(line) for line in out.read_text().splitlines()]
    for record, reference in zip(again, tested, strict=True):
        for name in CREMA_D_CLASSES:
            assert record["distribution"][name] == pytest.approx(reference["distribution"][name], abs=1e-5)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda run: (run / "checkpoints" / "last.ckpt").unlink(), "checkpoints/last.ckpt, which is missing"),
        (lambda run: _set(run, test_weights="final weights"), "final weights, which no checkpoint holds"),
    ],
    ids=["checkpoint-deleted", "final-weights-not-saved"],
)
def test_predict_and_export_refuse_a_run_without_its_tested_weights(
    trained: Path, small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Callable, message: str
) -> None:
    run = copy_run(trained, f"29990101-000000-{len(message)}")
    edit(run)
    code, printed = ambemo(capsys, "predict", run, small_corpus / "wav" / "syn00000.wav", "--no-progress")
    assert code == 2 and str(run) in printed and message in printed
    code, printed = ambemo(capsys, "export", run, tmp_path / "export")
    assert code == 2 and message in printed
    assert not (tmp_path / "export").exists() and not (tmp_path / "export.partial").exists()
    shutil.rmtree(run)


def _set(run: Path, **fields: object) -> None:
    summary = read_summary(run)
    summary.update(fields)
    write_summary(run, summary)


# ---- run status: latest:, report, predict, export and sweeps skip unusable runs, saying so ----


def test_fast_dev_failed_and_interrupted_runs_are_skipped_with_a_word(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ambemo.sweep import SweepError, trial_value

    runs_dir = trained.parent.parent
    newer = [
        copy_run(trained, "29990101-000001", lambda s: s.update(status=FAST_DEV_RUN)),
        copy_run(trained, "29990101-000002", lambda s: s.clear() or s.update(status=FAILED, error="ValueError: x")),
        copy_run(trained, "29990101-000003", lambda s: s.clear() or s.update(status=INTERRUPTED)),
    ]
    try:
        lines: list[str] = []
        assert latest_run(runs_dir, "sft", note=lines.append) == trained
        assert [line.split(": ")[1] for line in lines] == [f"skipped {p}" for p in reversed(newer)]
        code, printed = ambemo(capsys, "report", "--runs", runs_dir, "--bootstrap", 10)
        assert code == 0 and "| sft |" in printed and all(f"skipped {p}" in printed for p in newer)
        code, printed = ambemo(capsys, "predict", "latest:sft", "--runs", runs_dir, tmp_path / "none.wav")
        assert code == 1 and f"skipped {newer[0]}: a fast_dev_run" in printed  # (the clip is missing: skipped)
        code, printed = ambemo(capsys, "export", "latest:sft", tmp_path / "export", "--runs", runs_dir)
        assert code == 0 and f"skipped {newer[1]}: failed: ValueError: x" in printed
        assert json.loads((tmp_path / "export" / "ambemo.json").read_text())["source_run"] == str(trained)
        with pytest.raises(SweepError, match="not counted: a fast_dev_run"):
            trial_value(newer[0], "val/js", "minimize")
    finally:
        for run in newer:
            shutil.rmtree(run)


def test_report_names_a_malformed_summary(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(trained, "29990101-000004")
    (run / SUMMARY).write_text("{not json")
    try:
        code, printed = ambemo(capsys, "report", run)
        assert code == 2 and f"{run / SUMMARY}: cannot read it" in printed
    finally:
        shutil.rmtree(run)


# ---- prediction inputs and outputs ------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    names = {}
    for i, name in enumerate(("a", "b", "c")):
        names[name] = folder / f"{name}.wav"
        shutil.copy(small_corpus / "wav" / f"syn0000{i}.wav", names[name])
    data = names["a"].read_bytes()
    names["truncated"] = folder / "truncated.wav"
    names["truncated"].write_bytes(data[: len(data) // 2])
    return names


def test_duplicate_ids_in_one_batch_each_get_their_own_prediction(
    trained: Path, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "same_id.jsonl"
    manifest.write_text("".join(json.dumps({"id": "x", "audio": str(clips[n])}) + "\n" for n in ("a", "b")))
    together, alone = tmp_path / "together.jsonl", tmp_path / "alone.jsonl"
    assert ambemo(capsys, "predict", trained, manifest, "--out", together, "--batch-size", 2, "--no-progress")[0] == 0
    assert ambemo(capsys, "predict", trained, manifest, "--out", alone, "--batch-size", 1, "--no-progress")[0] == 0
    both = [json.loads(line) for line in together.read_text().splitlines()]
    single = [json.loads(line) for line in alone.read_text().splitlines()]
    assert both[0]["distribution"] != both[1]["distribution"]
    for a, b in zip(both, single, strict=True):
        assert a["distribution"] == pytest.approx(b["distribution"], abs=1e-5)


def test_bad_manifest_lines_truncated_audio_and_folders_are_counted_skips(
    trained: Path, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"audio": str(clips["a"])}),
        "{broken",
        json.dumps({"audio": str(clips["truncated"])}),
        json.dumps({"audio": str(tmp_path)}),
        json.dumps({"id": "b\u2028\f", "audio": str(clips["b"])}),  # valid JSON with a line separator inside
    ]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, printed = ambemo(capsys, "predict", trained, manifest, "--out", out, "--no-progress")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [str(clips["a"]), "b\u2028\f"]
    assert f"skipped {manifest} line 2: invalid JSON" in printed
    assert "truncated audio" in printed and "a folder, not an audio file" in printed
    assert "predicted 2 of 5 clips (3 skipped)" in printed


def test_predictions_stream_to_out_and_survive_an_interruption(
    trained: Path,
    clips: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ambemo.inference.predictor import Predictor

    real = Predictor.predict_clips
    calls = []

    def interrupted_on_the_second_batch(self: Predictor, *args: object, **kwargs: object) -> list[dict]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_clips", interrupted_on_the_second_batch)
    out = tmp_path / "deep" / "out.jsonl"
    args = ("predict", trained, clips["a"], clips["b"], clips["c"], "--out", out, "--batch-size", 1, "--no-progress")
    code, printed = ambemo(capsys, *args)
    assert code == 130 and "interrupted after 1 record(s), all written" in printed
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [str(clips["a"])]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{tmp}"], "--out {tmp}: a folder"),
        (["--out", "{tmp}/file.txt/out.jsonl"], "--out {tmp}/file.txt/out.jsonl: cannot write it"),
        (["--device", "cuda"], "--device cuda: CUDA is not available here"),
    ],
    ids=["out-is-a-folder", "out-under-a-file", "no-cuda"],
)
def test_predict_stops_before_any_work_on_a_bad_output_or_device(
    trained: Path,
    clips: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    (tmp_path / "file.txt").write_text("kept")
    code, printed = ambemo(capsys, "predict", trained, clips["a"], *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and message.format(tmp=tmp_path) in printed
    assert "predicted" not in printed and (tmp_path / "file.txt").read_text() == "kept"


@pytest.mark.parametrize("value", ["nan", "-0.1", "1.5"])
def test_threshold_must_be_a_normalised_entropy(
    trained: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["predict", str(trained), str(clips["a"]), "--threshold", value])
    assert stop.value.code == 2 and "--threshold" in capsys.readouterr().err


def test_export_under_a_file_is_refused_without_leftovers(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file.txt").write_text("kept")
    code, printed = ambemo(capsys, "export", trained, tmp_path / "file.txt" / "export")
    assert code == 2 and f"{tmp_path / 'file.txt'}" in printed and "Export into a folder you can write" in printed
    assert (tmp_path / "file.txt").read_text() == "kept"


# ---- training inputs: settings, starting weights, checkpoints, output folder -----------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("strategy.kl_weight=nan", "strategy.kl_weight"),
        ("strategy.lr=-1", "strategy.lr"),
        ("trainer.max_epochs=-3", "trainer.max_epochs"),
        ("data.limit_train=-5", "data.limit_train"),
        ("strategy.betas=[0.9,inf]", "strategy.betas[1]"),
    ],
)
def test_bad_settings_stop_before_a_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, key: str
) -> None:
    code, printed = ambemo(capsys, "train", "experiment=sft", override, f"out_dir={tmp_path / 'runs'}")
    assert code == 2 and f"ambemo: config error: bad value for '{key}'" in printed
    assert "Traceback" not in printed and not (tmp_path / "runs").exists()


def test_bad_starting_weights_and_checkpoints_name_the_file(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = f"out_dir={tmp_path / 'runs'}"
    truncated, garbage = tmp_path / "truncated.ckpt", tmp_path / "garbage.ckpt"
    data = (trained / "checkpoints" / "last.ckpt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage.write_bytes(b"not a checkpoint at all")
    cases = [
        ("model.init_from=/nonexistent/run", "model.init_from=/nonexistent/run: no such file or folder"),
        (f"trainer.resume={tmp_path / 'missing.ckpt'}", f"no checkpoint at {tmp_path / 'missing.ckpt'}"),
        (f"trainer.resume={truncated}", f"{truncated}: not a readable checkpoint"),
        (f"trainer.resume={garbage}", f"{garbage}: not a readable checkpoint"),
        (f"model.init_from={garbage}", f"{garbage}: not a readable checkpoint"),
    ]
    for override, message in cases:
        code, printed = ambemo(capsys, "train", "experiment=sft", override, out, *SMALL)
        assert code == 2 and message in printed and "Traceback" not in printed, override
        assert not (tmp_path / "runs").exists(), override  # no run folder for tools to meet


def test_resume_auto_with_a_corrupt_checkpoint_keeps_the_run_as_it_was(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained, "29990101-000005")
    (run / SUMMARY).unlink()  # an unfinished run: what resume=auto continues
    (run / "checkpoints" / "last.ckpt").write_bytes(b"\x00" * 100)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = f"out_dir={trained.parent.parent}"
    try:
        code, printed = ambemo(capsys, "train", "experiment=sft", "trainer.resume=auto", out, *SMALL)
        assert code == 2 and f"{run / 'checkpoints' / 'last.ckpt'}: not a readable checkpoint" in printed
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # config.yaml too
        assert run_folders(trained.parent.parent, "sft")[-1] == run  # and no new folder
    finally:
        shutil.rmtree(run)


def test_an_unwritable_out_dir_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("kept")
    code, printed = ambemo(capsys, "train", "experiment=sft", f"out_dir={tmp_path / 'file.txt'}")
    assert code == 2 and f"out_dir={tmp_path / 'file.txt'}: cannot create the run folder" in printed
    assert (tmp_path / "file.txt").read_text() == "kept"


# ---- corpus problems -----------------------------------------------------------------------


def _manifest(small_corpus: Path, folder: Path, lines: list[dict]) -> Path:
    """A manifest of the small corpus's first clips, with absolute audio paths."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _lines(small_corpus: Path, splits: list[str]) -> list[dict]:
    rows = [r for _, r in iter_json_objects(small_corpus / "manifest.jsonl")]
    return [
        {"id": r["id"], "audio": str(small_corpus / r["audio"]), "votes": r["votes"], "split": split}
        for r, split in zip(rows, splits, strict=False)
    ]


def test_corpus_problems_stop_with_the_file_and_line(
    small_corpus: Path, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    common = ["train", "experiment=sft", "data=manifest", f"out_dir={runs}", *SMALL, "trainer.max_epochs=1"]

    no_val = _manifest(small_corpus, tmp_path / "no_val", _lines(small_corpus, ["train"] * 4 + ["test"] * 2))
    code, printed = ambemo(capsys, *common, f"data.path={no_val}")
    assert code == 2 and f"data error: {no_val}: the val split is empty" in printed and "Traceback" not in printed
    assert not run_folders(runs, "sft")  # the failed run left no folder

    typo = _lines(small_corpus, ["train"] * 4 + ["val", "test"])
    typo[2]["votes"] = {"angr": 2, "neutral": 1}
    path = _manifest(small_corpus, tmp_path / "typo", typo)
    code, printed = ambemo(capsys, *common, f"data.path={path}")
    assert code == 2 and f"{path} line 3: unknown class" in printed and "data.classes=[]" in printed
    assert not run_folders(runs, "sft")

    cut = _lines(small_corpus, ["train"] * 4 + ["val", "test"])
    cut[1]["audio"] = str(clips["truncated"])
    path = _manifest(small_corpus, tmp_path / "cut", cut)
    code, printed = ambemo(capsys, *common, f"data.path={path}")
    assert (
        code == 2
        and f"{clips['truncated']} ({path} line 2): truncated audio" in printed
        and "data.on_bad_audio=skip" in printed
    )


def test_an_unknown_class_joins_the_class_set_only_when_asked(small_corpus: Path, tmp_path: Path) -> None:
    from ambemo.config import compose

    lines = _lines(small_corpus, ["train"] * 2)
    lines[1]["votes"] = {"angr": 1, "neutral": 1}
    path = _manifest(small_corpus, tmp_path / "m", lines)
    assert list(compose("sft", ["data=manifest", f"data.path={path}"]).data.classes) == list(CREMA_D_CLASSES)
    assert "angr" in compose("sft", ["data=manifest", f"data.path={path}", "data.classes=[]"]).data.classes


def test_jsonl_lines_split_at_newlines_only(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    line = {"id": "a\u2028b\x0cc\x1cd\x85e", "audio": "a.wav", "votes": {"anger": 1}}
    path.write_text(json.dumps(line, ensure_ascii=False) + "\r\n" + json.dumps({**line, "id": "z"}) + "\n")
    assert [r["id"] for _, r in iter_json_objects(path)] == [line["id"], "z"]
    assert [r.id for r in read_manifest(path, CREMA_D_CLASSES)] == [line["id"], "z"]


# ---- training that cannot go on ----------------------------------------------------------------


def test_a_non_finite_loss_stops_training_before_its_backward_pass() -> None:
    from ambemo.train import FiniteLoss

    class Trainer:
        global_step, current_epoch = 7, 1

    FiniteLoss().on_before_backward(Trainer(), None, torch.tensor(1.5))  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match="the loss is nan at step 7"):
        FiniteLoss().on_before_backward(Trainer(), None, torch.tensor(float("nan")))  # type: ignore[arg-type]


@pytest.mark.parametrize("stop, state, code", [(KeyboardInterrupt, INTERRUPTED, 130), (TrainingError, FAILED, 2)])
def test_a_stopped_run_is_marked_and_resumable(
    small_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stop: type[BaseException],
    state: str,
    code: int,
) -> None:
    import lightning as L

    class StopAtStep2(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.global_step == 2:
                raise stop("the loss is nan at step 2") if stop is TrainingError else stop()

    make = recipe.make_callbacks
    monkeypatch.setattr(recipe, "make_callbacks", lambda *a: [*make(*a), StopAtStep2()])
    runs = tmp_path / "runs"
    args = [
        *train_sft(small_corpus),
        "data.batch_size=2",
        "data.limit_train=8",
        "trainer.checkpoint_every_n_steps=1",
        f"out_dir={runs}",
        "logger=csv",
    ]
    previous = signal.getsignal(signal.SIGINT)
    try:
        got, printed = ambemo(capsys, *args)
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores Ctrl-C after catching one
    assert got == code and "Traceback" not in printed
    (run,) = run_folders(runs, "sft")
    assert status(run) == state and (run / "checkpoints" / "last.ckpt").is_file()
    assert f"trainer.resume={run}" in printed
    assert latest_run(runs, "sft", note=None) is None
    from ambemo.config import compose
    from ambemo.resume import find_resume_checkpoint

    resume = find_resume_checkpoint(compose("sft", [f"out_dir={runs}", "trainer.resume=auto"]))
    assert resume == run / "checkpoints" / "last.ckpt"


# ---- curation against an endpoint that is not there ------------------------------------------


def test_curation_names_its_endpoint_and_stops_at_once_when_it_is_unreachable(
    tmp_path: Path, small_corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cot_server import FakeOpenAI

    from ambemo.cot.curate import main as curate_main

    with FakeOpenAI() as server:
        dead = server.base_url
    # the server is gone: its port refuses connections
    monkeypatch.setenv("OPENAI_BASE_URL", dead)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-unreachable")
    store, report = tmp_path / "cot.jsonl", tmp_path / "report.json"
    started = time.time()
    args = ["--store", store, "--report", report, "timeout=5", "max_retries=1", "concurrency=2", "--no-progress"]
    code = curate_main([str(small_corpus), *map(str, args), "--limit", "12"])
    printed = capsys.readouterr()
    assert code == 3 and time.time() - started < 60
    assert f"[ambemo curate] requests go to {dead}" in printed.err and "(OPENAI_BASE_URL)" in printed.err
    summary = json.loads(report.read_text())
    assert f"cannot reach the endpoint {dead}" in summary["stopped"] and "OPENAI_BASE_URL" in summary["stopped"]
    assert summary["failed"] <= 2 and summary["not_started"] >= 10  # one wave of requests, then the stop

    monkeypatch.delenv("OPENAI_BASE_URL")
    from ambemo.cot.client import CurationClient
    from ambemo.cot.config import load_config

    assert "OPENAI_BASE_URL is not set: the public OpenAI API" in CurationClient(load_config([])).describe_endpoint()
