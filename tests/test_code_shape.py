"""The shape rules of the package: no module over 400 lines, imports sorted and no unused or
undefined names (ruff's isort and pyflakes rules, settings in ruff.toml)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

MAX_LINES = 400


def test_no_module_is_longer_than_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "feddm_hpc").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


def test_imports_are_sorted_and_names_defined():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff not found next to the test interpreter; run `make setup`")
    out = subprocess.run([ruff, "check", "--select", "I,F", "--no-cache", "feddm_hpc", "tests",
                          "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
