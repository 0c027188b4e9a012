"""The ceiling of a step's fraction of the GEMM peak: its matrix work replayed alone, at its own shapes.

A pretraining step's fraction of peak (bench/step.py) is counted FLOPs / step time / the GEMM peak.
Even a step that did nothing but its matrix work could not reach 1: each product runs at the speed
of its own shape (a 3616 x 384 x 384 projection is slower per FLOP than a 2048^3 product) and SDPA's
flash kernel is not a GEMM. This script records every matrix product and attention kernel of one
step (``mm``, ``addmm``, ``bmm``, ``baddbmm``, the CPU flash attention forward and backward) with the
shapes, strides and dtypes it ran at, replays each distinct call alone (best of ``--reps`` after two
warm-ups) and reports, per op, the time in place (inside the step) and alone, and

    ceiling = counted FLOPs of the step / time of its matrix work alone / GEMM peak

the fraction of peak a step of this model reaches if everything but its matrix work took no time.
The rest of the step (elementwise passes, norms, the optimizer, copies) is the recorded step's time
- its matrix time in place. The step time is the median of 3 steps; the peak is the better of
``gemm_peak`` before and after the replay (as in bench/step.py).
Writes ``bench/results/step_ceiling_<device>.json`` and ``.md``.

    python bench/step_ceiling.py                                 # small, fp32 and bf16 where native
    python bench/step_ceiling.py --presets small,base --precision fp32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fusmae_fast.bench import devices, gemm_peak, report
from fusmae_fast.bench.flop_count import CPU_ATTENTION_OPS, count_flops
from fusmae_fast.bench.step import DEFAULT_BATCH, build
from fusmae_fast.device import emulated_precision

_aten = torch.ops.aten
RECORDED = {
    _aten.mm.default: "mm",
    _aten.addmm.default: "addmm",
    _aten.bmm.default: "bmm",
    _aten.baddbmm.default: "baddbmm",
    CPU_ATTENTION_OPS[0].default: "sdpa (CPU flash)",
    CPU_ATTENTION_OPS[1].default: "sdpa backward (CPU flash)",
}
"""The ops replayed, by the name the table gives them."""


def _spec(x: Any) -> Any:
    """A call argument with every tensor replaced by (shape, stride, offset, dtype): what a replay needs."""
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), tuple(x.stride()), x.storage_offset(), x.dtype)
    if isinstance(x, list | tuple):
        return type(x)(_spec(y) for y in x)
    return x


def _materialise(spec: Any, device: torch.device) -> Any:
    """Random tensors with the recorded layout (same strides, so transposed operands stay transposed)."""
    if isinstance(spec, tuple) and spec and spec[0] == "tensor":
        _, shape, stride, offset, dtype = spec
        span = sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
        extent = offset + 1 + span if all(shape) else 1
        base = torch.randn(extent, device=device).to(dtype)
        return torch.as_strided(base, shape, stride, offset)
    if isinstance(spec, list | tuple):
        return type(spec)(_materialise(y, device) for y in spec)
    return spec


class _Recorder(TorchDispatchMode):
    """Times each recorded op where it runs and keeps its call spec."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, Any, Any, float]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in RECORDED:
            return func(*args, **kwargs)
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        self.calls.append((func, _spec(args), _spec(kwargs), time.perf_counter() - t0))
        return out


