"""``ambemo export RUN_DIR OUT_DIR``: a self-contained model folder for applications.

The folder (loaded by ``ambemo.load`` / ``ambemo predict`` without the training config)::

    OUT_DIR/
      README.md        model card: YAML front matter (base model, datasets, test metrics), intended use, limits
      ambemo.json      classes, model classes, prompt version, reasoning settings, audio cap, weights kind, source run
      ambiguity.json   the ambiguity threshold and its validation precision/recall
      processor/       processor (tokenizer + feature extractor), ``save_pretrained`` format
      adapter/         LoRA runs: the peft adapter (``PeftModel.from_pretrained(base, OUT_DIR/adapter)``)
      base_model/      LoRA runs of the tiny model: its base weights (random, drawn from the run's seed)
      model/           full fine-tuning runs: every weight (``Qwen2AudioForConditionalGeneration.from_pretrained``)

LoRA runs of a real checkpoint export the adapter only and record the base model's folder
(``model.path``); a full fine-tuning run exports the full weights instead, since there is no
base to put an adapter on. The weights are the ones that scored the run's test split. A run
made before ``ambiguity.json`` existed gets its threshold now, from a validation pass over its
corpus (which must then be readable from here).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ambemo.errors import OutputPathError
from ambemo.inference.ambiguity import AMBIGUITY_FILE, calibrate, describe
from ambemo.inference.loading import ModelLoadError, load_run, resolve_model_path
from ambemo.inference.predictor import EXPORT_META, Predictor
from ambemo.model.backbone import family_of
from ambemo.model.prompts import PROMPT_VERSION
from ambemo.runs import read_config, read_summary, scoring_checkpoint

FORMAT_VERSION = 1
CARD_METRICS = ("js", "bc", "r2", "brier", "accuracy", "macro_f1", "format_ok_rate")


def export(run: str | Path, out_dir: str | Path, runs_dir: str | Path = "runs") -> Path:
    """Export a run folder (or ``latest:<experiment>``) to ``out_dir`` (new or empty); returns ``out_dir``."""
    run_dir = resolve_model_path(run, runs_dir)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputPathError(f"export: {out} exists and is not an empty folder. Export into a new folder")
    cfg = read_config(run_dir)
    scoring_checkpoint(run_dir)  # a finished run with its tested weights, before any work
    staging = out.with_name(out.name + ".partial")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    except OSError as err:
        raise OutputPathError(
            f"export: cannot create {staging} ({err.strerror or err}). Export into a folder you can write"
        ) from None
    try:
        write_export(run_dir, cfg, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # no half-written export left behind
        raise
    if out.exists():
        out.rmdir()
    staging.rename(out)  # a killed export never leaves a folder that looks complete
    return out


def write_export(run_dir: Path, cfg: DictConfig, staging: Path) -> None:
    """Write the export of ``run_dir`` into the (empty) folder ``staging``."""
    predictor = load_run(run_dir, torch.device("cpu"))
    if predictor.ambiguity is None:
        print(f"[ambemo] {run_dir} has no {AMBIGUITY_FILE}: choosing the threshold on its validation split now")
        predictor.ambiguity = calibrate_run(predictor, cfg, run_dir)

    model = predictor.backbone.model
    predictor.backbone.processor.save_pretrained(staging / "processor")
    if cfg.model.finetune == "lora":
        model.save_pretrained(staging / "adapter")  # peft: the adapter weights and adapter_config.json
        if family_of(cfg.model)[1]:  # a tiny model: its random base travels with the export
            save_tiny_base(cfg, staging / "base_model")
    else:
        model.save_pretrained(staging / "model")
    (staging / AMBIGUITY_FILE).write_text(json.dumps(predictor.ambiguity, indent=2) + "\n")
    summary = read_summary(run_dir)
    meta = export_meta(cfg, predictor, run_dir, summary)
    (staging / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    (staging / "README.md").write_text(model_card(cfg, meta, summary, predictor.ambiguity))


def calibrate_run(predictor: Predictor, cfg: DictConfig, run_dir: Path) -> dict:
    """Choose and store (``run_dir/ambiguity.json``) the threshold of a run that has none."""
    from ambemo.data.datamodule import EmotionDataModule

    datamodule = EmotionDataModule(cfg.data, predictor.encoder, seed=cfg.seed)
    return calibrate(predictor.read, datamodule.val_dataloader(), predictor.device, predictor.precision, run_dir)


def save_tiny_base(cfg: DictConfig, folder: Path) -> None:
    """The tiny model's base weights: random, drawn from the run's seed exactly as training drew them."""
    from ambemo.model.backbone import load_base

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        base, _ = load_base(cfg.model)
    base.save_pretrained(folder)


def export_meta(cfg: DictConfig, predictor: Predictor, run_dir: Path, summary: dict) -> dict:
    """What ``ambemo.load`` needs besides the weights (``ambemo.json``)."""
    lora = cfg.model.finetune == "lora"
    tiny = family_of(cfg.model)[1]
    base_path = "base_model" if tiny else str(Path(cfg.model.path).expanduser().resolve())
    return {
        "format": "ambemo-export",
        "format_version": FORMAT_VERSION,
        "experiment": cfg.experiment,
        "source_run": str(run_dir),
        "strategy": cfg.strategy.name,
        "classes": list(cfg.data.classes),
        "model_classes": predictor.backbone.prompt_classes,
        "prompt_version": PROMPT_VERSION,
        "use_cot": bool(cfg.strategy.use_cot),
        "max_new_tokens": int(cfg.strategy.max_new_tokens),
        "max_seconds": float(cfg.data.max_seconds),
        "sample_rate": predictor.backbone.sample_rate,
        "weights": "adapter" if lora else "full",
        "base_model": {"name": cfg.model.name, "path": base_path if lora else None},
        "dtype": cfg.model.dtype,
        "attn": cfg.model.attn_implementation,
        "chunk_seconds": int(cfg.model.chunk_seconds),
        "precision": cfg.trainer.precision,
        "batch_size": int(cfg.data.eval_batch_size),
        "test_weights": summary.get("test_weights"),
        "dataset": summary.get("dataset", cfg.data.name),
    }


def _finite(value: object) -> object:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def model_card(cfg: DictConfig, meta: dict, summary: dict, ambiguity: dict) -> str:
    """README.md with YAML front matter (Hugging Face model-card style)."""
    test = summary.get("test", {})
    corpus = cfg.data.path if cfg.data.name == "manifest" else cfg.data.root
    tiny = family_of(cfg.model)[1]
    base = f"ambemo {cfg.model.name} (random initialisation)" if tiny else cfg.model.path
    front = {
        "library_name": "peft" if meta["weights"] == "adapter" else "transformers",
        "base_model": base,
        "tags": ["audio", "speech-emotion-recognition", "ambiguity-aware", "ambemo", cfg.strategy.name],
        "datasets": [f"{cfg.data.name}: {corpus}"],
        "metrics": [k for k in CARD_METRICS if k in test],
        "ambemo": {"experiment": cfg.experiment, "prompt_version": PROMPT_VERSION, "classes": meta["classes"]},
        "model-index": [
            {
                "name": f"ambemo-{cfg.experiment}",
                "results": [
                    {
                        "task": {"type": "audio-classification", "name": "emotion distribution prediction"},
                        "dataset": {"name": cfg.data.name, "type": cfg.data.name, "split": "test"},
                        "metrics": [
                            {"type": k, "value": _finite(test[k]), "name": f"test {k}"}
                            for k in CARD_METRICS
                            if k in test
                        ],
                    }
                ],
            }
        ],
    }
    rows = [("model", test), *summary.get("reference", {}).items()]
    keys = [k for k in CARD_METRICS if k in test]
    table = ["| predictor | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, values in rows:
        cells = [f"{values[k]:.4f}" if _finite(values.get(k)) is not None else "-" for k in keys]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    n_test = int(test.get("n", 0))
    weights = "a LoRA adapter (peft) on the base model" if meta["weights"] == "adapter" else "the full weights"
    reasoning = (
        "writes a structured reasoning (keywords, text analysis, audio analysis, synthesis) and then"
        if meta["use_cot"]
        else "answers directly:"
    )
    oracle = "; `oracle` the distribution each synthetic clip was made from" if "oracle" in dict(rows) else ""
    demo = (
        "- This is the tiny demo model trained on synthetic speech: it shows the pipeline, not a usable "
        "emotion recogniser.\n"
        if tiny
        else ""
    )
    return f"""---
{OmegaConf.to_yaml(OmegaConf.create(front)).rstrip()}
---

