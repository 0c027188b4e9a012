"""Host memory: let glibc's malloc keep freed memory for reuse instead of handing it back every step.

PyTorch's CPU tensors come from ``malloc``. glibc serves every request above its mmap threshold (at
most 32 MiB on 64-bit Linux, however it is set) with a fresh ``mmap`` and unmaps it again on ``free``.
A training or inference step allocates the same large tensors every time (attention scores,
MLP activations, their gradients), so each of them is faulted in page by page on first write, every
step: kernel time that is not matrix work. ``keep_freed_memory`` sets two glibc options:

- ``M_MMAP_MAX = 0``: every request is served from the heap, where freed blocks are reused;
- ``M_TRIM_THRESHOLD``: up to ``TRIM_THRESHOLD_BYTES`` of free memory at the top of the heap is kept
  rather than returned to the system.

The cost: the process's resident size stays near its high-water mark (what a step needs at its
peak), since freed memory is kept for the next step. Every ``fusmae-fast`` command and the CPU
benchmarks call it first; Python users of the package may call it themselves. It does nothing (and
returns False) where the C library is not glibc, or when the environment variable named by
``OPT_OUT_ENV`` is ``system``. ``bench/step.py`` measures the difference (``--host-allocator``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["OPT_OUT_ENV", "TRIM_THRESHOLD_BYTES", "keep_freed_memory", "mmapped_blocks"]

OPT_OUT_ENV = "FUSMAE_FAST_HOST_ALLOCATOR"
"""Set to ``system`` to leave glibc's malloc as it is."""
TRIM_THRESHOLD_BYTES = 2**31 - 1
"""Free memory at the top of the heap kept for reuse (the largest value mallopt's int takes)."""
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # not glibc (musl, ...): its allocator has other knobs
    return libc


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; True when it was applied (idempotent)."""
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() == "system":
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok)


def mmapped_blocks() -> int | None:
    """How many blocks glibc's malloc currently holds as separate mmaps (None without glibc >= 2.33)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblks)
