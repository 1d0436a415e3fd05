"""DPO, GRPO and GRPO_z as the paper specifies them, checked at the strategy level (the modules'
own steps on the tiny model), not only the loss formulas: what is sampled, what is scored under
which distribution, which sequence is rejected, how the curated member is rewarded, and what the
format reward pays for."""

from __future__ import annotations

import pytest
import torch
from test_readout import COT, _clips
from test_rewards import GOOD
from transformers import SuppressTokensLogitsProcessor, TemperatureLogitsWarper

from ambemo.config import ConfigError, compose
from ambemo.metrics.functional import js_divergence
from ambemo.model.backbone import load_backbone
from ambemo.model.generation import generate_reasoning
from ambemo.model.prompts import ANSWER_SLOT
from ambemo.model.readout import LazyLogits, forward_hidden, forward_logits
from ambemo.model.rollout import sampling_rules
from ambemo.objectives.rewards import format_reward
from ambemo.strategies import build_strategy


def _module(experiment: str, *overrides: str):
    torch.manual_seed(0)
    cfg = compose(experiment, ["model.init_from=null", "strategy.rollout_max_new_tokens=10", *overrides])
    module = build_strategy(cfg, load_backbone(cfg.model, cfg.data.classes))
    module.freeze_reference()
    return module


def _batch(module, n: int = 2) -> dict:
    return module.encoder.training_batch(_clips(n))


def _sample_with(module, distributions: torch.Tensor):
    """``module.sample`` as it is, but with the read-outs replaced by ``distributions`` (B*n, C)."""
    real = module.sample

    def sample(gen: dict, num: int):
        repeated, reasoning, _ = real(gen, num)
        return repeated, reasoning, distributions

    return sample


