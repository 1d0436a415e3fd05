"""The ablation notebook runs top to bottom on a folder of tiny runs, and is committed without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_report import write_run

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "ablations.ipynb"
EXPERIMENTS = {"sft": 0.1, "sft_cot": 0.2, "sft_cot_nokl": 0.6, "dpo_cot": 0.3, "dpo_cot_nokl": 0.8}


def test_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_ablation_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    for experiment, noise in EXPERIMENTS.items():
        write_run(runs, experiment, "20260101-000000", noise)
    monkeypatch.setenv("AMBEMO_RUNS", str(runs))
    monkeypatch.setenv("AMBEMO_BOOTSTRAP", "50")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "| sft_cot_nokl |" in text and "synthetic: JS (bits)" in text  # the paper-style table
    assert "JS(sft_cot_nokl) - JS(sft_cot) =" in text and "JS(dpo_cot_nokl) - JS(dpo_cot) =" in text
    assert "JS(sft_cot) - JS(sft) =" in text and "(seeds [0])" in text
    assert "| dpo_cot | 0 |" in text and "ΔJS (bits)" in text  # mean ± sd over seeds; paired against sft_cot
    assert "skipped sft vs sft_cot_own: missing run(s) ['sft_cot_own']" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the KL and CoT ablation plots
    assert "W&B: offline" in text
