"""Test set-up: run Triton kernels in the interpreter when no CUDA device is present, and the
``device`` fixture every parity test builds its tensors on.

TRITON_INTERPRET must be set before any module decorated with ``@triton.jit`` is imported, so this
happens at conftest import time, before test modules are collected.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device the tests run the kernels on: the current CUDA device when there is one (compiled
    Triton kernels), else the CPU (Triton's interpreter)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
