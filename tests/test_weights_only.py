"""Every checkpoint the package loads is loaded weights-only (no pickled code runs on load).

The loads themselves are exercised on real checkpoints by tests/test_resume.py (a preempted and
resumed run, a trimmed checkpoint refused); this test keeps a new load from slipping back to
``weights_only=False``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ambemo"


def _loads() -> list[tuple[str, ast.Call]]:
    """``torch.load(...)`` calls and Lightning ``fit``/``test``/``validate``/``predict`` calls that pass
    ``ckpt_path``, with where they are."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            keywords = {k.arg for k in node.keywords}
            if (name == "load" and ast.unparse(node.func.value) == "torch") or (
                name in ("fit", "test", "validate", "predict") and "ckpt_path" in keywords
            ):
                calls.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", node))
    return calls


def test_every_checkpoint_load_is_weights_only() -> None:
    calls = _loads()
    assert len(calls) >= 3  # the scan finds the package's loads (runs.load_checkpoint; train.py: fit, test)
    unsafe = [
        where
        for where, call in calls
        if not any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in call.keywords
        )
    ]
    assert not unsafe, f"checkpoint loads without weights_only=True: {unsafe}"
