"""Distribution metrics: hand-computed values, JS variants, DDP exactness, reference libraries."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.functional import pearson_corrcoef
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score
from torchmetrics.regression import JensenShannonDivergence

from ambemo.metrics.metrics import (
    Bhattacharyya,
    Brier,
    DistributionMetrics,
    EntropyCorrelation,
    FormatOkRate,
    JensenShannon,
    MajorityAccuracy,
    MajorityMacroF1,
    PearsonR2,
    PooledR2,
    js_variant_description,
    score_distributions,
)

# JS of [0.5, 0.5] vs [1, 0] in bits: M = [0.75, 0.25];
# KL(P||M) = 0.5 log2(0.5/0.75) + 0.5 log2(0.5/0.25) = 0.5 (-0.5849625) + 0.5 = 0.2075187
# KL(Q||M) = log2(1/0.75) = 0.4150375;  JS = (0.2075187 + 0.4150375) / 2
JS_HALF_VS_ONEHOT = 0.3112781244591328

PRED2 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
TARGET2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


def _value(metric, pred, target):
    metric.update(pred, target)
    return metric.compute()


def _random_batch(n: int = 64, c: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.softmax(2 * torch.randn(n, c, generator=g), -1)
    target = torch.softmax(3 * torch.randn(n, c, generator=g), -1)
    return pred, target


# ---------------------------------------------------------------- JS and its variants


def test_js_disjoint_is_one_bit():
    # [1,0] vs [0,1]: M = [0.5, 0.5], each KL = log2(1/0.5) = 1, JS = 1 bit
    assert _value(JensenShannon(), PRED2[:1], TARGET2[:1]).item() == pytest.approx(1.0)


def test_js_half_vs_onehot_and_mean():
    assert _value(JensenShannon(), PRED2[1:], TARGET2[1:]).item() == pytest.approx(JS_HALF_VS_ONEHOT)
    # mean over the two utterances: (1 + 0.3112781) / 2
    assert _value(JensenShannon(), PRED2, TARGET2).item() == pytest.approx((1 + JS_HALF_VS_ONEHOT) / 2)


@pytest.mark.parametrize(
    ("base", "distance", "key", "expected"),
    [
        (2.0, False, "js", JS_HALF_VS_ONEHOT),
        (math.e, False, "js_nats", JS_HALF_VS_ONEHOT * math.log(2)),  # nats = bits * ln 2
        (2.0, True, "js_distance", math.sqrt(JS_HALF_VS_ONEHOT)),
        (math.e, True, "js_distance_nats", math.sqrt(JS_HALF_VS_ONEHOT * math.log(2))),
    ],
)
def test_js_variants_keys_and_values(base, distance, key, expected):
    metric = JensenShannon(base=base, distance=distance)
    assert metric.key == key
    assert _value(metric, PRED2[1:], TARGET2[1:]).item() == pytest.approx(expected)
    out = score_distributions(PRED2[1:], TARGET2[1:], js_base=base, js_distance=distance)
    assert out[key] == pytest.approx(expected)
    assert not ({"js", "js_nats", "js_distance", "js_distance_nats"} - {key}) & set(out)


def test_js_distance_averages_per_utterance_distances():
    # mean(sqrt(1), sqrt(0.3112781)), not sqrt(mean)
    value = _value(JensenShannon(distance=True), PRED2, TARGET2).item()
    assert value == pytest.approx((1 + math.sqrt(JS_HALF_VS_ONEHOT)) / 2)


def test_js_variant_description_and_bad_base():
    assert js_variant_description() == "Jensen-Shannon divergence, log base 2 (bits)"
    assert "natural log (nats)" in js_variant_description(math.e)
    assert "distance" in js_variant_description(2.0, True)
    with pytest.raises(ValueError, match="bits"):
        JensenShannon(base=10)


def test_js_matches_torchmetrics_reference():
    pred, target = _random_batch()
    reference = JensenShannonDivergence()  # nats, mean over rows
    reference.update(pred.double(), target.double())
    ours = _value(JensenShannon(base=math.e), pred, target)
    assert ours.item() == pytest.approx(reference.compute().item(), rel=1e-6)
    bits = _value(JensenShannon(), pred, target)
    assert bits.item() == pytest.approx(reference.compute().item() / math.log(2), rel=1e-6)


# ---------------------------------------------------------------- BC, Brier


def test_bhattacharyya():
    # [1,0] vs [0,1]: 0;  [0.5,0.5] vs [1,0]: sqrt(0.5) = 0.7071068;  mean = 0.3535534
    assert _value(Bhattacharyya(), PRED2, TARGET2).item() == pytest.approx(math.sqrt(0.5) / 2)
    # identical rows: sum p = 1
    assert _value(Bhattacharyya(), TARGET2, TARGET2).item() == pytest.approx(1.0)


def test_brier():
    # [1,0] vs [0,1]: (1 + 1) / 2 = 1;  [0.5,0.5] vs [1,0]: (0.25 + 0.25) / 2 = 0.25;  mean = 0.625
    assert _value(Brier(), PRED2, TARGET2).item() == pytest.approx(0.625)


# ---------------------------------------------------------------- R2 (per utterance and pooled)


def test_pearson_r2_excludes_and_counts_constant_targets():
    pred = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    # row 1: pred*30 = [18,9,3] -> centred [8,-1,-7]; target*6 = [3,3,0] -> centred [1,1,-2]
    #        cov = 8 - 1 + 14 = 21, |p|^2 = 114, |t|^2 = 6, r2 = 21^2 / (114 * 6) = 441/684
    # row 2: pred*10 = [1,2,7] -> centred*3 [-7,-4,11]; target -> centred*3 [-1,-1,2]
    #        cov = 7 + 4 + 22 = 33, |p|^2 = 186, |t|^2 = 6, r2 = 1089/1116
    # row 3: constant target -> excluded, counted
    out = _value(PearsonR2(), pred, target)
    assert out["r2"].item() == pytest.approx((441 / 684 + 1089 / 1116) / 2)
    assert out["r2_excluded"].item() == 1


def test_pearson_r2_matches_torchmetrics_pearson():
    pred, target = _random_batch()
    r = pearson_corrcoef(pred.double().T, target.double().T)  # one correlation per utterance (column)
    assert _value(PearsonR2(), pred, target)["r2"].item() == pytest.approx(r.pow(2).mean().item(), rel=1e-6)


def test_pooled_r2():
    target = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.2, 0.6], [0.1, 0.6, 0.3]])
    # predicting the per-class means [0.3, 0.4, 0.3] on every row: SSE = SST, R2 = 0
    means = target.mean(0, keepdim=True).expand_as(target)
    assert _value(PooledR2(3), means, target).item() == pytest.approx(0.0, abs=1e-6)
    assert _value(PooledR2(3), target, target).item() == pytest.approx(1.0)
    # targets [1,0],[0,1]; preds [.75,.25],[.25,.75]: SSE = 4 * 0.25^2 = 0.25; class means 0.5,
    # SST = 4 * 0.5^2 = 1; R2 = 1 - 0.25 = 0.75
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert _value(PooledR2(2), torch.tensor([[0.75, 0.25], [0.25, 0.75]]), two).item() == pytest.approx(0.75)


# ---------------------------------------------------------------- majority accuracy / macro-F1

# 4 classes, class 3 never occurs. target argmax [0,0,1,2], pred argmax [0,1,1,1]
# confusion (rows target, cols pred): row0 [1,1,0], row1 [0,1,0], row2 [0,1,0]
MAJ_TARGET = torch.tensor([[0.6, 0.4, 0, 0], [0.5, 0.2, 0.3, 0], [0.1, 0.8, 0.1, 0], [0, 0.3, 0.7, 0]])
MAJ_PRED = torch.tensor([[0.9, 0.1, 0, 0], [0.2, 0.7, 0.1, 0], [0.3, 0.4, 0.3, 0], [0.1, 0.5, 0.4, 0]])


def test_majority_accuracy():
    # diagonal 2 of 4
    assert _value(MajorityAccuracy(4), MAJ_PRED, MAJ_TARGET).item() == pytest.approx(0.5)


def test_majority_macro_f1_over_present_classes():
    # F1 = 2tp / (row + col): class0 2*1/(2+1) = 2/3; class1 2*1/(1+3) = 1/2; class2 0/(1+0) = 0;
    # class3 absent everywhere -> left out.  macro = (2/3 + 1/2 + 0) / 3
    assert _value(MajorityMacroF1(4), MAJ_PRED, MAJ_TARGET).item() == pytest.approx((2 / 3 + 1 / 2) / 3)


def test_majority_metrics_match_torchmetrics_classification():
    pred, target = _random_batch(n=200, c=4, seed=3)
    p, t = pred.argmax(-1), target.argmax(-1)
    assert set(t.tolist()) == set(range(4))  # every class present, so "macro" means the same thing
    assert _value(MajorityAccuracy(4), pred, target).item() == pytest.approx(
        multiclass_accuracy(p, t, num_classes=4, average="micro").item()
    )
    assert _value(MajorityMacroF1(4), pred, target).item() == pytest.approx(
        multiclass_f1_score(p, t, num_classes=4, average="macro").item(), rel=1e-6
    )


# ---------------------------------------------------------------- entropy correlation, format rate


def test_entropy_correlation():
    pred = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])  # entropies x = [0, 1, 1] bits
    target = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])  # entropies y = [0, 1, 0]
    # dx = [-2/3, 1/3, 1/3], dy = [-1/3, 2/3, -1/3]; cov = 3/9; var x = var y = 6/9; r = 0.5
    assert _value(EntropyCorrelation(), pred, target).item() == pytest.approx(0.5)
    # constant target entropy: correlation undefined
    assert math.isnan(_value(EntropyCorrelation(), pred, torch.tensor([[1.0, 0.0]] * 3)).item())


def test_format_ok_rate():
    metric = FormatOkRate()
    metric.update(torch.tensor([True, False]))
    metric.update(torch.tensor([True, True]))
    assert metric.compute().item() == pytest.approx(0.75)


# ---------------------------------------------------------------- the collection


def test_distribution_metrics_keys_and_values():
    out = score_distributions(PRED2, TARGET2)
    assert list(out) == [
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
    ]
    assert out["js"] == pytest.approx((1 + JS_HALF_VS_ONEHOT) / 2)
    assert out["brier"] == pytest.approx(0.625)
    assert out["n"] == 2 and isinstance(out["n"], int)
    # argmax: target [1, 0], pred [0, 0] -> accuracy 1/2
    assert out["accuracy"] == pytest.approx(0.5)
    assert all(isinstance(v, (int, float)) for v in out.values())


def test_format_ok_rate_only_when_given():
    metrics = DistributionMetrics(2)
    metrics.update(PRED2, TARGET2)
    assert "format_ok_rate" not in metrics.compute()
    metrics.update(PRED2, TARGET2, format_ok=torch.tensor([True, False]))
    out = metrics.compute()
    assert out["format_ok_rate"] == pytest.approx(0.5) and out["n"] == 4
    metrics.reset()
    metrics.update(PRED2[:1], TARGET2[:1])
    assert metrics.compute()["n"] == 1 and "format_ok_rate" not in metrics.compute()


def test_distribution_metrics_forward_prefix_and_shape_checks():
    metrics = DistributionMetrics(2).clone(prefix="val/")
    batch = metrics(PRED2[:1], TARGET2[:1])
    assert batch["val/js"] == pytest.approx(1.0)
    metrics(PRED2[1:], TARGET2[1:])
    assert metrics.compute()["val/js"] == pytest.approx((1 + JS_HALF_VS_ONEHOT) / 2)
    with pytest.raises(ValueError, match="3 classes"):
        DistributionMetrics(3).update(PRED2, TARGET2)
    with pytest.raises(ValueError, match="equal shapes"):
        DistributionMetrics(2).update(PRED2, TARGET2[:1])


def test_states_stay_float64_under_module_dtype_casts():
    # Lightning's bf16-true precision calls module.to(bfloat16); the sums must keep their precision.
    metrics = DistributionMetrics(2).to(torch.bfloat16)
    metrics.update(PRED2.bfloat16(), TARGET2.bfloat16())
    members = dict(metrics.items(keep_base=True, copy_state=False))
    assert members["js"].total.dtype == torch.float64
    assert members["r2_pooled"].sse.dtype == torch.float64
    assert metrics.compute()["js"] == pytest.approx((1 + JS_HALF_VS_ONEHOT) / 2)


def test_does_not_keep_autograd_graph():
    logits = torch.randn(3, 2, requires_grad=True)
    metrics = DistributionMetrics(2)
    metrics.update(torch.softmax(logits, -1), torch.tensor([[1.0, 0.0]] * 3))
    member = dict(metrics.items(keep_base=True, copy_state=False))["js"]
    assert not member.total.requires_grad


# ---------------------------------------------------------------- DDP exactness


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("split", [32, 5, 63])
def test_merged_shards_equal_one_pass(split):
    pred, target = _random_batch(n=64, c=4, seed=1)
    target[::7] = 0.25  # some constant targets, so r2_excluded is non-zero on both shards
    ok = torch.arange(64) % 3 != 0
    whole = score_distributions(pred, target, ok)
    a, b = DistributionMetrics(4), DistributionMetrics(4)
    a.update(pred[:split], target[:split], ok[:split])
    b.update(pred[split:], target[split:], ok[split:])
    a.merge_state(b)
    _close(a.compute(), whole)
    assert whole["r2_excluded"] == 10


def test_shard_averaging_would_differ():
    # guards the test above: averaging per-shard means is not the same number for uneven shards
    pred, target = _random_batch(n=64, c=4, seed=1)
    first, second = score_distributions(pred[:5], target[:5]), score_distributions(pred[5:], target[5:])
    assert (first["js"] + second["js"]) / 2 != pytest.approx(score_distributions(pred, target)["js"])


@pytest.mark.parametrize("cls", [JensenShannon, Bhattacharyya, Brier, PearsonR2, EntropyCorrelation])
def test_each_metric_merges_exactly(cls):
    pred, target = _random_batch(n=30, c=5, seed=2)
    a, b, whole = cls(), cls(), cls()
    a.update(pred[:7], target[:7])
    b.update(pred[7:], target[7:])
    whole.update(pred, target)
    a.merge_state(b)
    torch.testing.assert_close(a.compute(), whole.compute())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        pred, target = _random_batch(n=11, c=4, seed=5)
        metrics = DistributionMetrics(4)
        if rank == 0:  # uneven shards; only rank 1 tracks format flags
            metrics.update(pred[:3], target[:3])
        else:
            metrics.update(pred[3:], target[3:], format_ok=torch.tensor([True] * 6 + [False] * 2))
        queue.put((rank, metrics.compute()))
    finally:
        dist.destroy_process_group()


def test_real_gloo_ddp_two_processes():
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(_free_port(), queue), nprocs=2, start_method="spawn")
    results = dict(queue.get() for _ in range(2))
    pred, target = _random_batch(n=11, c=4, seed=5)
    expected = score_distributions(pred, target)
    expected["format_ok_rate"] = 6 / 8
    for rank in (0, 1):
        _close(results[rank], expected)
