"""Running evaluation's read-out outside the Trainer: batches to the device, the run's autocast."""

from __future__ import annotations

import contextlib

import torch


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast a Lightning ``precision`` (``bf16-mixed``, ``16-mixed``...) evaluates under; none for 32."""
    if "bf16" in precision:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch with its tensors on ``device`` (ids and other lists unchanged)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
