"""The test run stops with one line when the package it would import is not this checkout's."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_that_is_not_installed_is_named(tmp_path: Path) -> None:
    # A second checkout, not installed: Python finds its fusmae_fast in the working directory, and
    # fusmae_fast.kernels (a folder of its own, mapped by pyproject) through the installed checkout.
    skip_caches = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "fusmae_fast", tmp_path / "fusmae_fast", ignore=skip_caches)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests")
    (tmp_path / "tests" / "test_any.py").write_text("def test_any():\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 4, out
    assert f"not from this checkout's {tmp_path / 'kernels'}" in out, out
    assert "pip install -e '.[dev]'" in out
    assert "1 passed" not in out
