"""The device and precision a command runs at: ``--device``, ``--kernels`` and ``--precision`` checked
against this machine.

Pretraining, evaluation and embedding resolve them here, so that ``--device cuda`` on a machine
without CUDA, or ``--kernels triton`` where Triton cannot run, stop with one line naming the flag
instead of failing inside the first step; ``--precision auto`` takes bf16 only where it is native
(a CUDA GPU that supports it, a CPU with AVX512-BF16 or AMX), and an explicit bf16 / fp16 on a CPU
without the matching instructions runs (the results are right) with a one-line warning that torch
emulates those matrix products, far slower than fp32.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

CPU_MATRIX_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}
"""/proc/cpuinfo flags, any one of which gives a CPU native matrix products in that precision."""


def resolve_device(choice: str, kernels: str = "torch") -> torch.device:
    """'auto' (cuda when available), 'cpu' or 'cuda'; a ValueError naming the flag when this machine
    cannot give it, or cannot run ``kernels`` on it."""
    from fusmae_fast.kernels.triton_runtime import interpreting

    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        raise ValueError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    device = torch.device(("cuda" if has_cuda else "cpu") if choice == "auto" else choice)
    if kernels == "triton" and device.type != "cuda" and not interpreting():
        raise ValueError(
            f"--kernels triton needs a CUDA device (running on {device.type}); use --kernels torch, or set "
            "TRITON_INTERPRET=1 to run the kernels in Triton's interpreter (slow, for testing only)"
        )
    return device


def cpu_has_native(precision: str) -> bool:
    """Whether this CPU multiplies ``precision`` ('bf16' or 'fp16') matrices natively (any flag of
    ``CPU_MATRIX_FLAGS`` in /proc/cpuinfo); False where /proc/cpuinfo cannot be read."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_MATRIX_FLAGS[precision])


def emulated_precision(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` runs emulated on ``device`` (a CPU without its matrix instructions), or None."""
    if device.type != "cpu" or precision not in CPU_MATRIX_FLAGS or cpu_has_native(precision):
        return None
    flags = " / ".join(f.upper().replace("_", "-") for f in CPU_MATRIX_FLAGS[precision])
    return f"this CPU has no native {precision} matrix instructions ({flags}): torch emulates them"


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 where it is native (CUDA: fp16 where bf16 is not supported; CPU: fp32 without
    AVX512-BF16 / AMX), else the choice itself; a one-line warning when the choice runs emulated."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native("bf16") else "fp32"
    reason = emulated_precision(precision, device)
    if reason:
        warnings.warn(
            f"--precision {precision}: {reason}, many times slower than fp32; use --precision fp32 or auto",
            stacklevel=2,
        )
    return precision
