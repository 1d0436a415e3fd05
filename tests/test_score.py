"""``ambemo score``: good inputs in every gold format, and each bad input -> exit 2 naming the line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ambemo.score import ScoreInputError, main, score_files

# Two utterances, classes [anger, sadness]:
#   u1: pred [1, 0]     vs gold [0, 1]      JS = 1 bit
#   u2: pred [0.5, 0.5] vs gold [1, 0]      JS = 0.3112781 bits
JS_MEAN = (1 + 0.3112781244591328) / 2
PRED = [
    {"id": "u1", "distribution": {"anger": 1.0, "sadness": 0.0}, "reasoning": "..."},
    {"id": "u2", "distribution": {"anger": 0.5, "sadness": 0.5}},
]
GOLD_VOTES = [{"id": "u2", "votes": {"anger": 3, "sadness": 0}}, {"id": "u1", "votes": {"anger": 0, "sadness": 4}}]
GOLD_DIST = [
    {"id": "u1", "distribution": {"anger": 0.0, "sadness": 1.0}},
    {"id": "u2", "distribution": {"anger": 1.0, "sadness": 0.0}},
]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


@pytest.mark.parametrize("gold_rows", [GOLD_VOTES, GOLD_DIST], ids=["votes", "distribution"])
def test_scores_against_gold(tmp_path, capsys, gold_rows):
    pred, gold = _write(tmp_path / "pred.jsonl", PRED), _write(tmp_path / "gold.jsonl", gold_rows)
    code, out, err = _run(capsys, str(pred), str(gold))
    assert code == 0, err
    assert out["js"] == pytest.approx(JS_MEAN)
    assert out["bc"] == pytest.approx(math.sqrt(0.5) / 2)  # 0 and sqrt(0.5)
    assert out["brier"] == pytest.approx(0.625)  # (1+1)/2 and (0.25+0.25)/2
    assert out["accuracy"] == pytest.approx(0.5)  # argmax: u1 0 vs 1, u2 0 vs 0
    assert out["n"] == 2 and out["renormalised"] == 0
    assert out["js_variant"] == "Jensen-Shannon divergence, log base 2 (bits)"
    assert set(out) >= {
        "js",
        "bc",
        "r2",
        "r2_excluded",
        "r2_pooled",
        "brier",
        "accuracy",
        "macro_f1",
        "entropy_corr",
        "n",
        "renormalised",
        "js_variant",
        "classes",
    }
    assert "format_ok_rate" not in out
    # u1: [1,0] vs [0,1] perfectly anti-correlated, r2 = 1; u2: constant prediction vs varying target, r2 = 0
    assert out["r2"] == pytest.approx(0.5) and out["r2_excluded"] == 0


def test_gold_omitted_uses_target_field_and_format_ok(tmp_path, capsys):
    flags = [True, False]
    rows = [dict(p, target=g["distribution"], format_ok=ok) for p, g, ok in zip(PRED, GOLD_DIST, flags, strict=True)]
    pred = _write(tmp_path / "predictions.jsonl", rows)
    code, out, err = _run(capsys, str(pred))
    assert code == 0, err
    assert out["js"] == pytest.approx(JS_MEAN)
    assert out["format_ok_rate"] == pytest.approx(0.5)


def test_out_file_variants_and_classes_order(tmp_path, capsys):
    pred, gold = _write(tmp_path / "pred.jsonl", PRED), _write(tmp_path / "gold.jsonl", GOLD_VOTES)
    out_file = tmp_path / "results" / "score.json"
    code, out, err = _run(
        capsys,
        str(pred),
        str(gold),
        "--out",
        str(out_file),
        "--js-base",
        "e",
        "--js-distance",
        "--classes",
        "sadness,anger",
    )
    assert code == 0, err
    assert json.loads(out_file.read_text()) == out
    assert "js" not in out
    # per-utterance distances in nats: sqrt(1 * ln2) and sqrt(0.3112781 * ln2)
    assert out["js_distance_nats"] == pytest.approx(
        (math.sqrt(math.log(2)) + math.sqrt(0.3112781244591328 * math.log(2))) / 2
    )
    assert out["classes"] == ["sadness", "anger"]
    assert "natural log" in out["js_variant"] and "distance" in out["js_variant"]


def test_renormalised_rows_are_counted(tmp_path, capsys):
    rows = [
        {"id": "u1", "distribution": {"anger": 2.0, "sadness": 0.0}},  # sums to 2 -> [1, 0]
        {"id": "u2", "distribution": {"anger": 0.5, "sadness": 0.50001}},
    ]  # off by 1e-5: within tolerance
    pred, gold = _write(tmp_path / "pred.jsonl", rows), _write(tmp_path / "gold.jsonl", GOLD_VOTES)
    code, out, err = _run(capsys, str(pred), str(gold))
    assert code == 0, err
    assert out["renormalised"] == 1
    assert out["js"] == pytest.approx(JS_MEAN, rel=1e-4)


def test_votes_may_omit_zero_classes_with_explicit_classes(tmp_path):
    gold = _write(tmp_path / "gold.jsonl", [{"id": "u1", "votes": {"sadness": 4}}, {"id": "u2", "votes": {"anger": 3}}])
    pred = _write(tmp_path / "pred.jsonl", PRED)
    assert score_files(pred, gold, classes="anger,sadness")["js"] == pytest.approx(JS_MEAN)


def test_blank_lines_and_integer_ids(tmp_path):
    pred = _write(tmp_path / "pred.jsonl", [dict(PRED[0], id=1), "", dict(PRED[1], id=2)])
    gold = _write(tmp_path / "gold.jsonl", [dict(GOLD_DIST[0], id="1"), dict(GOLD_DIST[1], id="2")])
    assert score_files(pred, gold)["n"] == 2


def test_nan_metric_written_as_null(tmp_path, capsys):
    # one utterance: entropy correlation across utterances is undefined
    pred, gold = _write(tmp_path / "pred.jsonl", PRED[:1]), _write(tmp_path / "gold.jsonl", GOLD_DIST[:1])
    code, out, err = _run(capsys, str(pred), str(gold))
    assert code == 0, err
    assert out["entropy_corr"] is None


BAD_CASES = {
    # name: (pred rows, gold rows, file that must be named, text the message must contain)
    "invalid_json": ([PRED[0], '{"id": "u2", "distribution": '], GOLD_DIST, "pred.jsonl line 2", "invalid JSON"),
    "not_an_object": ([PRED[0], "[1, 2]"], GOLD_DIST, "pred.jsonl line 2", "JSON object"),
    "missing_id": ([PRED[0], {"distribution": PRED[1]["distribution"]}], GOLD_DIST, "pred.jsonl line 2", "'id'"),
    "missing_distribution": ([PRED[0], {"id": "u2"}], GOLD_DIST, "pred.jsonl line 2", "'distribution'"),
    "missing_votes": (PRED, [GOLD_VOTES[0], {"id": "u1", "count": {}}], "gold.jsonl line 2", "'votes' or"),
    "duplicate_pred_id": ([PRED[0], PRED[1], PRED[0]], GOLD_DIST, "pred.jsonl line 3", "duplicate id 'u1'"),
    "duplicate_gold_id": (PRED, [GOLD_DIST[0], GOLD_DIST[0]], "gold.jsonl line 2", "duplicate id 'u1'"),
    "missing_prediction": (PRED[:1], GOLD_DIST, "gold.jsonl", "'u2' (line 2)"),
    "extra_prediction": ([*PRED, dict(PRED[0], id="u9")], GOLD_DIST, "pred.jsonl", "'u9' (line 3)"),
    "pred_class_mismatch": (
        [PRED[0], {"id": "u2", "distribution": {"anger": 0.5, "fear": 0.5}}],
        GOLD_DIST,
        "pred.jsonl line 2",
        "unexpected ['fear']",
    ),
    "pred_missing_class": (
        [PRED[0], {"id": "u2", "distribution": {"anger": 1.0}}],
        GOLD_DIST,
        "pred.jsonl line 2",
        "missing ['sadness']",
    ),
    "gold_class_mismatch": (
        PRED,
        [GOLD_DIST[0], {"id": "u2", "distribution": {"anger": 1, "joy": 0}}],
        "gold.jsonl line 2",
        "unexpected ['joy']",
    ),
    "negative": (
        [PRED[0], {"id": "u2", "distribution": {"anger": 1.5, "sadness": -0.5}}],
        GOLD_DIST,
        "pred.jsonl line 2",
        "-0.5",
    ),
    "nan": (
        [PRED[0], '{"id": "u2", "distribution": {"anger": NaN, "sadness": 1}}'],
        GOLD_DIST,
        "pred.jsonl line 2",
        "nan",
    ),
    "inf": (
        PRED,
        [GOLD_VOTES[0], '{"id": "u1", "votes": {"anger": Infinity, "sadness": 1}}'],
        "gold.jsonl line 2",
        "inf",
    ),
    "string_value": (
        [PRED[0], {"id": "u2", "distribution": {"anger": "0.5", "sadness": 0.5}}],
        GOLD_DIST,
        "pred.jsonl line 2",
        "expected a number",
    ),
    "all_zero_pred": (
        [PRED[0], {"id": "u2", "distribution": {"anger": 0, "sadness": 0}}],
        GOLD_DIST,
        "pred.jsonl line 2",
        "all 'distribution' values are zero",
    ),
    "all_zero_votes": (
        PRED,
        [GOLD_VOTES[0], {"id": "u1", "votes": {"anger": 0, "sadness": 0}}],
        "gold.jsonl line 2",
        "all 'votes' values are zero",
    ),
    "empty_gold": (PRED, [], "gold.jsonl", "no rows"),
}


@pytest.mark.parametrize("case", BAD_CASES.values(), ids=BAD_CASES.keys())
def test_bad_input_exit_2_naming_the_line(tmp_path, capsys, case):
    pred_rows, gold_rows, where, text = case
    pred, gold = _write(tmp_path / "pred.jsonl", pred_rows), _write(tmp_path / "gold.jsonl", gold_rows)
    code, _, err = _run(capsys, str(pred), str(gold))
    assert code == 2
    assert err.startswith("ambemo score: error: ") and "Traceback" not in err
    assert f"{tmp_path / where}" in err, err
    assert text in err, err


def test_gold_omitted_without_target_field(tmp_path, capsys):
    pred = _write(tmp_path / "pred.jsonl", PRED)
    code, _, err = _run(capsys, str(pred))
    assert code == 2 and "pred.jsonl line 1: missing 'target'" in err


def test_partial_format_ok_is_an_error(tmp_path, capsys):
    pred = _write(tmp_path / "pred.jsonl", [dict(PRED[0], format_ok=True), PRED[1]])
    code, _, err = _run(capsys, str(pred), str(_write(tmp_path / "gold.jsonl", GOLD_DIST)))
    assert code == 2 and "pred.jsonl line 2: missing 'format_ok'" in err


def test_missing_file_and_bad_classes(tmp_path, capsys):
    code, _, err = _run(capsys, str(tmp_path / "nope.jsonl"))
    assert code == 2 and "nope.jsonl: cannot read" in err
    pred, gold = _write(tmp_path / "pred.jsonl", PRED), _write(tmp_path / "gold.jsonl", GOLD_DIST)
    code, _, err = _run(capsys, str(pred), str(gold), "--classes", "anger,anger")
    assert code == 2 and "duplicate" in err
    with pytest.raises(ScoreInputError, match=r"from --classes"):
        score_files(pred, gold, classes=["anger", "fear"])


def test_many_missing_ids_are_abbreviated(tmp_path):
    gold = _write(tmp_path / "gold.jsonl", [{"id": f"g{i}", "votes": {"a": 1, "b": 0}} for i in range(8)])
    pred = _write(tmp_path / "pred.jsonl", [{"id": "g0", "distribution": {"a": 1, "b": 0}}])
    with pytest.raises(ScoreInputError, match=r"7 id\(s\) in .*gold.jsonl have no prediction.* and 2 more"):
        score_files(pred, gold)
