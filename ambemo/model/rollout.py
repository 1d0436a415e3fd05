"""Fast rollouts: K continuations of each prompt without repeating the prompt work K times.

``model.rollout_engine=fast`` (the default) generates with ``fast_sequences``; ``generate`` is the
plain ``model.generate`` on K copies of each prompt, kept as the baseline (``ambemo bench``
times both). What makes the fast path fast (docs/design.md, "Speed notes"):

- the audio encoder and the shared prompt run once per prompt; the prompt's KV cache is then
  copied K times into a *static* cache (fixed shapes, so the decode step can be captured);
- on CUDA the single-token decode step is ``torch.compile(mode="reduce-overhead")`` (CUDA
  graphs: one launch per step instead of hundreds of small kernels); on CPU it runs eagerly;
- LoRA adapters are merged for the rollout: each adapted projection reads a buffer holding
  W + delta_W instead of running the two extra low-rank matmuls. The base weights are swapped
  back afterwards, untouched, so they stay bit-identical (peft's merge/unmerge would add and
  subtract delta_W in place, which is not exact in floating point). The buffers cost one extra
  copy of the adapted weights (about 13 GB in bf16 for 7B with LoRA on every projection); when
  decoding is compiled they are kept between rollouts so the captured graphs see the same
  addresses, otherwise they are freed after each rollout;
- rollouts run in eval mode under ``torch.inference_mode`` whatever the training loop left
  behind (gradient checkpointing is only active in training mode), and the mode is restored.

Sampling semantics are generate's own: the logits processors (suppressed audio placeholders,
temperature, top-k/top-p) are built by generate's own helper from explicit settings
(``explicit_sampling``: nothing is inherited from the checkpoint's generation config, and a
processor the settings do not name is refused), tokens are drawn the same way, and a row stops
after the answer slot, at an EOS token of the generation config, or after ``max_new_tokens``.
tests/test_rollout.py checks greedy output token for token against ``generate``, adapters included.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence

import torch
from transformers import (
    LogitsProcessorList,
    StaticCache,
    StoppingCriteria,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ambemo.compat import generate_sampling_rules
from ambemo.model.readout import unwrap

ENGINES = ("fast", "generate")
CUDA_CACHE_BUCKET = 256
"""On CUDA the static cache length is rounded up to a multiple of this, so batches with
slightly different prompt lengths reuse one captured decode graph instead of recompiling."""


class StopAfterSlot(StoppingCriteria):
    """Stops each row once its newly generated tokens end with the answer slot's token ids (both
    engines: the fast one here and plain ``generate`` in ``ambemo.model.generation``)."""

    def __init__(self, slot_ids: Sequence[int], prompt_length: int) -> None:
        self.slot = torch.tensor(list(slot_ids))
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        k = len(self.slot)
        new = input_ids[:, self.prompt_length :]
        if new.shape[1] < k:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return (new[:, -k:] == self.slot.to(input_ids.device)).all(-1)


def _mergeable_lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """peft LoRA ``Linear`` layers whose active adapters are plain LoRA (no DoRA or other variant)."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:  # peft is a dependency, but a full fine-tune does not need it
        return []
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    for layer in layers:
        if layer.merged or any(a in getattr(layer, "lora_variant", {}) for a in layer.active_adapters):
            return []  # already merged by the user, or a variant whose merge is not W + BA: leave unmerged
    return layers


#: The only logits processors a rollout or an evaluation may run: what the explicit settings name.
ALLOWED_PROCESSORS = (SuppressTokensLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)


