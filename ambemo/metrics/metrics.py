"""torchmetrics Metrics for predicted vs human emotion distributions (definitions: docs/method.md, "Metrics").

Why sums only: under DDP torchmetrics reduces each state across ranks with its
``dist_reduce_fx``. Every state here is a sum (of per-utterance values, of counts, of
moments, of a confusion matrix) reduced with ``"sum"``, and every result is computed from
the reduced sums, so a metric over a dataset split across ranks equals the metric over the
whole dataset, not an average of per-rank averages.

Float states are float64 and stay float64 even if a LightningModule is cast to bf16/fp16
(``module.to(dtype)`` would otherwise convert them: torchmetrics only guards ``.half()``
and friends): summing thousands of per-utterance values in half precision loses digits.

Library or own code: majority accuracy and macro-F1 are torchmetrics' ``MulticlassAccuracy`` and
``MulticlassF1Score`` on the argmax classes. The others are written here because no torchmetrics
metric has their definition: JS, BC and per-utterance r2 are per-row means of the functions in
``ambemo.metrics.functional``; Brier is the multi-class score against soft targets; pooled R2 is
``R2Score(multioutput="variance_weighted")``, except that R2Score refuses fewer than two rows
where ours reports NaN; the entropy correlation is ``PearsonCorrCoef`` on the two entropies, except
that PearsonCorrCoef cannot ``merge_state`` (``DistributionMetrics.merge_state`` combines shards) and its states
are not sums (kept here as moments, exact after a DDP sum).

Class order: ``pred`` and ``target`` are ``(N, C)`` tensors with rows in the same class order.
The "majority" class of a row is its argmax; ties go to the first class in that order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from ambemo.metrics import functional as F

_F64 = torch.float64

__all__ = [
    "Bhattacharyya",
    "Brier",
    "DistributionMetrics",
    "EntropyCorrelation",
    "FormatOkRate",
    "JensenShannon",
    "MajorityAccuracy",
    "MajorityMacroF1",
    "PearsonR2",
    "PooledR2",
    "UtteranceCount",
    "js_key",
    "js_variant_description",
    "score_distributions",
]


def _js_base_name(base: float) -> str:
    """'bits' or 'nats'; other bases are refused so that every logged number has a clear unit."""
    if math.isclose(base, 2.0):
        return "bits"
    if math.isclose(base, math.e):
        return "nats"
    raise ValueError(f"js base must be 2 (bits) or e (nats), got {base}")


def js_key(base: float = 2.0, distance: bool = False) -> str:
    """Metric key naming the JS variant: "js", "js_nats", "js_distance" or "js_distance_nats"."""
    unit = _js_base_name(base)
    return ("js_distance" if distance else "js") + ("_nats" if unit == "nats" else "")


def js_variant_description(base: float = 2.0, distance: bool = False) -> str:
    """Readable name of the JS variant, for logs and score files (numbers differ by variant)."""
    unit = _js_base_name(base)
    log = "log base 2 (bits)" if unit == "bits" else "natural log (nats)"
    if distance:
        return f"Jensen-Shannon distance (square root of the divergence, per utterance), {log}"
    return f"Jensen-Shannon divergence, {log}"


def _as_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes and detach to float64: metrics never keep the autograd graph."""
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be (N, C) with equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    return pred.detach().to(_F64), target.detach().to(_F64)


def _zeros(*shape: int, dtype: torch.dtype = _F64) -> Tensor:
    return torch.zeros(shape, dtype=dtype)


class _SumStateMetric(Metric):
    """Base: states are sums reduced with "sum"; float states pinned to float64 (see module doc)."""

    full_state_update = False  # also what makes ``merge_state`` available
    is_differentiable = False

    def _add_sum_state(self, name: str, default: Tensor) -> None:
        self.add_state(name, default=default, dist_reduce_fx="sum")

    def _apply(self, fn: Callable, exclude_state: Any = "") -> torch.nn.Module:
        this = super()._apply(fn, exclude_state)
        for key, default in this._defaults.items():
            if isinstance(default, Tensor) and default.is_floating_point() and default.dtype != _F64:
                this._defaults[key] = default.to(_F64)
                setattr(this, key, getattr(this, key).to(_F64))
        return this


