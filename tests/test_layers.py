"""The package's layers hold: imports only go downwards, including imports inside functions.

Layers, lowest first (docs/design.md, "Layers"); a module may import its own layer and the
layers below it:

    0 compat, errors, registry,   other libraries' private APIs; the project's error types; the
      schema                      extension points (a registry imports its home by name, at first use);
                                  the base of the settings classes that registered entries name
    1 data, metrics               corpora, clips, the DataModule; metric functions and Metrics
    2 config, paper, runs         the run configuration (its schema names data choices); the paper's settings;
                                  the run folder
    3 model                       backbone, families, prompts, inputs, read-out, generation, rollouts
    4 objectives, cot             pure training objectives; reasoning curation
    5 strategies                  one LightningModule per training method
    6 resume, logging_wandb, plots, paired, throughput   (paired statistics of runs; throughput logging)
    7 train                       the training recipe and run folder
    8 inference, score, report, probe   using trained runs
    9 cli, bench, sweep, folds, serve, gpucheck, ambemo   entry points and tools (nothing below imports them)

Imports that break this today are listed in ``KNOWN_VIOLATIONS``, each with why it is still
there; a test fails when an entry no longer occurs, so the list can only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ambemo"

LAYERS: dict[str, int] = {
    "ambemo.compat": 0,
    "ambemo.errors": 0,
    "ambemo.registry": 0,
    "ambemo.schema": 0,
    "ambemo.data": 1,
    "ambemo.metrics": 1,
    "ambemo.config": 2,
    "ambemo.paper": 2,
    "ambemo.runs": 2,
    "ambemo.model": 3,
    "ambemo.objectives": 4,
    "ambemo.cot": 4,
    "ambemo.strategies": 5,
    "ambemo.resume": 6,
    "ambemo.logging_wandb": 6,
    "ambemo.plots": 6,
    "ambemo.paired": 6,
    "ambemo.throughput": 6,
    "ambemo.train": 7,
    "ambemo.inference": 8,
    "ambemo.score": 8,
    "ambemo.report": 8,
    "ambemo.probe": 8,
    "ambemo.cli": 9,
    "ambemo.bench": 9,
    "ambemo.sweep": 9,
    "ambemo.folds": 9,
    "ambemo.serve": 9,
    "ambemo.gpucheck": 9,
    "ambemo": 9,
}
TOOLS = ("ambemo.cli", "ambemo.bench", "ambemo.sweep", "ambemo.folds", "ambemo.gpucheck")

# (importer, imported): each still here because the code it needs lives in a file that other
# work is reshaping; move it and delete the entry.
KNOWN_VIOLATIONS = {
    # the built-in corpus writes its reasonings in the model's CoT format (CoT, format_cot);
    # the format belongs below both (e.g. a data-level module that model.prompts re-exports)
    ("ambemo.data.synthetic_clips", "ambemo.model.prompts"),
    # function-level: training rows take curated reasonings from the curation store; the store's
    # reader (cot.store.load_accepted) would have to move below data
    ("ambemo.data.datamodule", "ambemo.cot.store"),
    # function-level: `ambemo data summary` composes a run config to find the corpus; it is an
    # entry point kept in the data package (its place is with the CLI)
    ("ambemo.data.summary", "ambemo.config"),
    # function-level: the end of training picks the ambiguity threshold with inference's code,
    # while inference.loading imports train's run-folder helpers: a train <-> inference cycle
    # that one run-folder module below both would end
    ("ambemo.train", "ambemo.inference.ambiguity"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The ambemo modules an import statement loads (``from ambemo.x import y`` counts y if it
    is a module, else ambemo.x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "ambemo"]
    base = node.module or ""
    if node.level:  # relative: resolve against the importer's package
        package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    if base.split(".")[0] != "ambemo":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def import_edges() -> set[tuple[str, str]]:
    """Every (importer, imported) pair of ambemo modules, from module-level and function-level imports."""
    edges = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= {(name, target) for target in _imported(name, node) if target != name}
    return edges


def layer(module: str) -> int:
    """The layer of a module: that of its longest listed prefix."""
    prefixes = [p for p in LAYERS if module == p or (p != "ambemo" and module.startswith(p + "."))]
    assert prefixes, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py (and docs/design.md)"
    return LAYERS[max(prefixes, key=len)]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_imports_only_go_down() -> None:
    upward = {(a, b) for a, b in import_edges() if layer(b) > layer(a)}
    new = sorted(upward - KNOWN_VIOLATIONS)
    assert not new, "imports from a lower layer into a higher one:\n" + "\n".join(f"  {a} -> {b}" for a, b in new)


def test_data_never_imports_model() -> None:
    found = {(a, b) for a, b in import_edges() if _in(a, "ambemo.data") and _in(b, "ambemo.model")}
    assert found <= KNOWN_VIOLATIONS, sorted(found - KNOWN_VIOLATIONS)


def test_the_library_never_imports_entry_points_or_tools() -> None:
    found = sorted(
        (a, b) for a, b in import_edges() if any(_in(b, t) for t in TOOLS) and not any(_in(a, t) for t in TOOLS)
    )
    assert not found, found


def test_known_violations_still_occur() -> None:
    gone = sorted(KNOWN_VIOLATIONS - import_edges())
    assert not gone, f"fixed, so remove from KNOWN_VIOLATIONS: {gone}"


def test_the_scan_sees_function_level_imports() -> None:
    # guards the tests above: an import inside a function body is an edge too
    assert ("ambemo.train", "ambemo.inference.ambiguity") in import_edges()
    assert ("ambemo.cli", "ambemo.sweep") in import_edges()
