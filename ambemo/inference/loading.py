"""``ambemo.load``: a ``Predictor`` from an exported model folder, a run folder, or ``latest:<experiment>``.

- **Export** (``ambemo export``; has ``ambemo.json``): no training config needed. LoRA exports
  load the base model (``base_model/`` inside the export for the tiny model, else the folder
  recorded at export time, e.g. Qwen2-Audio-7B-Instruct's ``model.path``, or ``base_model=``)
  and put the peft adapter from ``adapter/`` on top; full fine-tuning exports load ``model/``.
- **Run folder**: its ``config.yaml`` rebuilds the backbone (the tiny base from the run's seed,
  as training did) and its checkpoint supplies the trained weights: the one that scored the test
  split (``summary.json``'s ``test_weights``). A run that is not ``finished`` (a fast-dev, failed or
  interrupted run), or whose tested weights are gone, is refused (``ambemo.runs``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ambemo.errors import AmbemoError
from ambemo.inference.ambiguity import read_ambiguity
from ambemo.inference.predictor import EXPORT_META, Predictor
from ambemo.model.backbone import family_of, load_backbone, load_pretrained_dir, make_backbone
from ambemo.model.prompts import PROMPT_VERSION
from ambemo.runs import latest_run, read_config, scoring_checkpoint


class ModelLoadError(AmbemoError, ValueError):
    """The path is not something ``ambemo.load`` can load, or what it names is incomplete."""


def load(
    path: str | Path, *, device: str = "auto", base_model: str | Path | None = None, runs_dir: str | Path = "runs"
) -> Predictor:
    """A trained model ready to predict: ``ambemo.load("exports/sft_cot").predict("clip.wav")``.

    ``path``: an exported model folder (``ambemo export``), a run folder
    (``runs/<experiment>/<timestamp>``), or ``latest:<experiment>`` (newest finished run under
    ``runs_dir``). ``device``: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1`` ...
    ``base_model``: for LoRA exports, the base model's folder when it is not where it was at
    export time.
    """
    folder = resolve_model_path(path, runs_dir)
    target = resolve_device(device)
    if (folder / EXPORT_META).is_file():
        return load_export(folder, target, base_model)
    if (folder / "config.yaml").is_file():
        return load_run(folder, target)
    raise ModelLoadError(
        f"{folder}: neither an exported model (no {EXPORT_META}) nor a run folder (no config.yaml); "
        "pass `ambemo export` output, runs/<experiment>/<timestamp>, or latest:<experiment>"
    )


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU; a CUDA device only where CUDA is."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except RuntimeError as err:
        raise ModelLoadError(f"--device {device}: not a device ({err}). Use cpu, cuda, cuda:1 ... or auto") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: CUDA is not available here. Use --device cpu (or auto)")
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise ModelLoadError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices. Use another")
    return target


def resolve_model_path(path: str | Path, runs_dir: str | Path = "runs") -> Path:
    """``latest:<experiment>`` -> the newest finished run folder (saying which newer ones it
    skipped, and why, on stderr); anything else as a path that must exist."""
    text = str(path)
    if text.startswith("latest:"):
        name = text.partition(":")[2]
        found = latest_run(runs_dir, name, note=lambda line: print(f"[ambemo] {line}", file=sys.stderr))
        if found is None:
            raise ModelLoadError(
                f"{text}: no finished run of {name!r} in {runs_dir}/{name}/ (train one with `make exp NAME={name}`)"
            )
        return found
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such folder")
    return folder


# ---- run folders -------------------------------------------------------------------------------


def load_run(run_dir: Path, device: torch.device) -> Predictor:
    """A ``Predictor`` from a run folder: its config, and the weights that scored its test split."""
    from ambemo.strategies import build_strategy
    from ambemo.train import load_weights

    cfg = read_config(run_dir)
    checkpoint = scoring_checkpoint(run_dir)
    # The tiny base is random weights drawn right after seeding (train.train); draw the same ones
    # without disturbing the caller's random state. LoRA checkpoints hold only the adapters.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = load_backbone(cfg.model, cfg.data.classes)
    if checkpoint is not None:
        load_weights(build_strategy(cfg, backbone), checkpoint)
    return Predictor(
        backbone,
        classes=cfg.data.classes,
        use_cot=cfg.strategy.use_cot,
        max_new_tokens=cfg.strategy.max_new_tokens,
        max_seconds=cfg.data.max_seconds,
        ambiguity=read_ambiguity(run_dir),
        precision=cfg.trainer.precision,
        device=device,
        source=str(run_dir),
        batch_size=cfg.data.eval_batch_size,
    )


# ---- exported folders ------------------------------------------------------------------------


def read_export_meta(folder: Path) -> dict:
    """``ambemo.json`` of an export, checked against this version's prompt."""
    meta = json.loads((folder / EXPORT_META).read_text())
    if meta.get("prompt_version") != PROMPT_VERSION:
        raise ModelLoadError(
            f"{folder}: exported with prompt {meta.get('prompt_version')!r}, but this ambemo writes prompts "
            f"{PROMPT_VERSION!r}: the model would read a prompt it was not trained on. Use the ambemo version "
            "that exported it."
        )
    return meta


def base_model_folder(folder: Path, meta: dict, override: str | Path | None) -> Path:
    """Where a LoRA export's base model is: ``override``, else ``base_model/`` inside, else the recorded path."""
    if override:
        base = Path(override)
    elif (folder / "base_model").is_dir():
        base = folder / "base_model"
    elif meta["base_model"].get("path"):
        base = Path(meta["base_model"]["path"]).expanduser()
    else:
        raise ModelLoadError(f"{folder}: a LoRA export without a recorded base model: pass base_model=/dir")
    if not (base / "config.json").is_file():
        raise ModelLoadError(
            f"{folder}: its base model {base} has no config.json; pass the base model's folder "
            "(--base-model DIR, or ambemo.load(..., base_model=DIR))"
        )
    return base


def load_export(folder: Path, device: torch.device, base_model: str | Path | None = None) -> Predictor:
    """A ``Predictor`` from an ``ambemo export`` folder (no training config involved)."""
    meta = read_export_meta(folder)
    family, _ = family_of(OmegaConf.create({"name": meta["base_model"]["name"]}))
    settings = (meta["dtype"], meta["attn"], meta.get("chunk_seconds", 30))
    if meta["weights"] == "full":
        model, processor = load_pretrained_dir(family, folder / "model", folder / "processor", *settings)
    else:
        from peft import PeftModel

        base, processor = load_pretrained_dir(
            family, base_model_folder(folder, meta, base_model), folder / "processor", *settings
        )
        model = PeftModel.from_pretrained(base, folder / "adapter")
    backbone = make_backbone(model, processor, meta["classes"], meta["model_classes"], family)
    return Predictor(
        backbone,
        classes=meta["classes"],
        use_cot=meta["use_cot"],
        max_new_tokens=meta["max_new_tokens"],
        max_seconds=meta["max_seconds"],
        ambiguity=read_ambiguity(folder),
        precision=meta["precision"],
        device=device,
        source=str(folder),
        batch_size=meta["batch_size"],
    )