class _MeanOverUtterances(_SumStateMetric):
    """Mean of a per-utterance value: states are the sum of values and the utterance count."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum_state("total", _zeros())
        self._add_sum_state("count", _zeros(dtype=torch.long))

    def _per_utterance(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch of ``(N, C)`` predicted and target distributions."""
        pred, target = _as_pair(pred, target)
        self.total += self._per_utterance(pred, target).sum()
        self.count += pred.shape[0]

    def compute(self) -> Tensor:
        """Mean over all utterances seen (NaN if none)."""
        return self.total / self.count


class JensenShannon(_MeanOverUtterances):
    """Mean per-utterance Jensen-Shannon divergence (bits by default) or distance (its square root).

    ``key`` names the variant ("js", "js_nats", "js_distance", "js_distance_nats") so that a
    logged number always says which one it is; the distance variant averages per-utterance
    distances (it is not the square root of the mean divergence).
    """

    higher_is_better = False

    def __init__(self, base: float = 2.0, distance: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = js_key(base, distance)
        self.description = js_variant_description(base, distance)
        self.base = float(base)
        self.distance = bool(distance)

    def _per_utterance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.js_divergence(pred, target, base=self.base, distance=self.distance)


class Bhattacharyya(_MeanOverUtterances):
    """Mean per-utterance Bhattacharyya coefficient sum_i sqrt(p_i q_i) (1 = identical)."""

    higher_is_better = True

    def _per_utterance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.bhattacharyya_coefficient(pred, target)


class Brier(_MeanOverUtterances):
    """Mean per-utterance Brier score sum_i (p_hat_i - p_i)^2 / C."""

    higher_is_better = False

    def _per_utterance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.brier_score(pred, target)


class UtteranceCount(_SumStateMetric):
    """Number of utterances seen (its own metric so that the count is reduced across ranks too)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum_state("n", _zeros(dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count the rows of a batch."""
        self.n += _as_pair(pred, target)[0].shape[0]

    def compute(self) -> Tensor:
        """Total utterances."""
        return self.n


class PearsonR2(_SumStateMetric):
    """Per-utterance squared Pearson correlation between p_hat and p_gt, averaged.

    Utterances whose target is constant (e.g. a uniform vote) have no correlation: they are
    excluded from the mean and counted. ``compute`` returns ``{"r2", "r2_excluded"}``.
    """

    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum_state("total", _zeros())
        self._add_sum_state("valid", _zeros(dtype=torch.long))
        self._add_sum_state("excluded", _zeros(dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch; constant-target rows only increase the excluded count."""
        r2, valid = F.pearson_r2(*_as_pair(pred, target))
        self.total += r2[valid].sum()
        self.valid += valid.sum()
        self.excluded += (~valid).sum()

    def compute(self) -> dict[str, Tensor]:
        """Mean r2 over valid utterances (NaN if none) and the number excluded."""
        return {"r2": self.total / self.valid, "r2_excluded": self.excluded}


class PooledR2(_SumStateMetric):
    """Coefficient of determination 1 - SSE/SST over all utterance x class entries.

    SST uses per-class means of the target, so predicting each class's mean probability
    scores 0. Kept as sums (of p, p^2 and (p_hat - p)^2 per class, and n) because
    SST = sum p^2 - (sum p)^2 / n is then exact after summing across ranks.
    """

    higher_is_better = True

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self._add_sum_state("sum_t", _zeros(num_classes))
        self._add_sum_state("sum_t2", _zeros(num_classes))
        self._add_sum_state("sse", _zeros(num_classes))
        self._add_sum_state("n", _zeros(dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, num_classes)`` distributions."""
        pred, target = _as_pair(pred, target)
        self.sum_t += target.sum(0)
        self.sum_t2 += target.pow(2).sum(0)
        self.sse += (pred - target).pow(2).sum(0)
        self.n += pred.shape[0]

    def compute(self) -> Tensor:
        """1 - SSE/SST (NaN if the targets do not vary at all)."""
        sst = (self.sum_t2 - self.sum_t.pow(2) / self.n).sum()
        return 1.0 - self.sse.sum() / sst if sst > 0 else torch.tensor(float("nan"), dtype=_F64)


class _OnMajorityClasses(Metric):
    """Feeds a torchmetrics classification metric the majority classes: argmax(pred) vs argmax(target)."""

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, C)`` distributions as their argmax classes."""
        pred, target = _as_pair(pred, target)
        super().update(pred.argmax(-1), target.argmax(-1))  # type: ignore[call-arg]


class MajorityAccuracy(_OnMajorityClasses, MulticlassAccuracy):
    """Fraction of utterances whose predicted argmax is the majority-vote class.

    torchmetrics' micro-averaged ``MulticlassAccuracy`` (its states are summed counts, so it is
    exact across DDP ranks); 0 when nothing was seen."""

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        # argmax indices are always in range: torchmetrics' per-batch input checks would only cost time
        super().__init__(num_classes, average="micro", validate_args=False, **kwargs)


class MajorityMacroF1(_OnMajorityClasses, MulticlassF1Score):
    """Macro-F1 of argmax vs majority class, averaged over classes present in target or pred.

    torchmetrics' macro ``MulticlassF1Score``, which leaves out classes that never occur on
    either side (tp + fp + fn = 0): they have no defined F1 and would only move the mean.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, average="macro", validate_args=False, **kwargs)


