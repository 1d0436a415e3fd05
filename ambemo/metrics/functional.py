"""Per-utterance distribution metrics as pure tensor functions.

Every function takes ``pred`` and ``target`` of shape ``(N, C)`` (rows are probability
distributions in the same class order) and returns a tensor of shape ``(N,)``: one value per
utterance. Averaging, counting and DDP reduction are the job of ``ambemo.metrics.metrics``.

Conventions (docs/method.md, "Metrics"): JS is the Jensen-Shannon *divergence* in bits by default
(``base=2``, range [0, 1]); ``0 * log 0 = 0``; Brier is the sum of squares divided by C.
"""

from __future__ import annotations

import math

import torch


def _xlogy_ratio(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Elementwise p * log(p / q) with 0 * log(0 / q) = 0."""
    return torch.xlogy(p, p) - torch.xlogy(p, q)


def kl_divergence(target: torch.Tensor, pred: torch.Tensor, base: float = math.e) -> torch.Tensor:
    """KL(target || pred) per row, in nats by default (``base=2`` for bits)."""
    return _xlogy_ratio(target, pred).sum(-1) / math.log(base)


def js_divergence(pred: torch.Tensor, target: torch.Tensor, base: float = 2.0, distance: bool = False) -> torch.Tensor:
    """Jensen-Shannon divergence per row; bits by default, its square root with ``distance``."""
    mid = 0.5 * (pred + target)
    js = 0.5 * (_xlogy_ratio(pred, mid).sum(-1) + _xlogy_ratio(target, mid).sum(-1)) / math.log(base)
    js = js.clamp_min(0.0)  # rounding can give -1e-17 for identical rows
    return js.sqrt() if distance else js


def bhattacharyya_coefficient(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BC = sum_i sqrt(p_i q_i) per row (1 = identical distributions)."""
    return (pred * target).clamp_min(0.0).sqrt().sum(-1)


def brier_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-class Brier score per row: sum_i (p_i - q_i)^2 / C."""
    return (pred - target).pow(2).sum(-1) / pred.shape[-1]


def pearson_r2(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Pearson correlation between each row of ``pred`` and ``target``.

    Returns ``(r2, valid)``. A row whose target is constant (e.g. uniform votes) has no
    correlation; it is marked ``valid=False`` and its r2 set to 0, so callers can exclude and
    count it. A constant *prediction* against a varying target is a valid row with r2 = 0.
    """
    p = pred - pred.mean(-1, keepdim=True)
    t = target - target.mean(-1, keepdim=True)
    var_t = t.pow(2).sum(-1)
    var_p = p.pow(2).sum(-1)
    valid = var_t > eps
    cov = (p * t).sum(-1)
    denom = (var_p * var_t).clamp_min(eps * eps)
    r2 = torch.where(valid & (var_p > eps), cov.pow(2) / denom, torch.zeros_like(cov))
    return r2.clamp(0.0, 1.0), valid


def entropy(dist: torch.Tensor, base: float = 2.0) -> torch.Tensor:
    """Shannon entropy per row (bits by default)."""
    return -torch.xlogy(dist, dist).sum(-1) / math.log(base)


def normalise_rows(dist: torch.Tensor, atol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Renormalise rows to sum to 1; ``was_off`` marks rows whose sum was off by more than ``atol``."""
    total = dist.sum(-1, keepdim=True)
    was_off = (total.squeeze(-1) - 1.0).abs() > atol
    return dist / total, was_off
