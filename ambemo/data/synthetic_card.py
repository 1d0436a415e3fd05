"""The synthetic corpus's dataset card (``CARD.md``) and the reference scores it reports.

``reference.json`` and the card score two predictors on the test split against the corpus votes:
the train split's mean distribution (``prior``) and each clip's latent distribution (``oracle``,
the annotation-noise floor), with the metric definitions of docs/method.md.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.data.synthetic_clips import (
    CLIP_JITTER_SD,
    COT_READINGS,
    CUES,
    FORMAT_VERSION,
    PROTOTYPES,
    SPEAKER_SD,
    VARIANTS,
    SyntheticClip,
    distributions,
)
from ambemo.metrics.functional import bhattacharyya_coefficient, brier_score, js_divergence, pearson_r2


def score(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The reference metrics of predictions against vote distributions (definitions in docs/method.md)."""
    p, t = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    r2, valid = pearson_r2(p, t)
    return {
        "js": float(js_divergence(p, t).mean()),
        "bc": float(bhattacharyya_coefficient(p, t).mean()),
        "r2": float(r2[valid].mean()) if bool(valid.any()) else float("nan"),
        "brier": float(brier_score(p, t).mean()),
        "n": len(t),
    }


def reference_scores(clips: list[SyntheticClip]) -> dict:
    """Test-split scores of the train-mean prior and of the latent-distribution oracle."""
    train = [clip for clip in clips if clip.split == "train"]
    test = [clip for clip in clips if clip.split == "test"]
    target = distributions(test, "votes")
    prior = np.tile(distributions(train, "votes").mean(axis=0), (len(test), 1))
    return {"test": {"prior": score(prior, target), "oracle": score(distributions(test, "latent"), target)}}


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def dataset_card(params: dict, clips: list[SyntheticClip], rendered: dict, reference: dict, provenance: dict) -> str:
    """The dataset card: how the corpus was made and what to expect from it."""
    rate = params["sample_rate"]
    durations = np.array([rendered[clip.uid][0] / rate for clip in clips])
    truncated = sum(rendered[clip.uid][1] for clip in clips)
    split_rows = [["split", "clips", *CREMA_D_CLASSES]]
    for split in ("train", "val", "test"):
        members = [clip for clip in clips if clip.split == split]
        if members:
            mean = distributions(members, "votes").mean(axis=0)
            split_rows.append([split, str(len(members)), *[f"{v:.3f}" for v in mean]])
    score_rows = [["predictor", "JS (bits)", "BC", "R2", "Brier", "n"]]
    for name, values in reference["test"].items():
        score_rows.append([name, *[f"{values[k]:.4f}" for k in ("js", "bc", "r2", "brier")], str(values["n"])])
    proto_rows = [["prototype", *CUES]] + [
        [name, *[f"{v:g}" for v in PROTOTYPES[i]]] for i, name in enumerate(CREMA_D_CLASSES)
    ]
    proto_rows.append(["per-clip jitter SD", *[f"{v:g}" for v in CLIP_JITTER_SD]])
    return f"""# ambemo built-in synthetic speech corpus

Made by `ambemo.data.synthetic.generate_corpus` (format version {FORMAT_VERSION}).
Parameters: {json.dumps(params)}.

## What it is
{len(clips)} mono {rate} Hz clips (16-bit WAV, at most {params["max_seconds"]} s; {truncated} truncated;
duration median {np.median(durations):.2f} s, max {durations.max():.2f} s) of eSpeak NG
({provenance["espeak_ng"]}, via `espeakng-loader` {provenance["espeakng_loader"]}) speaking the 12 CREMA-D
sentences, with emotion-dependent prosody, and labels taken from the real CREMA-D audio-only ratings.

* **Clips and labels.** Clips are sampled without replacement (seed) from the CREMA-D audio-only
  vote table (7,442 clips). A clip's *latent* distribution is its normalised real votes; its
  corpus *votes* are Multinomial(n_votes of that clip, latent), redrawn with the seed.
* **Split.** Random by clip (not by speaker): the first {params["n_train"]} sampled clips are
  train, the next {params["n_val"]} val, the last {params["n_test"]} test. Speakers overlap
  between splits, as in the feasibility probe; this corpus tests learning, not speaker generalisation.
* **Speakers.** Each CREMA-D actor is a synthetic speaker: an eSpeak voice variant by the
  actor's sex ({", ".join(f"{k}: {'/'.join(v)}" for k, v in VARIANTS.items())}), plus offsets drawn
  per actor and seed (SD: {json.dumps(SPEAKER_SD)}; the rate offset is a log factor).
* **Prosody.** A clip's cues = latent @ prototypes + per-clip Gaussian jitter (table below),
  then the speaker offsets. eSpeak realises pitch level, pitch range and rate (a neutral clip is
  spoken at eSpeak's normal 175 words/min); numpy DSP adds spectral tilt (relative to -12 dB/oct,
  pivot 1 kHz), envelope-following breath noise, tremor (a 5-7 Hz time-warp vibrato) and loudness
  (active-speech level -30 dBFS + loud_db, soft-limited), then 0.05-0.25 s of leading silence.
  `cues.jsonl` lists every clip's cues and realised voice parameters.
* **Reasoning.** `cot` is a templated structured CoT written from the clip's cues (relative to
  its speaker's neutral voice): the corpus's curated CoT. Its synthesis states the
  {COT_READINGS[params["cot_reading"]]}.

{_table(proto_rows)}

## Mean vote distribution by split

{_table(split_rows)}

## Reference predictors (test split, scored against the corpus votes)
`prior` predicts the train split's mean vote distribution; `oracle` predicts each clip's latent
distribution (the annotation-noise floor). R2 is the mean per-utterance squared Pearson
correlation over clips with non-constant votes; Brier is the sum of squares divided by 6.

{_table(score_rows)}

## Licences
Labels derive from CREMA-D (Cao et al., IEEE Trans. Affective Computing 5(4), 2014), available
under the Open Database License v1.0 with contents under the Database Contents License v1.0;
this corpus is a derived database and, if shared, must be shared under ODbL with attribution
(see `ambemo/data/assets/CREMA-D-LICENSE.md`). The audio is synthetic: no CREMA-D audio is used.
"""