def _spy(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list:
    """Record the arguments of every call of ``owner.name``."""
    calls: list = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


# ---- 4a: the format reward pays only for answer slots the model wrote ---------------------------


def test_forced_slot_and_chat_tokens_earn_no_format_reward() -> None:
    assert format_reward(GOOD, slot_written=True) == 1.0
    # cut off before the slot (max tokens), the slot then forced: the same text, nothing earned
    assert format_reward(GOOD, slot_written=False) == 0.0
    # the reasoning ended with <|im_end|> and the slot was forced after it
    ended = GOOD.replace("\n" + ANSWER_SLOT, "<|im_end|>\n" + ANSWER_SLOT)
    assert format_reward(ended, slot_written=True) == 0.0
    assert format_reward(GOOD.replace("neutral words.", "neutral words.<|endoftext|>"), slot_written=True) == 0.0


def test_grpo_rollout_cut_before_the_slot_gets_no_format_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module("grpo_cot", "strategy.group_size=2")
    tokenizer = module.backbone.tokenizer
    cut = tokenizer.encode(GOOD.removesuffix(ANSWER_SLOT), add_special_tokens=False)
    whole = tokenizer.encode(GOOD, add_special_tokens=False)
    pad = tokenizer.pad_token_id

    def fake_sequences(backbone, batch, max_new_tokens, **options):
        rows = batch["input_ids"].repeat_interleave(options.get("group", 1), 0)
        # rows 0, 1: cut off before the slot (forced); rows 2, 3: the model wrote the slot itself
        tails = [cut, cut, whole, whole]
        width = max(map(len, tails))
        tails = torch.tensor([t + [pad] * (width - len(t)) for t in tails])
        return torch.cat([rows, tails], dim=1)

    monkeypatch.setattr("ambemo.model.generation.generate_sequences", fake_sequences)
    rollouts = module.rollouts(_batch(module))
    # half the sampled members wrote the slot: format reward 0.5 on average, not 1.0
    assert float(rollouts.logs["train/format_reward"]) == pytest.approx(0.5)


# ---- 4b: log-probs under the distribution the rollouts were sampled from ------------------------


def test_sampling_filters_are_explicit_never_the_checkpoints() -> None:
    module = _module("grpo_cot")
    model = module.backbone.model
    # a checkpoint whose generation config carries its own filters (as released checkpoints do)
    model.generation_config.top_k = 5
    model.generation_config.top_p = 0.5
    model.generation_config.repetition_penalty = 1.3
    prompt = torch.ones(1, 4, dtype=torch.long)
    audio = module.backbone.audio_token_ids
    sampled, _ = sampling_rules(model, prompt, True, 0.7, 1.0, audio, 0)
    assert [type(p) for p in sampled] == [SuppressTokensLogitsProcessor, TemperatureLogitsWarper]
    greedy, _ = sampling_rules(model, prompt, False, 1.0, 1.0, audio, 0)
    assert [type(p) for p in greedy] == [SuppressTokensLogitsProcessor]


@pytest.mark.parametrize("setting", ["strategy.rollout_top_p=0.9", "strategy.rollout_top_k=20"])
@pytest.mark.parametrize("experiment", ["grpo_cot", "grpo"])
def test_grpo_refuses_truncated_sampling(experiment: str, setting: str) -> None:
    with pytest.raises(ConfigError, match="sampling distribution"):
        compose(experiment, [setting])


def test_grpo_pass0_old_logprobs_are_the_samplers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    temperature = 0.7
    module = _module("grpo_cot", "strategy.group_size=2", f"strategy.rollout_temperature={temperature}")
    sampler_probs: list[torch.Tensor] = []
    multinomial = torch.multinomial

    def record(probs: torch.Tensor, *args, **kwargs):
        sampler_probs.append(probs.detach().clone())
        return multinomial(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", record)
    built = _spy(monkeypatch, module, "sequences")
    rollouts = module.rollouts(_batch(module))
    monkeypatch.undo()
    seq = module.sequences(*built[0][0], **built[0][1])
    old_logp, mask = rollouts.score()  # pass 0: pi_old is this, detached (ratio exactly 1)
    with torch.no_grad():
        logits = forward_logits(module.model, seq)[:, :-1] / temperature
    # the sampler never draws the audio placeholders: its distribution is p_T renormalised without them
    kept = 1 - torch.softmax(logits, -1)[..., module.backbone.audio_token_ids].sum(-1)
    checked = 0
    for row in range(seq["labels"].shape[0]):
        positions = mask[row].nonzero().flatten()
        tokens = seq["labels"][row, 1:][positions]
        for step, (position, token) in enumerate(zip(positions.tolist(), tokens.tolist(), strict=True)):
            if step >= len(sampler_probs):
                break
            expected = sampler_probs[step][row, token]
            torch.testing.assert_close(
                old_logp[row, position].exp() / kept[row, position], expected, rtol=1e-4, atol=1e-6
            )
            checked += 1
    assert checked >= 8


# ---- 4c, 4d: GRPO_z's curated member ------------------------------------------------------------


def test_grpoz_reads_every_member_in_eval_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module("grpoz_cot", "strategy.group_size=2", "model.finetune=lora")
    module.model.train()  # as in the training loop: LoRA dropout active
    modes: list[bool] = []

    def recording(forward):
        def record(model, batch):
            modes.append(model.training)
            return forward(model, batch)

        return record

    # the read-out runs the headless forward (logits only at the slot), or full logits without one
    monkeypatch.setattr("ambemo.model.readout.forward_logits", recording(forward_logits))
    monkeypatch.setattr("ambemo.model.readout.forward_hidden", recording(forward_hidden))
    module.rollouts(_batch(module))
    assert len(modes) >= 2 and not any(modes)  # the K rollouts' read-out and the curated one's
    assert module.model.training  # and the training mode is back


@pytest.mark.parametrize("rule", ["group_max", "own"])
def test_grpoz_member_order_reward_and_advantage_follow_the_rule(monkeypatch: pytest.MonkeyPatch, rule: str) -> None:
    module = _module(
        "grpoz_cot", "strategy.group_size=2", f"strategy.curated_reward={rule}", "strategy.ref_kl_weight=0"
    )
    batch = _batch(module)
    target = batch["target"]
    # rollout 0 of each utterance reads out the human distribution exactly (reward 0, the best
    # possible KL reward); rollout 1 a uniform one; the curated reasoning a one-hot (the worst)
    uniform = torch.full_like(target, 1 / target.shape[1])
    one_hot = torch.nn.functional.one_hot(target.argmin(-1), target.shape[1]).float()
    rollouts = torch.stack([target, uniform], 1).reshape(-1, target.shape[1])
    monkeypatch.setattr(module, "sample", _sample_with(module, rollouts))
    monkeypatch.setattr("ambemo.strategies.grpo.readout_after", lambda *a, **k: one_hot)
    monkeypatch.setattr("ambemo.strategies.grpo.format_reward", lambda *a, **k: 0.0)
    built = _spy(monkeypatch, module, "sequences")
    out = module.rollouts(batch)

    _prompts, members, _, rows = built[0][0]
    _, curated, _ = module.prompt_and_curated(batch)
    assert rows == [0, 0, 0, 1, 1, 1]  # members of utterance i are consecutive: K rollouts, then curated
    assert [members[2], members[5]] == curated
    advantages = out.advantages.view(2, 3)
    own = -torch.nn.functional.kl_div(one_hot.clamp_min(1e-12).log(), target, reduction="none").sum(-1)
    if rule == "group_max":  # the paper: the curated trajectory receives the highest reward
        torch.testing.assert_close(out.logs["train/reward_curated"], torch.tensor(0.0), atol=1e-6, rtol=0)
        assert torch.equal(advantages[:, 2], advantages.max(1).values)
    else:  # rewarded from its own read-out like any member: here the worst of its group
        torch.testing.assert_close(out.logs["train/reward_curated"], own.mean(), atol=1e-5, rtol=1e-5)
        assert torch.equal(advantages[:, 2], advantages.min(1).values) and (advantages[:, 2] < 0).all()
    # on its own merit it is the worst of its group, whatever it is trained with
    torch.testing.assert_close(out.logs["train/reward_curated_own"], own.mean(), atol=1e-5, rtol=1e-5)
    assert float(out.logs["train/curated_best"]) == 0.0


def test_curated_reward_rule_is_validated() -> None:
    assert compose("grpoz_cot", []).strategy.curated_reward == "group_max"
    with pytest.raises(ConfigError, match="curated_reward"):
        compose("grpoz_cot", ["strategy.curated_reward=best"])


# ---- 4e: GRPO without CoT rewards with the probability the emotion was drawn with ---------------


def test_grpo_without_cot_rewards_with_the_sampling_probability(monkeypatch: pytest.MonkeyPatch) -> None:
    temperature = 0.5
    module = _module("grpo", "strategy.group_size=4", f"strategy.rollout_temperature={temperature}")
    calls = _spy(monkeypatch, __import__("ambemo.strategies.grpo", fromlist=["x"]), "answer_reward")
    batch = module.encoder.training_batch(_clips(2))  # without CoT: the prompt ends at the answer slot
    module.rollouts(batch)
    (_, sampling_log_p, _), _ = calls[0]
    with torch.no_grad():
        log_p = module.answer_log_probs(LazyLogits(module.model, batch), batch)
    torch.testing.assert_close(sampling_log_p, torch.log_softmax(log_p / temperature, -1), rtol=1e-5, atol=1e-6)


# ---- 4f: DPO's KL and CE terms on every utterance -----------------------------------------------


def test_dpo_kl_and_ce_cover_every_utterance(monkeypatch: pytest.MonkeyPatch) -> None:
    import ambemo.strategies.dpo as dpo

    module = _module("dpo_cot", "strategy.num_rollouts=2")
    batch = _batch(module, 3)
    target = batch["target"]
    far = torch.nn.functional.one_hot(target.argmin(-1), target.shape[1]).float()
    # only utterance 0 has a rollout far enough from the human distribution to reject
    rollouts = torch.stack([target, target], 1)
    rollouts[0, 1] = far[0]
    monkeypatch.setattr(module, "sample", _sample_with(module, rollouts.reshape(-1, target.shape[1])))
    kl_calls = _spy(monkeypatch, dpo, "readout_kl")
    logprob_calls = _spy(monkeypatch, dpo, "labelled_logprobs")
    module.training_step(batch, 0)
    kl_targets = kl_calls[0][0][1]
    for i in range(3):
        assert (kl_targets == target[i]).all(-1).any(), f"utterance {i} has no KL term"
    policy_labels = logprob_calls[0][0][1]
    # one policy pass: every utterance's curated reasoning (the CE term's rows), then the one rejected
    assert policy_labels.shape[0] == 3 + 1

    # no rejectable rollout at all: the KL and CE terms still train
    monkeypatch.setattr(module, "sample", _sample_with(module, target.repeat_interleave(2, 0)))
    loss = module.training_step(batch, 0)
    assert loss.requires_grad and float(loss.detach()) > 0


def test_dpo_rejects_the_max_js_rollout_and_labels_only_completions(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module("dpo_cot", "strategy.num_rollouts=3")
    batch = _batch(module, 2)
    target = batch["target"]
    uniform = torch.full_like(target, 1 / target.shape[1])
    far = torch.nn.functional.one_hot(target.argmin(-1), target.shape[1]).float()
    # utterance 0: rollout 2 is the farthest; utterance 1: rollout 1
    rollouts = torch.stack([torch.stack([target[0], uniform[0], far[0]]), torch.stack([uniform[1], far[1], target[1]])])
    js = js_divergence(rollouts.reshape(-1, target.shape[1]), target.repeat_interleave(3, 0)).view(2, 3)
    assert js.argmax(1).tolist() == [2, 1]
    sampled: list = []
    real = module.sample

    def sample(gen: dict, num: int):
        repeated, reasoning, _ = real(gen, num)
        sampled.append(reasoning)
        return repeated, reasoning, rollouts.reshape(-1, target.shape[1])

    monkeypatch.setattr(module, "sample", sample)
    built = _spy(monkeypatch, module, "sequences")
    module.training_step(batch, 0)
    prompts, targets, _, rows = built[0][0]
    reasoning = sampled[0]
    _, curated, _ = module.prompt_and_curated(batch)
    rejected = [reasoning.ids[0 * 3 + 2], reasoning.ids[1 * 3 + 1]]
    assert targets == curated + rejected and rows == [0, 1, 0, 1]
    seq = module.sequences(*built[0][0], **built[0][1])
    forced = [0, 0, reasoning.forced_tokens[2], reasoning.forced_tokens[4]]
    for row, (prompt, completion) in enumerate(zip(prompts, targets, strict=True)):
        labels = seq["labels"][row]
        assert (labels[: len(prompt)] == -100).all()  # never the prompt
        scored = labels[len(prompt) : len(prompt) + len(completion)]
        sampled_part = len(completion) - forced[row]  # a forced slot was not sampled
        assert scored[:sampled_part].tolist() == completion[:sampled_part]
        assert (scored[sampled_part:] == -100).all() and (labels[len(prompt) + len(completion) :] == -100).all()


def test_reference_is_the_base_model_with_adapters_disabled() -> None:
    module = _module("dpo_cot", "model.finetune=lora")
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    torch.manual_seed(0)  # the same random base weights, without adapters
    base = load_backbone(compose("dpo_cot", ["model.finetune=full"]).model, module.classes).model.eval()
    module.model.eval()
    batch = _batch(module)
    with torch.no_grad():
        reference = module.reference(batch, lambda out: out.head(out.states))  # full logits
        torch.testing.assert_close(reference, forward_logits(base, batch), rtol=1e-4, atol=1e-4)
        assert (forward_logits(module.model, batch) - reference).abs().max() > 1e-2


# ---- 4g, 4h: the forced slot and the generation budget ------------------------------------------


def test_forced_slot_has_the_curated_context() -> None:
    module = _module("grpo_cot")
    backbone = module.backbone
    tokenizer = backbone.tokenizer
    curated_tail = tokenizer.encode(COT, add_special_tokens=False)[-3:]
    assert tokenizer.decode(curated_tail) == "\n" + ANSWER_SLOT
    gen = module.encoder.prompt_batch(_clips(2))
    reasoning = generate_reasoning(backbone, gen, 4)  # too short to write a reasoning: the slot is forced
    for ids, forced in zip(reasoning.ids, reasoning.forced_tokens, strict=True):
        assert forced == 3 and ids[-3:] == curated_tail  # as in training: a line break, then the slot


def test_curated_reasonings_over_the_generation_budget_are_reported(
    fast_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from ambemo.train import train

    overrides = [*fast_overrides, "trainer.max_epochs=1", "logger=csv", "data.limit_train=16"]
    train(compose("sft_cot", [*overrides, "strategy.max_new_tokens=24"]))
    out = capsys.readouterr().out
    assert "16 of 16 curated reasonings are longer than strategy.max_new_tokens=24" in out
