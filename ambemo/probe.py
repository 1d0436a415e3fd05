"""``ambemo probe-reasoning RUN``: does the model's own reasoning carry information into its read-out?

    ambemo probe-reasoning RUN [--runs runs] [--limit N] [--data-root DIR] [--bootstrap 1000] [--out FILE.json]

On the run's test split, p_hat is read at the answer slot three times per utterance, with the same
weights and prompt (audio and instruction):

- ``own``: after the model's own greedy reasoning (what evaluation does; it reproduces
  ``predictions.jsonl``);
- ``empty``: after no reasoning at all (the answer slot right after the prompt);
- ``shuffled``: after another utterance's own reasoning (the next one in test order, so every
  reasoning is used once, each with audio it was not written for).

Each is scored by JS to the human distribution, and the paired differences ``empty - own`` and
``shuffled - own`` (per utterance) get a 95 % bootstrap interval. If reasoning carries information
about the utterance, both differences are positive: replacing the reasoning hurts. If they are
~0, the read-out takes what it knows from the audio and the reasoning adds nothing. ``shuffled``
is the cleaner test: its text is of the kind the read-out was trained after, only about another
clip; an empty reasoning is a context the read-out never saw in training, so ``empty - own`` also
measures how the read-out copes with that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ambemo.metrics.functional import js_divergence
from ambemo.paired import excludes_zero, paired_bootstrap

CONDITIONS = ("own", "empty", "shuffled")


@torch.no_grad()
def probe_reasoning(
    run: str | Path,
    runs_dir: str | Path = "runs",
    limit: int = 0,
    data_root: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """JS per condition and the paired differences to ``own`` (see the module doc) on ``run``'s
    test split (its first ``limit`` utterances if > 0)."""
    from ambemo.data.datamodule import EmotionDataModule
    from ambemo.inference.loading import load, resolve_model_path
    from ambemo.model.generation import generate_reasoning
    from ambemo.model.readout import readout_after
    from ambemo.runs import read_config

    run_dir = resolve_model_path(run, runs_dir)
    cfg = read_config(run_dir)
    if not cfg.strategy.use_cot:
        raise ValueError(f"{run_dir}: trained without reasoning (strategy.use_cot=false): nothing to probe")
    if limit:
        cfg.data.limit_eval = limit
    if data_root:
        cfg.data.root = data_root
    predictor = load(run_dir, device=device)
    backbone = predictor.backbone
    datamodule = EmotionDataModule(cfg.data, predictor.encoder, seed=cfg.seed)
    batches, ids, targets, reasonings, format_ok = [], [], [], [], []
    read = {name: [] for name in CONDITIONS}
    for batch in datamodule.test_dataloader():
        batch = {k: v.to(predictor.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        reasoning = generate_reasoning(backbone, batch, cfg.strategy.max_new_tokens, engine=cfg.model.rollout_engine)
        read["own"].append(readout_after(backbone, batch, reasoning.ids))
        read["empty"].append(readout_after(backbone, batch, [list(backbone.answer_slot_ids)] * len(reasoning.ids)))
        batches.append(batch)
        ids += list(batch["ids"])
        targets.append(batch["target"])
        reasonings += reasoning.ids
        format_ok.append(reasoning.format_ok)
    if len(reasonings) < 2:
        raise ValueError(f"{run_dir}: a shuffled reasoning needs at least two test utterances")
    shifted = reasonings[1:] + reasonings[:1]  # utterance i reads utterance i+1's reasoning
    start = 0
    for batch in batches:
        rows = len(batch["ids"])
        read["shuffled"].append(readout_after(backbone, batch, shifted[start : start + rows]))
        start += rows

    target = torch.cat(targets).double().cpu()
    js = {name: js_divergence(torch.cat(read[name]).double().cpu(), target) for name in CONDITIONS}
    generator = torch.Generator().manual_seed(seed)
    result: dict = {
        "run_dir": str(run_dir),
        "n": len(ids),
        "format_ok_rate": float(torch.cat(format_ok).float().mean()),
        "js": {name: float(values.mean()) for name, values in js.items()},
        "paired": {},
    }
    for name in ("empty", "shuffled"):
        mean, low, high = paired_bootstrap(js[name] - js["own"], resamples, generator)
        result["paired"][f"{name} - own"] = {
            "mean": mean,
            "low": low,
            "high": high,
            "excludes_0": excludes_zero(low, high),
        }
    predictions = run_dir / "predictions.jsonl"
    if predictions.is_file() and not limit:
        # the own read-out is evaluation's: how far it is from the run's own predictions
        saved = {r["id"]: r["distribution"] for r in map(json.loads, predictions.read_text().splitlines())}
        own = torch.cat(read["own"])
        classes = list(cfg.data.classes)
        gaps = [
            max(abs(float(own[i, c]) - saved[uid][name]) for c, name in enumerate(classes))
            for i, uid in enumerate(ids)
            if uid in saved
        ]
        result["own_vs_predictions_max_abs"] = max(gaps) if gaps else None
    return result


def format_result(result: dict) -> str:
    lines = [
        f"{result['run_dir']}: test split, {result['n']} utterances, own reasoning well-formed "
        f"{result['format_ok_rate']:.2f}",
        "read-out after      JS (bits)",
        *(f"  {name:<17} {value:.4f}" for name, value in result["js"].items()),
        "paired difference   mean [95 % bootstrap]",
    ]
    for name, cell in result["paired"].items():
        mark = " *" if cell["excludes_0"] else ""
        lines.append(f"  {name:<17} {cell['mean']:+.4f} [{cell['low']:+.4f}, {cell['high']:+.4f}]{mark}")
    lines.append("(* = the interval excludes 0; positive = replacing the own reasoning makes the read-out worse)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ambemo probe-reasoning", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder or latest:<experiment>")
    parser.add_argument("--runs", default="runs", help="where latest:<experiment> looks (default: runs)")
    parser.add_argument("--limit", type=int, default=0, help="first N test utterances only (default: all)")
    parser.add_argument("--data-root", help="the corpus folder, if not the run's data.root from here")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    from ambemo.inference.loading import ModelLoadError

    try:
        result = probe_reasoning(
            args.run, args.runs, args.limit, args.data_root, args.bootstrap, args.seed, args.device
        )
    except (OSError, ValueError, ModelLoadError) as err:
        print(f"ambemo probe-reasoning: {err}", file=sys.stderr)
        return 2
    print(format_result(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