def explicit_sampling(do_sample: bool, temperature: float, top_p: float, top_k: int = 0) -> dict:
    """generate keyword arguments that fix every setting which changes the next-token distribution.

    generate fills what it is not given from the checkpoint's generation config and then from its
    own defaults (top-k 50 among them); a released checkpoint may carry top-k, top-p or a
    repetition penalty. The on-policy objectives score samples under the distribution they were
    drawn from, so nothing may slip in: penalties are switched off here, and sampling uses exactly
    ``temperature``, ``top_k`` (0 = off) and ``top_p`` (1.0 = off)."""
    neutral = {
        "repetition_penalty": 1.0,
        "encoder_repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0,
        "min_length": 0,
    }
    if not do_sample:
        return {"do_sample": False, **neutral}
    filters = {"typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}
    return {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p, **filters, **neutral}


def sampling_rules(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_p: float,
    suppress_ids: Sequence[int],
    pad_id: int,
    top_k: int = 0,
) -> tuple[LogitsProcessorList, torch.Tensor | None]:
    """generate's own logits processors for these explicit settings (``explicit_sampling``:
    suppression, temperature, top-k, top-p) and the EOS ids it would stop at, built by generate's
    helpers so the semantics cannot drift apart. Any other processor (one the checkpoint's
    generation config asks for, e.g. bad words or min-p) is an error, not a silent change."""
    processors, eos_ids = generate_sampling_rules(
        model,
        prompt_ids,
        suppress_tokens=list(suppress_ids),
        pad_token_id=pad_id,
        **explicit_sampling(do_sample, temperature, top_p, top_k),
    )
    unexpected = [type(p).__name__ for p in processors if not isinstance(p, ALLOWED_PROCESSORS)]
    if unexpected:
        raise ValueError(
            f"the checkpoint's generation config adds {', '.join(unexpected)} to sampling: ambemo samples only "
            "with its own settings (strategy.rollout_temperature / rollout_top_k / rollout_top_p); remove those "
            "entries from generation_config.json"
        )
    return processors, eos_ids


def supports(model: torch.nn.Module) -> bool:
    """Whether the fast engine knows this model's layout (Qwen2-Audio: audio merged into the
    prompt's embeddings, then a plain causal language model with 1-D positions)."""
    from transformers import Qwen2AudioForConditionalGeneration

    return isinstance(unwrap(model), Qwen2AudioForConditionalGeneration)


class RolloutEngine:
    """Generates groups of continuations for one model; keeps what must outlive a call (the
    static caches, the merged LoRA buffers and the compiled decode step)."""

    def __init__(self, model: torch.nn.Module, compile_decode: bool | None = None) -> None:
        self.model = model
        self.compile_decode = compile_decode
        self._caches: dict[tuple, StaticCache] = {}
        self._merged: dict[int, torch.Tensor] = {}
        self._compiled = None

    # ---- LoRA merge --------------------------------------------------------------------------

    @contextlib.contextmanager
    def merged_adapters(self) -> Iterator[None]:
        """LoRA adapters folded into the weights for the duration (no-op without adapters)."""
        layers = _mergeable_lora_layers(self.model)
        if not layers or not hasattr(self.model, "disable_adapter"):
            yield
            return
        originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for layer in layers:
                    weight = layer.get_base_layer().weight
                    buffer = self._merged.get(id(layer))
                    if buffer is None or buffer.shape != weight.shape or buffer.device != weight.device:
                        buffer = torch.empty_like(weight.data)
                        if self._compiles(weight.device):  # captured graphs need the same addresses next time
                            self._merged[id(layer)] = buffer
                    buffer.copy_(weight.data)
                    for adapter in layer.active_adapters:
                        if adapter in layer.lora_A:
                            buffer.add_(layer.get_delta_weight(adapter).to(buffer.dtype))
                    originals.append((weight, weight.data))
                    weight.data = buffer
            with self.model.disable_adapter():  # the merged weights already contain the adapters
                yield
        finally:
            for weight, data in originals:
                weight.data = data

    # ---- decoding ----------------------------------------------------------------------------

    def _decode(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: StaticCache):
        """One token per row through the language model: float32 logits of the next token (N, V)."""
        base = unwrap(self.model)
        out = base.model.language_model(
            input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        return base.get_output_embeddings()(out.last_hidden_state[:, -1]).float()

    def _compiles(self, device: torch.device) -> bool:
        """Whether decoding on ``device`` is compiled (CUDA by default; eager elsewhere)."""
        return device.type == "cuda" if self.compile_decode is None else self.compile_decode

    def _decode_step(self, device: torch.device):
        if not self._compiles(device):
            return self._decode
        if self._compiled is None:
            self._compiled = torch.compile(self._decode, mode="reduce-overhead", fullgraph=False)
        return self._compiled

    def _static_cache(self, rows: int, length: int, like: torch.Tensor) -> StaticCache:
        """A static cache for ``rows`` x ``length``, reused across calls (stable addresses for CUDA graphs)."""
        key = (rows, length, like.dtype, like.device)
        cache = self._caches.get(key)
        if cache is None:
            # one shape at a time: a new shape drops the old cache's memory
            self._caches.clear()
            cache = self._caches[key] = StaticCache(config=unwrap(self.model).config, max_cache_len=length)
        else:
            cache.reset()
        return cache

    def _prefill(self, batch: dict, group: int, length: int) -> tuple[torch.Tensor, StaticCache]:
        """Prompt (with audio) once per row; its KV copied ``group`` times into a static cache.
        Returns the next-token logits (rows * group, V) and the cache."""
        base = unwrap(self.model)
        mask = batch["attention_mask"]
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate sets them
        out = base.model(
            input_ids=batch["input_ids"],
            attention_mask=mask,
            input_features=batch["input_features"],
            feature_attention_mask=batch["feature_attention_mask"],
            position_ids=positions,
            use_cache=True,
        )
        logits = base.get_output_embeddings()(out.last_hidden_state[:, -1]).float().repeat_interleave(group, 0)
        prompt_cache = out.past_key_values
        first = prompt_cache.layers[0].keys
        cache = self._static_cache(mask.shape[0] * group, length, first)
        for index, layer in enumerate(prompt_cache.layers):
            cache.update(layer.keys.repeat_interleave(group, 0), layer.values.repeat_interleave(group, 0), index)
        return logits, cache

    @contextlib.contextmanager
    def rollout_state(self) -> Iterator[None]:
        """Eval mode (no dropout, no gradient checkpointing), merged adapters, inference mode; the
        training mode is restored afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.merged_adapters(), torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)

    def sequences(
        self,
        batch: dict,
        group: int,
        max_new_tokens: int,
        stop_ids: Sequence[int],
        suppress_ids: Sequence[int],
        pad_id: int,
        do_sample: bool,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> torch.Tensor:
        """Prompt + generated ids, (rows * group, prompt length + generated): what ``generate`` returns
        for ``repeat_rows(batch, group)``. Rows that stopped early are padded with ``pad_id``."""
        with self.rollout_state():
            ids, mask = batch["input_ids"], batch["attention_mask"]
            device, prompt_length = ids.device, ids.shape[1]
            processors, eos = sampling_rules(
                unwrap(self.model), ids, do_sample, temperature, top_p, suppress_ids, pad_id, top_k
            )
            stop = StopAfterSlot(stop_ids, prompt_length)

            total = prompt_length + max_new_tokens
            bucket = CUDA_CACHE_BUCKET if device.type == "cuda" else 1
            length = -(-total // bucket) * bucket
            logits, cache = self._prefill(batch, group, length)
            rows = ids.shape[0] * group
            sequences = torch.full((rows, total), pad_id, dtype=ids.dtype, device=device)
            sequences[:, :prompt_length] = ids.repeat_interleave(group, 0)
            full_mask = torch.ones(rows, length, dtype=mask.dtype, device=device)
            full_mask[:, :prompt_length] = mask.repeat_interleave(group, 0)
            next_position = mask.long().sum(-1).repeat_interleave(group, 0)[:, None]
            unfinished = torch.ones(rows, dtype=torch.bool, device=device)
            step = self._decode_step(device)
            end = prompt_length
            for t in range(max_new_tokens):
                scores = processors(sequences[:, :end], logits)
                if do_sample:
                    tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
                else:
                    tokens = scores.argmax(-1)
                tokens = torch.where(unfinished, tokens, pad_id)
                sequences[:, end] = tokens
                end += 1
                done = stop(sequences[:, :end], scores)
                if eos is not None:
                    done |= torch.isin(tokens, eos)
                unfinished &= ~done
                if t == max_new_tokens - 1 or not bool(unfinished.any()):
                    break
                logits = step(tokens[:, None], next_position + t, full_mask, cache)
                if step is not self._decode:
                    logits = logits.clone()  # a captured graph reuses its output buffer on the next replay
            return sequences[:, :end]


_ENGINES: weakref.WeakKeyDictionary[torch.nn.Module, RolloutEngine] = weakref.WeakKeyDictionary()


def engine_for(model: torch.nn.Module) -> RolloutEngine:
    """The model's rollout engine (one per model, so its caches and compiled step are reused)."""
    engine = _ENGINES.get(model)
    if engine is None:
        engine = _ENGINES[model] = RolloutEngine(model)
    return engine
