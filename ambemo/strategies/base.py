"""What every strategy shares: the backbone, evaluation (reason, then read out), metrics, optimizer.

A strategy subclasses ``EmotionModule`` and writes ``training_step``; validation and test are
the same for all of them: generate the reasoning from the prompt, read p_hat at the answer
slot, and score it against the human distribution.

Assumptions:
- Batches come from ``EmotionDataModule`` with this module's ``encoder``.
- Checkpoints hold only trainable weights (the LoRA adapters, or all weights when fully
  fine-tuning): the frozen base is re-loaded from ``model.path``, never duplicated on disk.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import lightning as L
import torch
from omegaconf import DictConfig

from ambemo.config import ConfigError, StrategyConfig
from ambemo.cot.budget import generation_budget_report
from ambemo.metrics.metrics import DistributionMetrics
from ambemo.model.backbone import Backbone
from ambemo.model.generation import Reading, Reasoning, generate_reasoning, read_distribution, repeat_rows
from ambemo.model.inputs import PromptEncoder, assemble, left_padded
from ambemo.model.readout import AUDIO_KEYS, LazyLogits, class_logits, readout_after
from ambemo.objectives.policy import label_logprobs

Read = TypeVar("Read")


def labelled_logprobs(
    outputs: LazyLogits, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, mask)``, (B, T-1): log-probs of ``labels`` under softmax(logits / temperature), the
    LM head applied only at the labelled positions (``objectives.policy.label_logprobs``)."""
    return label_logprobs(outputs.states, outputs.head, labels, temperature)


