"""The house's import rule, checked as CI checks it: `lint-imports` keeps the layers contract (app
over eval | finetune over rag | ingest over core, function-level imports included) and no import
cycle inside a package; and it does fail on a deliberate back-import or cycle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("app", "core", "eval", "finetune", "ingest", "rag")
LINT = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    if not LINT.exists():
        pytest.skip("import-linter is not installed (scripts/setup.sh --dev)")
    return subprocess.run(
        [str(LINT)],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_layers_and_acyclic_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_function_level_back_import_breaks_the_build(tmp_path):
    tree = copy_of_the_tree(tmp_path)
    with (tree / "core" / "errors.py").open("a") as fh:
        fh.write("\n\ndef _late():\n    from rag import pipeline  # noqa: F401\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "layers: app > eval | finetune > rag | ingest > core BROKEN" in result.stdout
    assert "core.errors -> rag.pipeline" in result.stdout


def test_eval_and_finetune_may_not_import_each_other(tmp_path):
    tree = copy_of_the_tree(tmp_path)
    with (tree / "eval" / "gate.py").open("a") as fh:
        fh.write("\n\ndef _late():\n    from finetune import jobs  # noqa: F401\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "eval.gate -> finetune.jobs" in result.stdout


def test_an_import_cycle_inside_a_package_breaks_the_build(tmp_path):
    tree = copy_of_the_tree(tmp_path)
    # core.dates imports core.errors; the reverse closes a circle.
    with (tree / "core" / "errors.py").open("a") as fh:
        fh.write("\n\ndef _late():\n    from core import dates  # noqa: F401\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "no import cycles between the modules of a package BROKEN" in result.stdout
