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
LAYERS = "layers: app > eval | finetune > rag | ingest > core"
ACYCLIC = "no import cycles between the modules of a package"


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


@pytest.mark.parametrize(
    ("module", "late_import", "broken", "named"),
    [
        # A function-level import of a higher layer.
        ("core/errors.py", "from rag import pipeline", LAYERS, "core.errors -> rag.pipeline"),
        # eval and finetune are independent of each other.
        ("eval/gate.py", "from finetune import jobs", LAYERS, "eval.gate -> finetune.jobs"),
        # core.dates imports core.errors; the reverse closes a circle.
        ("core/errors.py", "from core import dates", ACYCLIC, ".errors -> .dates"),
    ],
)
def test_a_back_import_or_a_cycle_breaks_the_build(tmp_path, module, late_import, broken, named):
    tree = copy_of_the_tree(tmp_path)
    with (tree / module).open("a") as fh:
        fh.write(f"\n\ndef _late():\n    {late_import}  # noqa: F401\n")
    result = lint(tree)
    assert result.returncode != 0
    assert f"{broken} BROKEN" in result.stdout and named in result.stdout