# ambemo-{cfg.experiment}

Predicts how a crowd of listeners would perceive the emotion of a speech clip: a **distribution**
over {", ".join(meta["classes"])}, not a single label. The model {reasoning} its distribution
is read from the language-model head at the answer slot (`Emotion:`). Exported by `ambemo export`
from `{meta["source_run"]}` ({summary.get("test_weights", "final weights")}): {weights}.

## Use

```bash
ambemo predict THIS_FOLDER clip.wav [more.wav folder/ manifest.jsonl] [--out predictions.jsonl]
```

```python
import ambemo
model = ambemo.load("THIS_FOLDER")
records = model.predict("clip.wav", transcript="what is said")   # or a folder, manifest, array, list
```

Each record: `id`, `distribution` (every class), `top`, `entropy` (normalised, 0..1),
`ambiguous`, `format_ok`{", `reasoning`" if meta["use_cot"] else ""}. Any sample rate and channel
count is accepted (mixed down, resampled to {meta["sample_rate"]} Hz); audio beyond
{meta["max_seconds"]:g} s is cut. Prompt version `{PROMPT_VERSION}`.

## Test-split metrics ({cfg.data.name}, {n_test} clips)

JS divergence in bits (lower is better), Bhattacharyya coefficient, per-utterance R², Brier;
accuracy and macro-F1 against the majority vote. `prior` predicts the training split's mean
distribution{oracle}.

