"""The layer contracts in pyproject.toml, checked by import-linter: they hold for the engine as it is, and
they fail when a stage imports a sibling stage or a lower layer imports a higher one (a copy of the
package with one import added shows it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    """import-linter with the project's contracts over the ``engine`` package found in ``package_parent``."""
    if importlib.util.find_spec("importlinter") is None:
        pytest.fail("import-linter is missing: install the test extra (bash scripts/install.sh --test)")
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    # An editable install puts a finder ahead of PYTHONPATH that maps `engine` to the checkout: without it
    # removed, import-linter would read the repository's package instead of the copy.
    script = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
              "if not type(f).__module__.startswith('_editable')]; "
              "from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())")
    return subprocess.run([sys.executable, "-c", script, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=package_parent, check=False)


@pytest.fixture
def engine_copy(tmp_path) -> Path:
    """The engine package's Python files, copied: a place to break the layering on purpose."""
    shutil.copytree(ROOT / "engine", tmp_path / "engine", ignore=shutil.ignore_patterns(
        "__pycache__", "*.so", "*.mp4", "_kernels"))
    return tmp_path


def test_the_engine_keeps_its_layer_contracts(engine_copy):
    proc = _lint(engine_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, broken", [
    # a stage reaching into a sibling stage: the fuser prompting the tracker itself
    ("fuse/fuser.py", "from engine.track import StreamingTracker", "engine.fuse is not allowed to import engine.track"),
    # a stage importing the loop above it
    ("sinks/jsonl.py", "import engine.pipeline", "engine.sinks is not allowed to import engine.pipeline"),
    # the values importing a stage
    ("types.py", "import engine.detect", "engine.types is not allowed to import engine.detect"),
], ids=["sibling_stage", "stage_to_loop", "values_to_stage"])
def test_an_import_across_the_layers_breaks_the_contract(engine_copy, module, line, broken):
    path = engine_copy / "engine" / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    proc = _lint(engine_copy)
    assert proc.returncode == 1, proc.stdout
    assert broken in proc.stdout and "1 broken" in proc.stdout
