"""The device a command runs on: ``--device`` and ``--kernels`` checked against this machine.

Pretraining and evaluation both resolve their device here, so that ``--device cuda`` on a machine
without CUDA, or ``--kernels triton`` where Triton cannot run, stop with one line naming the flag
instead of failing inside the first step.
"""

from __future__ import annotations

import torch


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
