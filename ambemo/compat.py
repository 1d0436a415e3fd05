"""Every use of another library's private or internal API, in one place.

ambemo reaches into four libraries where their public API does not offer what it needs. Each
such use is a function here, with the library version it was checked against (``CHECKED``, pinned
in pyproject.toml as well); tests/test_compat.py tests each one and fails when an installed
version differs from the checked one, so an upgrade re-checks this file first.

This module imports none of those libraries at the top: a caller pays only for what it uses
(``ambemo sweep`` reads metrics without importing Lightning).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHECKED = {"transformers": "5.17.0", "lightning": "2.6.6", "wandb": "0.31.0"}
"""The version of each library that the functions below were read and tested against."""


# ---------------------------------------------------------------------------------- transformers


def generate_sampling_rules(model: Any, prompt_ids: Any, **generate_kwargs: Any) -> tuple[Any, Any]:
    """The logits processors and EOS token ids ``model.generate(prompt_ids, **generate_kwargs)``
    would use: what a hand-written decoding loop needs to draw tokens exactly as ``generate`` does.

    transformers has no public API for this; it is ``GenerationMixin``'s own preparation:
    ``_prepare_generation_config`` (the model's generation config updated with the kwargs),
    ``_prepare_special_tokens`` (sets ``_eos_token_tensor``) and ``_get_logits_processor``
    (checked against transformers 5.17.0). Returns ``(LogitsProcessorList, eos ids tensor or None)``.
    """
    from transformers import LogitsProcessorList

    config, _ = model._prepare_generation_config(None, **generate_kwargs)
    model._prepare_special_tokens(config, True, device=prompt_ids.device)
    processors = model._get_logits_processor(
        config, prompt_ids.shape[1], prompt_ids, None, LogitsProcessorList(), device=prompt_ids.device, model_kwargs={}
    )
    return processors, config._eos_token_tensor


# ---------------------------------------------------------------------------------- Lightning


def collect_rng_states() -> dict[str, Any]:
    """This process's random states: torch CPU and CUDA, numpy, Python's ``random``.

    Lightning's ``lightning.fabric.utilities.seed._collect_rng_states`` (what its own
    ``ModelCheckpoint`` does not save and ``seed_everything`` cannot restore), checked against
    Lightning 2.6.6: keys ``torch``, ``torch.cuda``, ``numpy`` (``np.random.get_state()``'s tuple)
    and ``python``.
    """
    from lightning.fabric.utilities.seed import _collect_rng_states

    return _collect_rng_states()


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore random states from ``collect_rng_states``: Lightning's ``_set_rng_states`` (2.6.6)."""
    from lightning.fabric.utilities.seed import _set_rng_states

    _set_rng_states(states)


def logged_values(metrics_csv: Path, key: str) -> list[float]:
    """Every value of ``key`` in a run's ``metrics.csv``, in logging order.

    The file is Lightning's ``CSVLogger`` output: one column per metric name, one row per
    logging call, empty cells where a row does not log that metric (checked against Lightning
    2.6.6). A missing file gives no values.
    """
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key) not in (None, "")]


def prepend_logged_rows(logger: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Make a ``CSVLogger`` write ``rows`` before everything it logs from now on.

    Lightning's CSV writer starts a fresh ``metrics.csv`` (it removes an existing one when it is
    created) and keeps the rows it will write in ``logger.experiment.metrics``, a list it rewrites
    whole on every save: inserting there is how a resumed run keeps the metrics its interrupted run
    logged. Internal to Lightning's ``ExperimentWriter``; checked against Lightning 2.6.6.
    """
    logger.experiment.metrics[:0] = list(rows)


# ---------------------------------------------------------------------------------- wandb


def sweep_command(command: Sequence[Any], params: dict[str, Any]) -> tuple[list[Any], dict[str, list[Any]]]:
    """A sweep file's ``command`` and the values of its ``${...}`` macros, as ``wandb agent`` has them.

    Returns ``(command, macros)``: the command after ``${envvar:NAME}`` substitution and a dict
    from macro name (``args``, ``args_no_hyphens``, ``args_json`` ...) to the list of strings it
    expands to for these parameter values. wandb's own code for it, internal to its launch
    package (``wandb.sdk.launch.sweeps.utils.create_sweep_command`` and
    ``create_sweep_command_args``), checked against wandb 0.31.0; the caller still substitutes
    ``${env}``, ``${interpreter}``, ``${program}`` and ``${args_json_file}`` as the agent does.
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    return create_sweep_command(list(command)), macros
