"""Timers: warm-up + median-of-N ``time.perf_counter`` loop on CPU, ``triton.testing.do_bench`` on CUDA.

Both return a :class:`Timing` with the 20th, 50th and 80th percentiles in milliseconds. The CPU loop
times every call separately (one sample per call, no averaging that would hide jitter) and stops
after ``reps`` samples or ``budget_s`` seconds, whichever comes first, but never with fewer than
``min_reps`` samples. With ``between``, the CPU loop also calls it, untimed, before the first timed
call and after each one, and keeps what it returns beside the samples in call order (``bench/step.py``
reads the GEMM peak there, next to each step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class Timing:
    """Percentiles of one measured callable, in milliseconds."""

    p20: float
    p50: float
    p80: float
    samples: int
    """Timed calls (CPU) or do_bench's repetitions (CUDA, approximate)."""
    warmup: int
    """Untimed calls before the first sample (CPU); do_bench's warm-up in ms on CUDA."""
    method: str
    """'perf_counter' or 'do_bench'."""
    in_order_ms: list[float] = field(default_factory=list)
    """CPU: every sample in call order, ms."""
    between: list[Any] = field(default_factory=list)
    """CPU with ``between``: its values, one before the first timed call and one after each."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile of an ascending list (numpy's default method)."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_cpu(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    reps: int = 30,
    min_reps: int = 5,
    budget_s: float = 10.0,
    between: Callable[[], Any] | None = None,
) -> Timing:
    """Time ``fn`` on the CPU: ``warmup`` untimed calls, then one perf_counter sample per call (and
    ``between``'s values around them, untimed: module docstring)."""
    if reps < 1 or min_reps < 1:
        raise ValueError("reps and min_reps must be >= 1")
    for _ in range(warmup):
        fn()
    in_order: list[float] = []
    values = [between()] if between is not None else []
    start = time.perf_counter()
    while len(in_order) < reps:
        t0 = time.perf_counter()
        fn()
        in_order.append((time.perf_counter() - t0) * 1e3)
        if between is not None:
            values.append(between())
        if len(in_order) >= min_reps and time.perf_counter() - start > budget_s:
            break
    samples = sorted(in_order)
    return Timing(
        percentile(samples, 0.2),
        percentile(samples, 0.5),
        percentile(samples, 0.8),
        len(samples),
        warmup,
        "perf_counter",
        in_order,
        values,
    )


def time_cuda(fn: Callable[[], Any], *, warmup_ms: int = 25, rep_ms: int = 100) -> Timing:
    """Time ``fn`` on the current CUDA device with ``triton.testing.do_bench`` (L2 flushed per call)."""
    import triton.testing

    p20, p50, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.2, 0.5, 0.8])
    # do_bench estimates one call's time and runs rep_ms worth of calls; report that count
    est = max(p50, 1e-3)
    return Timing(float(p20), float(p50), float(p80), max(1, int(rep_ms / est)), warmup_ms, "do_bench")


def measure(
    fn: Callable[[], Any],
    device: torch.device,
    *,
    warmup: int = 3,
    reps: int = 30,
    min_reps: int = 5,
    budget_s: float = 10.0,
) -> Timing:
    """Dispatch to the device's timer."""
    if device.type == "cuda":
        return time_cuda(fn)
    return time_cpu(fn, warmup=warmup, reps=reps, min_reps=min_reps, budget_s=budget_s)
