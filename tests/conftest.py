"""Test set-up: run Triton kernels in the interpreter when no CUDA device is present, and the
``device`` fixture every parity test builds its tensors on.

TRITON_INTERPRET must be set before any module decorated with ``@triton.jit`` is imported, so this
happens at conftest import time, before test modules are collected.
"""

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = {
    "fusmae_fast": "fusmae_fast",
    "fusmae_fast.kernels": "kernels",
    "fusmae_fast.bench": "bench",
}
"""Each package the tests import and the folder of this checkout it must come from (pyproject's
package-dir maps fusmae_fast.kernels to kernels/ and fusmae_fast.bench to bench/)."""


def install_problem() -> str | None:
    """Why the packages the tests would import are not this checkout's, in one line, or None.

    Run from a checkout that is not installed (or with an editable install of another folder), Python
    finds ``fusmae_fast`` in the working directory but not ``fusmae_fast.kernels``, or finds it in the
    other folder, and the tests would fail on import or test another checkout's kernels.
    """
    import importlib

    fix = "install this checkout: pip install -e '.[dev]'"
    for name, folder in PACKAGE_FOLDERS.items():
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            return f"cannot import {name} ({e}); {fix}"
        where = Path(module.__file__).resolve().parent
        if where != ROOT / folder:
            return f"{name} imports from {where}, not from this checkout's {ROOT / folder}; {fix}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    problem = install_problem()
    if problem:
        pytest.exit(problem, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device the tests run the kernels on: the current CUDA device when there is one (compiled
    Triton kernels), else the CPU (Triton's interpreter)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture
def debug_checks():
    """Debug checks on for the test (restored after it): a bad value in a CUDA op input then raises the
    ValueError naming the argument, as on a CPU, instead of an asynchronous device-side assertion,
    which would also leave the CUDA context unusable for every later test."""
    from fusmae_fast.kernels import triton_runtime

    before = triton_runtime.debug_checks_enabled()
    triton_runtime.set_debug_checks(True)
    yield
    triton_runtime.set_debug_checks(before)
