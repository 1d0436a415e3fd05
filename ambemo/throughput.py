"""Training throughput: model FLOPs of a step, the GPUs' peak FLOP/s, and the callback that logs
``train/step_seconds``, ``train/tokens_per_s`` and ``train/mfu`` during a real run.

MFU = model FLOPs per second / the device's peak dense bf16 FLOP/s (None on CPU or an unknown
GPU). Model FLOPs of one SFT step (``sft_flops``), with T text tokens per row, N_lm the language
model's parameters without the embedding table (lm_head included, counted on every token, the
usual convention), N_train the trainable ones among them, L layers of width d, and F
audio-encoder positions per clip with N_audio its parameters:

    LM:    (2 N_lm [forward] + 2 N_lm [activation grads] + 2 N_train [weight grads]) * T
           + 3 * 2 L d T^2 [causal attention, forward + backward]
    audio: 2 N_audio F + 4 L_a d_a F^2 [forward], times 3 when the encoder is trained

so full fine-tuning gives the familiar 6 N T, and LoRA about 4 N T. Recomputation from gradient
checkpointing is not model FLOPs (it lowers MFU, as it should).
"""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ambemo.model.readout import unwrap

PEAK_BF16_FLOPS = {  # dense bf16 tensor-core peaks (vendor data sheets), matched on the device name
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of the device, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def sft_flops(model: torch.nn.Module, batch: dict) -> float | None:
    """Model FLOPs of one SFT training step on ``batch`` (formula in the module docstring); None
    for a family whose layout the formula does not know (only Qwen2-Audio's for now)."""
    from transformers import Qwen2AudioForConditionalGeneration

    base = unwrap(model)
    if not isinstance(base, Qwen2AudioForConditionalGeneration):
        return None
    text, audio = base.config.text_config, base.config.audio_config
    lm = base.model.language_model
    lm_params = [p for n, p in lm.named_parameters() if "embed_tokens" not in n] + list(base.lm_head.parameters())
    n_lm = sum(p.numel() for p in lm_params)
    n_train = sum(p.numel() for p in lm_params if p.requires_grad)
    tower = base.model.audio_tower
    n_audio = sum(p.numel() for p in tower.parameters())
    audio_trained = any(p.requires_grad for p in tower.parameters())
    lengths = batch["attention_mask"].sum(-1).double()
    lm_flops = (4 * n_lm + 2 * n_train) * lengths.sum() + 6 * text.num_hidden_layers * text.hidden_size * (
        lengths**2
    ).sum()
    positions = batch["input_features"].shape[-1] // 2  # the encoder's stride-2 convolution
    clips = batch["input_features"].shape[0]
    audio_flops = (
        clips
        * (2 * n_audio * positions + 4 * audio.encoder_layers * audio.d_model * positions**2)
        * (3 if audio_trained else 1)
    )
    return float(lm_flops + audio_flops)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ThroughputLog(Callback):
    """Logs, for every training batch: ``train/step_seconds`` (the step's wall time, data loading
    excluded), ``train/tokens_per_s`` (the batch's prompt and target tokens per second, over all
    processes) and, for SFT on a GPU whose peak is known (``PEAK_BF16_FLOPS``), ``train/mfu``.

    DPO and GRPO steps also generate rollouts, which the tokens of the utterance batch do not
    count: their tokens/s is a step rate in the units of SFT's, and no MFU is claimed for them."""

    def __init__(self) -> None:
        self._started = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        _sync(pl_module.device)
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: dict, batch_idx: int
    ) -> None:
        _sync(pl_module.device)
        seconds = max(time.perf_counter() - self._started, 1e-9)
        tokens = float(batch["attention_mask"].sum()) * trainer.world_size
        logs = {"train/step_seconds": seconds, "train/tokens_per_s": tokens / seconds}
        from ambemo.strategies.base import OnPolicyModule

        peak = peak_flops(pl_module.device)
        if peak and not isinstance(pl_module, OnPolicyModule):
            flops = sft_flops(pl_module.model, batch)
            if flops is not None:
                logs["train/mfu"] = flops / seconds / peak
        pl_module.log_dict(logs, on_step=True, on_epoch=False, batch_size=int(batch["attention_mask"].shape[0]))