class EntropyCorrelation(_SumStateMetric):
    """Pearson correlation, across utterances, between the entropy of p_hat and of p_gt.

    Does the model know *which* utterances are ambiguous? Kept as the moments n, sum x,
    sum y, sum x^2, sum y^2, sum xy. NaN when either entropy is constant over the data.
    """

    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("sx", "sy", "sxx", "syy", "sxy"):
            self._add_sum_state(name, _zeros())
        self._add_sum_state("n", _zeros(dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add the entropies (bits) of a batch."""
        pred, target = _as_pair(pred, target)
        x, y = F.entropy(pred), F.entropy(target)
        self.sx += x.sum()
        self.sy += y.sum()
        self.sxx += x.pow(2).sum()
        self.syy += y.pow(2).sum()
        self.sxy += (x * y).sum()
        self.n += x.numel()

    def compute(self) -> Tensor:
        """r = (n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2)(n Syy - Sy^2))."""
        n = self.n.to(_F64)
        cov = n * self.sxy - self.sx * self.sy
        var_x = n * self.sxx - self.sx.pow(2)
        var_y = n * self.syy - self.sy.pow(2)
        # relative tolerance: a constant entropy leaves only rounding residue in var
        tol_x, tol_y = 1e-12 * n * self.sxx, 1e-12 * n * self.syy
        if var_x <= tol_x or var_y <= tol_y:
            return torch.tensor(float("nan"), dtype=_F64)
        return (cov / (var_x * var_y).sqrt()).clamp(-1.0, 1.0)


class FormatOkRate(_SumStateMetric):
    """Fraction of generations with a well-formed reasoning and answer slot (never hidden)."""

    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum_state("ok", _zeros(dtype=torch.long))
        self._add_sum_state("total", _zeros(dtype=torch.long))

    def update(self, format_ok: Tensor) -> None:
        """Add a bool tensor, one entry per generation."""
        format_ok = torch.as_tensor(format_ok, device=self.ok.device).bool().reshape(-1)
        self.ok += format_ok.sum()
        self.total += format_ok.numel()

    def compute(self) -> Tensor:
        """ok / total (NaN if nothing was given)."""
        return self.ok.to(_F64) / self.total


#: Output order of ``DistributionMetrics.compute`` after the JS key.
_KEYS = ("bc", "r2", "r2_excluded", "r2_pooled", "brier", "accuracy", "macro_f1", "entropy_corr", "n", "format_ok_rate")
_COUNT_KEYS = ("r2_excluded", "n")


class DistributionMetrics(MetricCollection):
    """Every distribution metric of docs/method.md ("Metrics") in one object.

    ``update(pred, target, format_ok=None)`` then ``compute() -> dict[str, float]`` with keys
    the JS key ("js" by default, see ``JensenShannon.key``), "bc", "r2", "r2_excluded",
    "r2_pooled", "brier", "accuracy", "macro_f1", "entropy_corr", "n", and "format_ok_rate"
    only if ``format_ok`` was ever given (on any rank). A MetricCollection, so it moves with
    its LightningModule, resets, syncs across DDP ranks in ``compute`` and takes
    ``clone(prefix="val/")``. Extra ``metric_kwargs`` (e.g. ``sync_on_compute=False``) go to
    every member metric.
    """

    def __init__(self, num_classes: int, js_base: float = 2.0, js_distance: bool = False, **metric_kwargs: Any) -> None:
        js = JensenShannon(base=js_base, distance=js_distance, **metric_kwargs)
        members: dict[str, Metric] = {
            js.key: js,
            "bc": Bhattacharyya(**metric_kwargs),
            "r2": PearsonR2(**metric_kwargs),
            "r2_pooled": PooledR2(num_classes, **metric_kwargs),
            "brier": Brier(**metric_kwargs),
            "accuracy": MajorityAccuracy(num_classes, **metric_kwargs),
            "macro_f1": MajorityMacroF1(num_classes, **metric_kwargs),
            "entropy_corr": EntropyCorrelation(**metric_kwargs),
            "n": UtteranceCount(**metric_kwargs),
            "format_ok_rate": FormatOkRate(**metric_kwargs),
        }
        # compute groups would share states between members; ours differ, and we route
        # ``format_ok`` ourselves, so keep every member independent.
        super().__init__(members, compute_groups=False)
        self.num_classes = num_classes
        self.js_key = js.key
        self.js_description = js.description

    def _members(self) -> dict[str, Metric]:
        return dict(self.items(keep_base=True, copy_state=False))

    def merge_state(self, other: DistributionMetrics) -> None:
        """Add another collection's states to this one (what a DDP sum does; used to combine shards)."""
        incoming = other._members()
        for name, metric in self._members().items():
            metric.merge_state(incoming[name])

    def _check(self, pred: Tensor, target: Tensor) -> None:
        _as_pair(pred, target)
        if pred.shape[-1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} classes, got pred of shape {tuple(pred.shape)}")

    def update(self, pred: Tensor, target: Tensor, format_ok: Tensor | None = None) -> None:  # type: ignore[override]
        """Add a batch: ``(N, C)`` predicted and target distributions, optional ``(N,)`` bool format flags."""
        self._check(pred, target)
        for name, metric in self._members().items():
            if name != "format_ok_rate":
                metric.update(pred, target)
            elif format_ok is not None:
                metric.update(format_ok)

    def forward(self, pred: Tensor, target: Tensor, format_ok: Tensor | None = None) -> dict[str, float]:  # type: ignore[override]
        """Update the running state and return this batch's values (as ``Metric.forward`` does)."""
        self._check(pred, target)
        values = {}
        for name, metric in self._members().items():
            if name != "format_ok_rate":
                values[name] = metric(pred, target)
            elif format_ok is not None:
                values[name] = metric(format_ok)
        return self._flatten(values)

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        """Reduce across ranks (every member, on every rank, so collectives stay in step) and flatten."""
        values = {}
        for name, metric in self._members().items():
            with warnings.catch_warnings():
                if name == "format_ok_rate":  # legitimately never updated when format flags are not tracked
                    warnings.filterwarnings("ignore", message=".*was called before the ``update``")
                values[name] = metric.compute()
        return self._flatten(values)

    def _flatten(self, values: dict[str, Any]) -> dict[str, float]:
        flat: dict[str, Tensor] = {}
        for name, value in values.items():
            flat.update(value if isinstance(value, dict) else {name: value})
        out: dict[str, float] = {}
        for key in (self.js_key, *_KEYS):
            if key not in flat:
                continue
            value = flat[key].item()
            if key == "format_ok_rate" and math.isnan(value):
                continue  # never given: omit rather than report a rate of nothing
            name = f"{self.prefix or ''}{key}{self.postfix or ''}"
            out[name] = int(value) if key in _COUNT_KEYS else float(value)
        return out


def score_distributions(
    pred: Tensor, target: Tensor, format_ok: Tensor | None = None, **kwargs: Any
) -> dict[str, float]:
    """Every metric for one in-memory set of distributions (no cross-rank sync).

    ``kwargs`` go to ``DistributionMetrics`` (``js_base``, ``js_distance``).
    """
    kwargs.setdefault("sync_on_compute", False)
    metrics = DistributionMetrics(pred.shape[-1], **kwargs)
    metrics.update(pred, target, format_ok)
    return metrics.compute()