{chr(10).join(table)}

## Ambiguity flag

`ambiguous` is true when the normalised entropy exceeds **{ambiguity["threshold"]:.3f}**, chosen on the
validation split: {ambiguity["criterion"]}. On validation: {describe(ambiguity)}.

## Intended use and limits

- Intended for research and for routing (e.g. flag speech whose emotion listeners would not agree
  on for a human to review); it describes *perceived* emotion in the training corpus's label
  space, not what the speaker felt.
- Not for decisions about people without human oversight. Trained on {cfg.data.name} ({corpus});
  accuracy on other speakers, languages, recording conditions or acted vs. spontaneous speech is
  unknown until measured.
- Clips longer than {meta["max_seconds"]:g} s are truncated; the prompt includes a transcript when
  one is given, as in training{" (the built-in corpus always had one)" if cfg.data.name == "synthetic" else ""}.
{demo}"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ambemo export", description="Export a trained run as a model folder for `ambemo predict`."
    )
    parser.add_argument("run", help="run folder (runs/<experiment>/<timestamp>) or latest:<experiment>")
    parser.add_argument("out_dir", type=Path, help="new (or empty) folder to write")
    parser.add_argument("--runs", default="runs", help="where latest:<experiment> looks (default: runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export(args.run, args.out_dir, args.runs)
    except ModelLoadError as err:
        print(f"ambemo export: {err}", file=sys.stderr)
        return 2
    meta = json.loads((out / EXPORT_META).read_text())
    print(f"[ambemo] exported {meta['source_run']} ({meta['weights']} weights) to {out}")
    print(f"[ambemo] try: ambemo predict {out} CLIP.wav")
    return 0
