"""From clips to model inputs: prompts through the processor, teacher-forced targets, read-out positions.

The processor is the one place where a waveform and the audio placeholder become
``input_features`` and the right number of audio tokens, for the tiny and the real model alike.
Prompts and targets are tokenised separately and their ids concatenated, so the prompt tokens
seen in training are exactly those that generation starts from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ambemo.data.clip import Clip
from ambemo.model.backbone import Backbone
from ambemo.model.prompts import chat_prompt


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            if left:
                out[i, width - len(row) :] = torch.as_tensor(row)
            else:
                out[i, : len(row)] = torch.as_tensor(row)
    return out


class PromptEncoder:
    """Encodes batches of clips for one backbone, class list and prompt variant."""

    def __init__(self, backbone: Backbone, classes: Sequence[str], use_cot: bool, cache: bool = False) -> None:
        self.processor = backbone.processor
        self.tokenizer = backbone.tokenizer
        self.sample_rate = backbone.sample_rate
        self.chat_style = backbone.chat_style
        self.classes = list(classes)
        self.use_cot = use_cot
        self.pad_id = self.tokenizer.pad_token_id
        self.cache = cache
        self._encoded: dict[str, tuple[list[int], torch.Tensor, torch.Tensor]] = {}

    def _prompts(self, clips: Sequence[Clip]) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        """Prompt token ids (unpadded) and audio features per clip, through the processor.

        With ``cache``, each clip is encoded once and kept (clip ids are unique within a
        corpus): the log-mel extraction would otherwise be repeated every epoch.
        """
        encoded = self._encoded if self.cache else {}
        missing = [c for c in clips if c.id not in encoded]
        if missing:
            texts = [chat_prompt(self.classes, c.transcript, self.use_cot, style=self.chat_style) for c in missing]
            out = self.processor(
                text=texts,
                audio=[c.audio for c in missing],
                sampling_rate=self.sample_rate,
                return_tensors="pt",
                padding=True,
            )
            for i, clip in enumerate(missing):
                ids = out["input_ids"][i][out["attention_mask"][i].bool()].tolist()
                encoded[clip.id] = (ids, out["input_features"][i], out["feature_attention_mask"][i])
        rows = [encoded[c.id] for c in clips]
        audio = {
            "input_features": torch.stack([r[1] for r in rows]),
            "feature_attention_mask": torch.stack([r[2] for r in rows]),
        }
        return [r[0] for r in rows], audio

    def curated_ids(self, clips: Sequence[Clip]) -> list[list[int]]:
        """Token ids of each clip's curated reasoning (empty without CoT)."""
        if not self.use_cot:
            return [[] for _ in clips]
        missing = [c.id for c in clips if not c.cot]
        if missing:
            raise ValueError(
                f"clips {missing[:5]} ({len(missing)} in this batch) have no curated reasoning, which "
                "strategy.use_cot=true trains on: curate it (`ambemo curate ... --store S.jsonl`, then "
                "data.cot_store=S.jsonl) or set strategy.use_cot=false"
            )
        return [self.tokenizer.encode(c.cot, add_special_tokens=False) for c in clips]  # type: ignore[arg-type]

    def training_batch(self, clips: Sequence[Clip]) -> dict[str, torch.Tensor]:
        """Right-padded prompt + curated reasoning, with CE labels on the reasoning and the
        index of the answer slot's last token per row (where the read-out happens)."""
        prompt_ids, audio = self._prompts(clips)
        return {**assemble(prompt_ids, self.curated_ids(clips), self.pad_id), **audio, **_labels(clips)}

    def prompt_batch(self, clips: Sequence[Clip]) -> dict[str, torch.Tensor]:
        """Left-padded prompts (for generation, and for direct answers without reasoning)."""
        prompt_ids, audio = self._prompts(clips)
        return {
            "input_ids": _pad(prompt_ids, self.pad_id, left=True),
            "attention_mask": _pad([[1] * len(r) for r in prompt_ids], 0, left=True),
            **audio,
            **_labels(clips),
        }


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> dict:
    """``input_ids`` and ``attention_mask`` of left-padded rows (for generation and read-out)."""
    return {
        "input_ids": _pad(rows, pad_id, left=True).to(device),
        "attention_mask": _pad([[1] * len(r) for r in rows], 0, left=True).to(device),
    }


def unpadded_prompts(batch: dict) -> list[list[int]]:
    """The prompt ids of a (left- or right-padded) prompt batch, without padding."""
    return [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]


def assemble(prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int) -> dict:
    """Right-padded prompt + target rows with CE labels on the targets and the index of each
    row's last token (the answer slot's, when targets end with it: where the read-out happens)."""
    rows = [list(p) + list(t) for p, t in zip(prompts, targets, strict=True)]
    labels = [[-100] * len(p) + list(t) for p, t in zip(prompts, targets, strict=True)]
    return {
        "input_ids": _pad(rows, pad_id, left=False),
        "attention_mask": _pad([[1] * len(r) for r in rows], 0, left=False),
        "labels": _pad(labels, -100, left=False),
        "slot_index": torch.tensor([len(r) - 1 for r in rows]),
    }


def _labels(clips: Sequence[Clip]) -> dict:
    """What every batch carries besides model inputs: ids (for predictions files) and targets."""
    out: dict = {"ids": [c.id for c in clips]}
    if all(c.target is not None for c in clips):
        out["target"] = torch.stack([c.target for c in clips])  # type: ignore[misc]
    if all(c.latent is not None for c in clips):
        out["latent"] = torch.stack([c.latent for c in clips])  # type: ignore[misc]
    return out
