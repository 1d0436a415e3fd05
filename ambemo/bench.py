"""``ambemo bench``: training-step and rollout speed, measured through the real strategy code.

    ambemo bench                                   # CPU, tiny model (seconds)
    ambemo bench --size 7b                         # GPU: Qwen2-Audio-7B-size model, random weights
    ambemo bench --group 8 --new-tokens 128 --json bench.json [key=value ...]
    ambemo bench --size 7b --layers 2 --device cpu --only grpoz model.dtype=bfloat16  # 7B width, CPU

Prints one table: seconds per step, tokens/s, MFU and peak memory for one SFT, one on-policy DPO
and one GRPO step (each through its strategy module's ``training_step``, then backward and an
AdamW step; ``--only`` adds ``grpoz``, GRPO_z's group of K rollouts plus the curated reasoning),
and rollout tokens/s for one group of K continuations of N new tokens, with the fast engine
(``ambemo.model.rollout``) beside plain ``generate`` timed in the same run. The rollouts are
timed *after* the training steps, in the state a GRPO loop leaves the model in.

Peak memory is per measurement: on CUDA the allocator's peak, on Linux CPUs the process's peak
resident set (VmHWM, reset before each measurement); ``memory_before_gb`` is what was in use
when the measurement started (weights, optimizer state), so the difference is the step's own.
On a CPU the resident set also counts freed memory that glibc keeps in its heap; run with
``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`` for a peak that follows the live tensors.

``--size 7b`` builds Qwen2AudioForConditionalGeneration from Qwen2-Audio-7B's dimensions with
random weights directly on the device (no download; the tiny model's offline tokenizer supplies
the ids), then applies the ``model=qwen2_audio_7b`` settings (dtype, attention, LoRA,
checkpointing). ``--layers N`` keeps the real width and vocabulary with N layers in the language
model and the audio encoder: the same per-token costs of the LM head and the logits at a
fraction of the memory (CPU measurements). ``key=value`` arguments override the config as in
``ambemo train``.

MFU (SFT only) = model FLOPs per second / the GPU's peak dense bf16 FLOPs ('n/a' on CPU or an
unknown GPU); the model FLOPs of a step are ``ambemo.throughput.sft_flops``, which training runs
log too (``train/tokens_per_s``, ``train/mfu``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ambemo.config import compose, parse_overrides
from ambemo.model.backbone import Backbone, load_backbone, random_model
from ambemo.model.families.qwen2_audio import qwen2_audio_7b_config
from ambemo.model.generation import generate_sequences
from ambemo.model.inputs import Clip
from ambemo.model.prompts import CoT, format_cot
from ambemo.strategies import EmotionModule, build_strategy
from ambemo.strategies.base import OnPolicyConfig, OnPolicyModule
from ambemo.throughput import peak_flops, sft_flops

#: The measured training steps and the experiment each one runs: one per built-in strategy, and
#: GRPO_z, GRPO's variant with the curated member (an experiment, not a strategy). These are the
#: keys of ``bench.json`` that ``ambemo gpucheck`` and docs/gpu.md read; what a step needs (its
#: rollouts, its MFU) comes from the experiment's strategy, so a strategy is timed by adding a line.
EXPERIMENTS = {"sft": "sft_cot", "dpo": "dpo_cot", "grpo": "grpo_cot", "grpoz": "grpoz_cot"}
STEPS = tuple(EXPERIMENTS)
MEASUREMENTS = (*STEPS, "rollouts")


def build_backbone(cfg: DictConfig, size: str, device: torch.device, layers: int | None = None) -> Backbone:
    """The tiny backbone, or a 7B-size one with random weights built on ``device`` (with ``layers``
    layers in the language model and the audio encoder instead of the release's 32 each)."""
    if size == "tiny":
        backbone = load_backbone(cfg.model, cfg.data.classes)
        backbone.model.to(device)
        return backbone
    # Tokenizer, processor and read-out ids from the tiny loader with the real model's audio
    # window (30 s, 128 mel bins); the model itself is replaced by the 7B-size one.
    small = cfg.model.copy()
    small.name, small.finetune, small.gradient_checkpointing = "tiny", "full", False
    small.tiny.num_mel_bins = 128
    light = load_backbone(small, cfg.data.classes)
    tokenizer = light.tokenizer
    config = qwen2_audio_7b_config()  # the release's geometry, with the tiny tokenizer's ids
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.audio_token_index = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    if layers:
        text = config.text_config
        text.num_hidden_layers = config.audio_config.encoder_layers = layers
        text.layer_types = text.layer_types[:layers]  # per-layer attention kinds: sizes the KV cache
    with torch.device(device):
        model = random_model(cfg.model, config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return replace(light, model=model)


def bench_clips(n: int, seconds: float, cot_words: int, classes: int, seed: int = 0) -> list[Clip]:
    """``n`` clips of noise audio with a transcript and a curated reasoning of about ``cot_words`` words."""
    rng = np.random.default_rng(seed)
    filler = " ".join(["the voice sounds tense and fast"] * max(1, cot_words // 24))
    cot = format_cot(CoT("tense, fast", filler, filler, filler + " Mostly anger."))
    return [
        Clip(
            id=f"bench{i}",
            audio=(0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32),
            transcript="I told you I would be there at eleven o'clock",
            target=torch.softmax(torch.as_tensor(rng.standard_normal(classes), dtype=torch.float32), -1),
            cot=cot,
        )
        for i in range(n)
    ]


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_PROC_STATUS = Path("/proc/self/status")


def _proc_kb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field in kB (Linux), or None."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak(device: torch.device) -> float:
    """Start a peak-memory measurement; returns the memory in use now, GB."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 1e9
    with contextlib.suppress(OSError):  # Linux: "5" resets the peak resident set (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    rss = _proc_kb("VmRSS")
    return rss / 1e6 if rss is not None else 0.0


def _peak_gb(device: torch.device) -> float:
    """Peak memory since ``_reset_peak`` (CUDA allocator; VmHWM on Linux CPUs, else the process's peak)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    hwm = _proc_kb("VmHWM")
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1e6


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> tuple[float, object]:
    """Mean seconds of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones; and its last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    _sync(device)
    return (time.perf_counter() - start) / max(1, repeats), result


def _train_step(module: EmotionModule, batch: dict, optimizer: torch.optim.Optimizer) -> Callable[[], object]:
    def step() -> object:
        module.model.train()
        if not module.automatic_optimization:  # GRPO steps its optimizer itself: drive it with torch
            rollouts = module.rollouts(batch)  # type: ignore[attr-defined]

            def step_and_zero() -> None:  # as the module's own step: each pass starts from zero gradients
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            return module.optimise(rollouts, backward=torch.Tensor.backward, step=step_and_zero)  # type: ignore[attr-defined]
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def run(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Measure everything; returns the results (also printed as a table)."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model_args = ["model=qwen2_audio_7b", "model.path=random-weights"] if args.size == "7b" else []
    common = [*model_args, f"model.finetune={args.finetune}", *overrides]
    only = args.only.split(",")
    configs = {name: measured_config(EXPERIMENTS[name], common, args) for name in STEPS if name in only}
    base_cfg = next(iter(configs.values()), None) or compose("sft_cot", common)  # only the model section is read
    torch.manual_seed(args.seed)
    backbone = build_backbone(base_cfg, args.size, device, args.layers)
    model = backbone.model
    seconds = args.audio_seconds or base_cfg.model.chunk_seconds
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    flops_peak = peak_flops(device)
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": args.size if not args.layers else f"{args.size}, {args.layers} layers",
        "finetune": args.finetune,
        "group": args.group,
        "new_tokens": args.new_tokens,
        "trainable_parameters": sum(p.numel() for p in params),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "steps": {},
        "rollouts": {},
    }

    for name, cfg in configs.items():
        module = build_strategy(cfg, backbone).to(device)
        on_policy = isinstance(module, OnPolicyModule)
        if cfg.model.finetune == "full" and on_policy:
            module.freeze_reference()  # what on_fit_start does: the frozen reference policy
        rows = 1 if on_policy else args.batch  # on-policy steps: one prompt, a group of rollouts
        clips = bench_clips(rows, seconds, args.cot_words, len(cfg.data.classes), args.seed)
        batch = _to(module.encoder.training_batch(clips), device)
        before = _reset_peak(device)
        step_seconds, _ = timed(_train_step(module, batch, optimizer), device, args.steps, args.warmup)
        tokens = int(batch["attention_mask"].sum())
        entry = {"seconds_per_step": step_seconds, "peak_memory_gb": _peak_gb(device), "memory_before_gb": before}
        if not on_policy:  # their rollouts are not counted in the batch's tokens: no MFU is claimed
            flops = sft_flops(model, batch)
            entry.update(
                tokens_per_second=tokens / step_seconds,
                tokens_per_step=tokens,
                mfu=flops / step_seconds / flops_peak if flops_peak else None,
            )
        results["steps"][name] = entry
        module.reference_model = None

    if "rollouts" in only:
        rollouts(args, backbone, measured_config(EXPERIMENTS["grpo"], common, args), seconds, results)
    return results


def measured_config(experiment: str, common: list[str], args: argparse.Namespace) -> DictConfig:
    """``experiment`` with the bench's overrides; an on-policy strategy's from the base model, with
    ``--group`` rollouts per prompt (its ``ROLLOUTS`` setting) of at most ``--new-tokens`` each."""
    cfg = compose(experiment, common)
    settings = OmegaConf.get_type(cfg.strategy)
    if not (isinstance(settings, type) and issubclass(settings, OnPolicyConfig)):
        return cfg
    rollout = [f"strategy.{settings.ROLLOUTS}={args.group}", f"strategy.rollout_max_new_tokens={args.new_tokens}"]
    return compose(experiment, [*common, "model.init_from=null", *rollout])


def rollouts(args: argparse.Namespace, backbone: Backbone, cfg: DictConfig, seconds: float, results: dict) -> None:
    """Rollouts after the training steps, as in a GRPO loop: one prompt, K continuations of N tokens."""
    model = backbone.model
    device = next(model.parameters()).device
    prompt = _to(build_strategy(cfg, backbone).encoder.prompt_batch(bench_clips(1, seconds, 0, 6)), device)
    strategy = cfg.strategy
    for engine in ("generate", "fast"):

        def generate(engine: str = engine) -> torch.Tensor:
            was_training = model.training
            model.eval()  # what OnPolicyModule.sample does before generating
            out = generate_sequences(
                backbone,
                prompt,
                args.new_tokens,
                do_sample=True,
                temperature=strategy.rollout_temperature,
                top_p=strategy.rollout_top_p,
                group=args.group,
                engine=engine,
            )
            model.train(was_training)
            return out

        before = _reset_peak(device)
        rollout_seconds, sequences = timed(generate, device, args.steps, args.warmup)
        generated = sequences.shape[0] * (sequences.shape[1] - prompt["input_ids"].shape[1])  # type: ignore[union-attr]
        results["rollouts"][engine] = {
            "seconds": rollout_seconds,
            "tokens_per_second": generated / rollout_seconds,
            "ms_per_decode_step": 1e3 * rollout_seconds / max(1, generated // args.group),
            "peak_memory_gb": _peak_gb(device),
            "memory_before_gb": before,
        }
    plain, fast = results["rollouts"]["generate"], results["rollouts"]["fast"]
    results["rollouts"]["speedup"] = fast["tokens_per_second"] / plain["tokens_per_second"]


def _row(label: str, seconds: float, tokens_per_second: float | None, mfu: str, entry: dict) -> str:
    tps = "-" if tokens_per_second is None else f"{tokens_per_second:.0f}"
    memory, own = entry["peak_memory_gb"], entry["peak_memory_gb"] - entry["memory_before_gb"]
    return f"{label:<18}{seconds:>10.3f}{tps:>12}{mfu:>8}{memory:>14.2f}{own:>12.2f}"


def format_results(results: dict) -> str:
    """The printed table."""
    mem = "peak mem GB" if results["device"] != "cpu" else "peak RSS GB"
    lines = [
        f"ambemo bench: {results['size']} model ({results['finetune']}, {results['trainable_parameters']:,} of "
        f"{results['total_parameters']:,} parameters trainable) on {results['device']}; "
        f"rollouts: K={results['group']}, {results['new_tokens']} new tokens",
        f"{'':<18}{'s/step':>10}{'tokens/s':>12}{'MFU':>8}{mem:>14}{'step own GB':>12}",
    ]
    for name, entry in results["steps"].items():
        mfu = "-" if "mfu" not in entry else "n/a" if entry["mfu"] is None else f"{100 * entry['mfu']:.1f}%"
        tps = entry.get("tokens_per_second")
        lines.append(_row(f"{name} step", entry["seconds_per_step"], tps, mfu, entry))
    rollouts = results["rollouts"]
    if not rollouts:
        return "\n".join(lines)
    for engine in ("generate", "fast"):
        entry = rollouts[engine]
        lines.append(_row(f"rollout {engine}", entry["seconds"], entry["tokens_per_second"], "-", entry))
    fast, plain = rollouts["fast"]["ms_per_decode_step"], rollouts["generate"]["ms_per_decode_step"]
    lines.append(
        f"fast rollouts: {rollouts['speedup']:.2f}x plain generate ({fast:.2f} vs {plain:.2f} ms per decode step)"
    )
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options and the ``key=value`` overrides of ``ambemo bench`` (exits on an error)."""
    parser = argparse.ArgumentParser(prog="ambemo bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "7b"), default="tiny", help="tiny (CPU) or 7b (random weights, GPU)")
    parser.add_argument("--layers", type=int, default=None, help="7b: this many layers (real width and vocabulary)")
    parser.add_argument(
        "--only",
        default="sft,dpo,grpo,rollouts",
        help=f"comma-separated measurements among {','.join(MEASUREMENTS)} (default: sft,dpo,grpo,rollouts)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument("--finetune", choices=("lora", "full"), default="lora", help="what the steps train")
    parser.add_argument("--batch", type=int, default=None, help="SFT rows per step (default: 2 tiny, 4 7b)")
    parser.add_argument("--group", type=int, default=8, help="K: rollouts per prompt (DPO, GRPO, rollout timing)")
    parser.add_argument("--new-tokens", type=int, default=128, help="N: new tokens per rollout")
    parser.add_argument("--audio-seconds", type=float, default=None, help="clip length (default: the audio window)")
    parser.add_argument("--cot-words", type=int, default=200, help="about this many words of curated reasoning")
    parser.add_argument("--steps", type=int, default=2, help="timed repeats of each measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repeats first (compilation, allocator)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", default=None, help="also write the results here")
    known, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if "=" not in a]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    wrong = [name for name in known.only.split(",") if name not in MEASUREMENTS]
    if wrong:
        parser.error(f"--only: unknown measurement {wrong[0]!r}; choose from {', '.join(MEASUREMENTS)}")
    return known, rest


def main(argv: list[str]) -> int:
    known, rest = parse_arguments(argv)
    if known.batch is None:
        known.batch = 4 if known.size == "7b" else 2
    if known.size == "7b" and known.device == "auto" and not torch.cuda.is_available():
        print("ambemo bench: --size 7b needs a GPU (none found); use --device cpu to force it", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if known.threads:
        torch.set_num_threads(known.threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer, generation-config notes
            results = run(known, parse_overrides(rest))
    finally:
        torch.set_num_threads(threads)
    print(format_results(results))
    if known.json:
        with open(known.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {known.json}")
    return 0