def _alone(func, args_spec, kwargs_spec, device: torch.device, reps: int) -> tuple[float, int]:
    """(best seconds of ``reps`` calls after two warm-ups, FLOPs) of one call replayed alone."""
    args, kwargs = _materialise(args_spec, device), _materialise(kwargs_spec, device)
    flops = count_flops(lambda: func(*args, **kwargs))
    for _ in range(2):
        func(*args, **kwargs)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        func(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, flops


def measure_ceiling(
    preset: str, precision: str, device: torch.device, reps: int, seed: int
) -> dict[str, Any]:
    """One configuration: step time, its matrix work in place and alone, per op, and the ceiling."""
    cfg = dict(
        device=str(device), seed=seed, kernels="torch", provider="fusmae", preset=preset, variant="xae",
        masking="consistent", batch=DEFAULT_BATCH[preset], precision=precision, compile=False,
        task="pretrain",
    )  # fmt: skip
    _, step, _, _ = build(cfg)
    for _ in range(2):
        step()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    peak_before = gemm_peak.measure_gemm_peak(device, precision)["peak_gflops"]
    recorder = _Recorder()
    t0 = time.perf_counter()
    with recorder:
        step()
    recorded_s = time.perf_counter() - t0
    step_flops = count_flops(step)
    replayed: dict[tuple[Any, str], tuple[float, int]] = {}
    ops: dict[str, dict[str, float]] = defaultdict(
        lambda: dict(calls=0, gflop=0.0, ms_in_place=0.0, ms_alone=0.0)
    )
    for func, args_spec, kwargs_spec, in_place_s in recorder.calls:
        key = (func, repr((args_spec, kwargs_spec)))
        if key not in replayed:
            replayed[key] = _alone(func, args_spec, kwargs_spec, device, reps)
        alone_s, flops = replayed[key]
        row = ops[RECORDED[func]]
        row["calls"] += 1
        row["gflop"] += flops / 1e9
        row["ms_in_place"] += in_place_s * 1e3
        row["ms_alone"] += alone_s * 1e3
    peak = max(peak_before, gemm_peak.measure_gemm_peak(device, precision)["peak_gflops"])
    matrix_in_place = sum(r["ms_in_place"] for r in ops.values())
    matrix_alone = sum(r["ms_alone"] for r in ops.values())
    for r in ops.values():
        r["fraction_of_peak_alone"] = r["gflop"] / (r["ms_alone"] / 1e3) / peak if r["ms_alone"] else None
    return dict(
        preset=preset, precision=precision, batch=DEFAULT_BATCH[preset], step_ms=step_s * 1e3,
        gflop_per_step=step_flops / 1e9, peak_gflops=peak, distinct_calls=len(replayed),
        fraction_of_peak=step_flops / step_s / 1e9 / peak,
        matrix_ms_in_place=matrix_in_place, matrix_ms_alone=matrix_alone,
        recorded_step_ms=recorded_s * 1e3, rest_ms=recorded_s * 1e3 - matrix_in_place,
        ceiling=step_flops / (matrix_alone / 1e3) / 1e9 / peak,
        ops=dict(sorted(ops.items(), key=lambda kv: -kv[1]["ms_alone"])),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/step_ceiling.py", description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="small", help="comma list of tiny, small, base")
    ap.add_argument("--precision", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5, help="timed calls per distinct product replayed alone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=None)
    devices.add_host_allocator_argument(ap)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    allocator = devices.apply_host_allocator(args.host_allocator)
    threads = devices.pin_threads(args.threads)
    info = devices.run_info(device, threads)
    info["host_allocator"] = allocator
    t0 = time.perf_counter()
    rows, skips = [], []
    for preset in [x for x in args.presets.split(",") if x]:
        if preset not in DEFAULT_BATCH:
            ap.error(f"--presets: unknown preset {preset!r} (choose from {', '.join(DEFAULT_BATCH)})")
        for precision in [x for x in args.precision.split(",") if x]:
            reason = emulated_precision(precision, device)
            if reason:
                skips.append(f"{preset} {precision}: {reason}")
                print(f"# {preset} {precision}: skipped, {reason}", flush=True)
                continue
            print(f"# {preset} {precision}", flush=True)
            r = measure_ceiling(preset, precision, device, args.reps, args.seed)
            print(
                f"  step {r['step_ms']:.0f} ms, {r['fraction_of_peak']:.2f} of peak; matrix work "
                f"{r['matrix_ms_in_place']:.0f} ms in place, {r['matrix_ms_alone']:.0f} ms alone -> "
                f"ceiling {r['ceiling']:.2f}",
                flush=True,
            )
            rows.append(r)
    result = {"benchmark": "step_ceiling", "info": info, "rows": rows, "skips": skips}
    devices.finish_run(result, t0, args.out_dir, device, report.step_ceiling_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