def warmup_cosine(step: int, total: int, warmup_ratio: float, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup_ratio`` of the steps, then cosine to ``min_ratio``."""
    warmup = max(1, round(warmup_ratio * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class SupervisedLossConfig(StrategyConfig):
    """The supervised terms that SFT and DPO add to their loss: KL at the answer slot and CE on the
    curated reasoning."""

    kl_weight: float = 1.0
    """lambda: weight of KL(p_human || p_model) at the answer slot (0 = the KL ablation)."""
    ce_weight: float = 1.0
    """Weight of the token cross-entropy on the curated reasoning (ignored without CoT)."""

    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {"kl_weight": (0, True), "ce_weight": (0, True)}


@dataclass
class OnPolicyConfig(StrategyConfig):
    """Settings of the on-policy strategies (DPO, GRPO): how training rollouts are sampled."""

    rollout_temperature: float = 1.0
    """Sampling temperature of training rollouts (DPO and GRPO; without CoT, of the emotions
    drawn from p_hat)."""
    rollout_top_p: float = 1.0
    """Nucleus sampling of training rollouts (1.0 = off; also applies to emotions drawn without CoT).
    GRPO refuses < 1: its ratio and KL would be taken under a distribution the sampler did not use."""
    rollout_top_k: int = 0
    """Top-k sampling of training rollouts (0 = off). GRPO refuses > 0, as ``rollout_top_p``. Every
    sampling setting is explicit: nothing comes from the checkpoint's generation config."""
    rollout_max_new_tokens: int = 160
    """Most reasoning tokens per rollout before the answer slot is forced."""

    #: The field that holds how many rollouts are sampled per prompt (``ambemo bench`` sets it).
    ROLLOUTS: ClassVar[str] = ""
    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {
        "rollout_temperature": (0, False),
        "rollout_top_p": (0, False),
        "rollout_max_new_tokens": (1, True),
    }
    AT_MOST: ClassVar[dict[str, tuple[float, bool]]] = {"rollout_top_p": (1, True)}

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        s = cfg.strategy
        if s.rollout_top_k < 0 or not 0.0 < s.rollout_top_p <= 1.0:
            raise ConfigError("'strategy.rollout_top_k' must be >= 0 and 'strategy.rollout_top_p' in (0, 1]")
        if s.rollout_temperature <= 0:
            raise ConfigError("'strategy.rollout_temperature' must be > 0")


class EmotionModule(L.LightningModule):
    """Base LightningModule: a backbone plus shared evaluation and optimisation."""

    settings: ClassVar[type[StrategyConfig]] = StrategyConfig
    """The strategy's settings class: the schema of ``cfg.strategy`` when this strategy is chosen."""
    objective_metric: ClassVar[str] = "train/loss"
    """The logged training metric that follows what the strategy optimises (SFT's ``train/kl``):
    a run that trained has logged it."""

    def __init__(self, cfg: DictConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.model = backbone.model
        self.classes = list(cfg.data.classes)
        self.use_cot = bool(cfg.strategy.use_cot)
        self.encoder = PromptEncoder(
            backbone, backbone.prompt_classes, self.use_cot, cache=bool(cfg.data.cache_encoded)
        )
        self.val_metrics = DistributionMetrics(len(self.classes))
        self.test_metrics = DistributionMetrics(len(self.classes))
        self.test_rows: list[dict] = []
        # Checkpoints carry only trainable weights; the frozen rest comes from the base model.
        self.strict_loading = False

    # ---- start-up ---------------------------------------------------------------------------

    def before_resume(self) -> None:
        """Called when a run resumes, with the weights training started from loaded and before the
        checkpoint's are restored: a strategy that keeps something of the starting weights (the
        on-policy strategies' reference policy) takes it here."""

    def generation_budgets(self) -> dict[str, int]:
        """Config key -> most reasoning tokens generated there (evaluation; on-policy: rollouts too)."""
        return {"strategy.max_new_tokens": int(self.cfg.strategy.max_new_tokens)}

    def on_fit_start(self) -> None:
        self.report_generation_budget()

    def report_generation_budget(self) -> None:
        """Count the curated reasonings that do not fit the generation budgets, and say so."""
        trainer = self._trainer  # None when a step is driven without a Trainer (bench, tests)
        datamodule = getattr(trainer, "datamodule", None)
        if not self.use_cot or datamodule is None or not trainer.is_global_zero:
            return
        texts = [row.cot for row in datamodule.splits.get("train", []) if row.cot]
        encoded = self.backbone.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        lengths = [len(ids) for ids in encoded]
        for line in generation_budget_report(lengths, self.generation_budgets()):
            print(f"[ambemo] {line}")

    # ---- evaluation -------------------------------------------------------------------------

    def read(self, batch: dict) -> Reading:
        return read_distribution(
            self.backbone, batch, self.use_cot, self.cfg.strategy.max_new_tokens, engine=self.cfg.model.rollout_engine
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        reading = self.read(batch)
        self.val_metrics.update(reading.distribution, batch["target"], reading.format_ok)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        reading = self.read(batch)
        self.test_metrics.update(reading.distribution, batch["target"], reading.format_ok)
        for i, uid in enumerate(batch["ids"]):
            row = {
                "id": uid,
                "distribution": dict(zip(self.classes, reading.distribution[i].tolist(), strict=True)),
                "target": dict(zip(self.classes, batch["target"][i].tolist(), strict=True)),
            }
            if reading.reasoning is not None:
                row["reasoning"] = reading.reasoning[i]
                row["format_ok"] = bool(reading.format_ok[i])  # type: ignore[index]
            self.test_rows.append(row)

    def on_test_epoch_start(self) -> None:
        self.test_rows = []

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metrics("test", self.test_metrics)
        if self.trainer.world_size > 1:
            # Every rank scored its shard; rank 0 writes predictions.jsonl, so collect them all.
            # A distributed sampler pads with repeated clips: keep each id once.
            shards: list[list[dict]] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(shards, self.test_rows)
            unique = {row["id"]: row for shard in shards for row in shard}
            self.test_rows = list(unique.values())

    def _log_metrics(self, split: str, metrics: DistributionMetrics) -> dict[str, float]:
        values = metrics.compute()
        metrics.reset()
        self.log_dict({f"{split}/{k}": float(v) for k, v in values.items()}, sync_dist=False)
        return values

    def prompt_and_curated(self, batch: dict) -> tuple[list[list[int]], list[list[int]], dict]:
        """From a training batch (prompt + curated reasoning, right-padded): the prompt ids, the
        curated reasoning ids, and a left-padded prompt batch (with audio) to sample from."""
        prompts, curated = [], []
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            real = mask.bool()
            is_target = (labels != -100) & real
            prompts.append(ids[real & ~is_target].tolist())
            curated.append(ids[is_target].tolist())
        gen = left_padded(prompts, self.backbone.tokenizer.pad_token_id, batch["input_ids"].device)
        gen.update({k: batch[k] for k in AUDIO_KEYS})
        return prompts, curated, gen

    # ---- optimisation -----------------------------------------------------------------------

    #: optimizer steps per training batch the Trainer counts (GRPO steps itself: its
    #: ``num_iterations`` / its own accumulation): sizes the LR schedule
    optimizer_steps_per_batch: float = 1.0

    def configure_optimizers(self) -> dict:
        s = self.cfg.strategy
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
        total = max(1, math.ceil(self.trainer.estimated_stepping_batches * self.optimizer_steps_per_batch))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, s.warmup_ratio, s.min_lr_ratio)
        )
        schedule_config = {"scheduler": schedule, "interval": "step", "name": "train/lr"}  # logged name
        return {"optimizer": optimizer, "lr_scheduler": schedule_config}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # LoRA: the adapters only (the base comes from model.path). Full fine-tuning: the whole
        # model, frozen buffers-as-parameters included. Never a frozen reference copy.
        full = self.cfg.model.finetune == "full"
        keep = {f"model.{n}" for n, p in self.model.named_parameters() if full or p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}


class OnPolicyModule(EmotionModule):
    """Base of the on-policy strategies (DPO, GRPO): rollouts from the current policy and a
    reference policy. With LoRA the reference is the same weights with adapters disabled (no
    second copy in memory); with full fine-tuning it is a frozen copy of the starting weights,
    made by ``freeze_reference`` once those are loaded."""

    settings: ClassVar[type[StrategyConfig]] = OnPolicyConfig

    def __init__(self, cfg: DictConfig, backbone: Backbone) -> None:
        super().__init__(cfg, backbone)
        self.reference_model: torch.nn.Module | None = None

    def before_resume(self) -> None:
        # the reference policy is the weights training started from: snapshot them before the
        # checkpoint's weights are restored (on_fit_start would copy those)
        self.freeze_reference()

    def freeze_reference(self) -> None:
        """Snapshot the current weights as the reference (full fine-tuning only)."""
        if self.cfg.model.finetune == "full":
            import copy

            reference = copy.deepcopy(self.model).eval()
            reference.requires_grad_(False)
            # a plain attribute, not a submodule: never trained, saved or moved by the optimizer
            object.__setattr__(self, "reference_model", reference)

    def generation_budgets(self) -> dict[str, int]:
        return super().generation_budgets() | {
            "strategy.rollout_max_new_tokens": int(self.cfg.strategy.rollout_max_new_tokens)
        }

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.cfg.model.finetune == "full" and self.reference_model is None:
            self.freeze_reference()
        if self.reference_model is not None:
            self.reference_model.to(self.device)

    @torch.no_grad()
    def reference(self, batch: dict, read: Callable[[LazyLogits], Read]) -> Read:
        """``read`` applied to the reference policy's outputs for a batch, e.g. its label log-probs
        (inside the reference's context: without gradient, in eval mode, and with the adapters
        disabled), so the reference is the same deterministic function at every step."""
        if self.reference_model is not None:
            return read(LazyLogits(self.reference_model, batch))
        with self.evaluating(), self.model.disable_adapter():  # peft: the base weights
            return read(LazyLogits(self.model, batch))

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout, LoRA's included) for the duration; the training mode is restored.
        Every read-out that rewards or selects a sequence runs in it, sampled or curated alike."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def sample(self, gen_batch: dict, num: int) -> tuple[dict, Reasoning, torch.Tensor]:
        """``num`` sampled reasonings per prompt and their read-outs: ``(repeated batch, reasoning, p_hat)``.

        Sampling runs in eval mode (no dropout) and with the KV cache, whatever the training
        loop's mode; the rollout settings are ``strategy.rollout_*`` (all explicit: nothing from the
        checkpoint's generation config), the engine ``model.rollout_engine``.
        """
        s = self.cfg.strategy
        repeated = repeat_rows(gen_batch, num)
        with self.evaluating():
            reasoning = generate_reasoning(
                self.backbone,
                gen_batch,
                s.rollout_max_new_tokens,
                do_sample=True,
                temperature=s.rollout_temperature,
                top_p=s.rollout_top_p,
                top_k=s.rollout_top_k,
                group=num,
                engine=self.cfg.model.rollout_engine,
            )
            distribution = readout_after(self.backbone, repeated, reasoning.ids)
        return repeated, reasoning, distribution

    def answer_log_probs(self, outputs: LazyLogits, batch: dict) -> torch.Tensor:
        """Without reasoning the policy *is* the read-out: log p_hat over the classes at the
        answer slot, (B, C), from the outputs of ``self.model`` or of ``self.reference``."""
        slot = outputs.at(batch["slot_index"])
        return torch.log_softmax(class_logits(slot, self.backbone.class_token_ids).float(), dim=-1)

    @torch.no_grad()
    def answer_sampling_probs(self, log_p: torch.Tensor) -> torch.Tensor:
        """The distribution emotions are drawn from without CoT: p_hat at the rollout temperature,
        then top-k / top-p (renormalised by ``torch.multinomial``). (B, C)."""
        s = self.cfg.strategy
        probs = torch.softmax(log_p.detach() / s.rollout_temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # nucleus: the smallest set of classes holding top_p of the mass; top-k: the k largest
        outside = sorted_probs.cumsum(-1) - sorted_probs >= s.rollout_top_p
        if s.rollout_top_p >= 1.0:  # off: no class dropped to rounding in the cumulative sum
            outside[:] = False
        if s.rollout_top_k > 0:
            outside[:, s.rollout_top_k :] = True
        return probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))

    @torch.no_grad()
    def sample_answers(self, log_p: torch.Tensor, num: int) -> torch.Tensor:
        """``num`` emotions per utterance drawn from ``answer_sampling_probs``: class indices,
        (B, num). The answer-only counterpart of ``sample``."""
        return torch.multinomial(self.answer_sampling_probs(log_p), num, replacement=True)

    def sequences(
        self,
        prompts: list[list[int]],
        targets: list[list[int]],
        audio_from: dict,
        rows: list[int],
        forced_tokens: list[int] | None = None,
    ) -> dict:
        """Right-padded prompt + target batch for scoring, with the audio of ``audio_from[rows]``.
        ``forced_tokens`` (per row): the last tokens of a target that were appended (a forced answer
        slot), not sampled: kept as context for the read-out, left out of the labels."""
        out = assemble(prompts, targets, self.backbone.tokenizer.pad_token_id)
        for row, forced in enumerate(forced_tokens or []):
            if forced:
                end = int(out["slot_index"][row]) + 1
                out["labels"][row, end - forced : end] = -100
        out = {k: v.to(self.device) for k, v in out.items()}
        index = torch.as_tensor(rows, device=self.device)
        out.update({k: audio_from[k][index] for k in AUDIO_KEYS})
        return out
