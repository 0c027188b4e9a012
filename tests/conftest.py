"""Test set-up: run Triton kernels in the interpreter when no CUDA device is present.

TRITON_INTERPRET must be set before any module decorated with ``@triton.jit`` is imported, so this
happens at conftest import time, before test modules are collected.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
