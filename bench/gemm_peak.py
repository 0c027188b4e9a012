"""This device's matrix-multiply peak per dtype, measured in the benchmark's own run, and the fraction of
it that a row reaches.

``measure_gemm_peak`` times two products per dtype with the benchmark's thread setting and keeps the
faster: a large square one (2048 x 2048 x 2048) and a ViT-shaped one (the tokens of a batch of 32 x
113 times a 384 x 1536 MLP weight, the shape most of a step's FLOPs run at). Each is the best of
``reps`` calls after two warm-up calls: a peak is what the machine can do, so the best sample is the
estimate, and a shared CPU's bursts of foreign load only lower the others.
``fraction_of_peak`` = counted FLOPs per second of a row / that peak: the share of the time the row
spends doing matrix work at the speed this machine can do it.

Where the machine's speed changes within a run (a shared VM's matrix units can run two to three times
faster for some seconds, then slow again), a peak read minutes away from a step says little about
that step. ``PeakProbe`` reads the ViT-shaped product's rate in a few calls, cheap enough to run
beside every timed step; ``fraction_of_adjacent_peak`` takes each step's rate over the mean of the
probes just before and just after it, and reports the median over the steps.

Run alone: ``python bench/gemm_peak.py`` prints the peaks of this device.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from fusmae_fast.device import emulated_precision

SHAPES: dict[str, tuple[int, int, int]] = {
    "square 2048": (2048, 2048, 2048),
    "ViT MLP 3616x384x1536": (32 * 113, 384, 1536),
}
"""(m, k, n) of the products timed; the peak is the faster of them."""
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _time_once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure_gemm_peak(device: torch.device, precision: str, reps: int = 8) -> dict[str, Any]:
    """GFLOP/s of the best call of each product in ``SHAPES`` at ``precision``; ``peak_gflops`` the best."""
    shapes = {name: PeakProbe(device, precision, reps, shape=name, warmup=2)() for name in SHAPES}
    return {"peak_gflops": max(shapes.values()), "shapes_gflops": shapes, "reps": reps}


class PeakProbe:
    """One product of ``SHAPES`` (default the ViT-shaped one) at one precision, kept ready: each call
    returns the GFLOP/s of its best of ``reps`` products (operands made once; the first call is
    preceded by ``warmup`` untimed ones)."""

    def __init__(
        self,
        device: torch.device,
        precision: str,
        reps: int = 3,
        shape: str = "ViT MLP 3616x384x1536",
        warmup: int = 1,
    ) -> None:
        self.m, self.k, self.n = SHAPES[shape]
        g = torch.Generator().manual_seed(0)
        dtype = DTYPES[precision]
        self.a = torch.randn(self.m, self.k, generator=g).to(device=device, dtype=dtype)
        self.b = torch.randn(self.k, self.n, generator=g).to(device=device, dtype=dtype)
        self.device, self.reps, self.warmup = device, reps, warmup

    def __call__(self) -> float:
        def product() -> torch.Tensor:
            return self.a @ self.b

        for _ in range(self.warmup):
            _time_once(product, self.device)
        self.warmup = 0
        best = min(_time_once(product, self.device) for _ in range(self.reps))
        return 2 * self.m * self.k * self.n / best / 1e9


def fraction_of_adjacent_peak(
    gflop_per_call: float | None, in_order_ms: list[float], probes_gflops: list[float]
) -> dict[str, float] | None:
    """Each call's counted GFLOP/s over the mean of the probes before and after it (``probes_gflops``:
    one before the first call and one after each): the median, min and max over the calls (None
    without a FLOP count or without one probe per gap)."""
    if not gflop_per_call or not in_order_ms or len(probes_gflops) != len(in_order_ms) + 1:
        return None
    fractions = sorted(
        gflop_per_call / (ms / 1e3) / ((probes_gflops[i] + probes_gflops[i + 1]) / 2)
        for i, ms in enumerate(in_order_ms)
    )
    mid = len(fractions) // 2
    median = fractions[mid] if len(fractions) % 2 else (fractions[mid - 1] + fractions[mid]) / 2
    return {"median": median, "min": fractions[0], "max": fractions[-1]}


def measure_peaks(device: torch.device, precisions: list[str]) -> dict[str, dict[str, Any]]:
    """The peak of each precision this device multiplies natively (an emulated one, e.g. bf16 on a CPU
    without AVX512-BF16 / AMX, would take minutes to time and is not a peak of anything)."""
    return {
        p: measure_gemm_peak(device, p)
        for p in precisions
        if p in DTYPES and emulated_precision(p, device) is None
    }


def merge_peaks(*runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Peaks measured at several times of one run (e.g. before and after the matrix): keep the best."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        for precision, peak in run.items():
            seen = out.setdefault(precision, {"peak_gflops": 0.0, "samples_gflops": []})
            seen["samples_gflops"].append(peak["peak_gflops"])
            if peak["peak_gflops"] > seen["peak_gflops"]:
                seen.update(peak_gflops=peak["peak_gflops"], shapes_gflops=peak["shapes_gflops"])
    return out


def fraction_of_peak(
    gflop_per_item: float | None, items_per_s: float, peak_gflops: float | None
) -> float | None:
    """Counted GFLOP/s over the measured peak (None when either is unknown)."""
    if not gflop_per_item or not peak_gflops:
        return None
    return gflop_per_item * items_per_s / peak_gflops


def main() -> int:
    from fusmae_fast.bench import devices

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = devices.pin_threads(None)
    print(f"# {devices.device_name(device)}, {threads['intra_op']} threads")
    for precision in DTYPES:
        reason = emulated_precision(precision, device)
        if reason:
            print(f"{precision}: not measured, {reason}")
    for precision, peak in measure_peaks(device, list(DTYPES)).items():
        shapes = ", ".join(f"{k} {v:.0f}" for k, v in peak["shapes_gflops"].items())
        print(f"{precision}: peak {peak['peak_gflops']:.0f} GFLOP/s ({shapes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
