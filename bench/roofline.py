"""Predicted times of our Triton cross-modal attention kernels on GPUs: a model, not a measurement.

Usage
    python -m fusmae_fast.kernels.compile_check --targets 86 --only 'xattn_.*-D64-.*-fp16' \\
        --json bench/results/compile_check_sm86.json --jobs 1      # once (static data, no GPU needed)
    python bench/roofline.py                                     # -> bench/results/roofline.{json,md}

Inputs
    - registers and shared memory per (kernel, config) from compile_check's JSON (ptxas for sm_86);
    - the exact work of each kernel: the key/query blocks every program visits are enumerated with the
      kernels' own walk (``_walk_ranges``: unmasked full blocks, then the masked ranges), so executed
      FLOPs include the padding of partial and straddling blocks; useful FLOPs (2*n1*n2 score entries)
      come from ``cross_modal_attention_flops``;
    - DRAM bytes: every tensor read or written once (q, k, v, o, dO, dq, dk, dv, LSE, Delta); K/V
      blocks that several programs of one (sample, head) re-read are taken to hit L2;
    - vendor peaks (``devices.GPU_PEAKS``): fp16 tensor-core FLOP/s with fp32 accumulation, DRAM GB/s,
      SM count, per-SM register / shared-memory / warp / block limits.
Model per kernel launch
    resident programs per SM from registers (allocated per warp in units of 256), shared memory (+1 KB
    reserved per block), warps and the block limit; waves = programs / (SMs x resident);
    t = max(executed FLOPs / peak FLOP/s x ceil(waves) / waves, DRAM bytes / bandwidth) + 3 us launch.
    It is optimistic (peak throughput reachable, perfect overlap), so it is a lower bound that ranks
    configurations; the autotuner's pick is modelled as the config with the lowest predicted time.
Limits: the registers and shared memory of the sm_86 compile are used for A100 and H100 too (their own
compiles may differ; on H100 these mma.sync kernels cannot reach the wgmma peak the figure assumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.bench import devices

LAUNCH_US = 3.0
"""Per-launch overhead added to every kernel (host launch + ramp), microseconds."""
CONFIG_RE = re.compile(r"BM(\d+)(?:-BN(\d+))?-D(\d+)-w(\d+)-s(\d+)-(fp16|bf16|fp32)")
ASSUMPTIONS = (
    "Optimistic: peak tensor throughput and bandwidth reachable, perfect overlap, K/V re-reads served "
    "by L2, + 3 µs per launch; wave quantisation and occupancy from ptxas registers/shared memory of the "
    "sm_86 compile (also used for A100/H100). Tile sizes differ in the model only by padding and waves, so "
    "the config shown is the model's pick, not necessarily the autotuner's. Lower bounds, not promises."
)


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    length: int
    heads: int
    head_dim: int
    splits: tuple[int, ...]


def default_shapes(seed: int = 0) -> list[Shape]:
    """Fus-MAE shapes (B 32 and 200, L 112, consistent and independent masking) and two long L."""
    import torch

    from fusmae_fast.config import ModelConfig
    from fusmae_fast.masking import random_masking

    cfg = ModelConfig.from_name("base")
    length, n = cfg.num_kept(), cfg.num_patches
    out = []
    gen = torch.Generator().manual_seed(seed)
    for b in (32, 200):
        out.append(Shape(f"B{b}-L{length}-consistent", b, length, 12, 64, (length // 2,) * b))
        split = random_masking(b, n, 0.75, "independent", generator=gen).split.tolist()
        out.append(Shape(f"B{b}-L{length}-independent", b, length, 12, 64, tuple(split)))
    for length in (1024, 4096):
        out.append(Shape(f"B32-L{length}-consistent", 32, length, 12, 64, (length // 2,) * 32))
    return out


def _trips(lo: int, hi: int, step: int) -> int:
    return max(0, -(-(hi - lo) // step))


def walk_trips(m0: int, s: int, length: int, rows: int, step: int) -> int:
    """Inner-loop trips of the program owning rows [m0, m0+rows): ``_walk_ranges`` of the kernels."""
    m_end = min(m0 + rows, length)
    only1 = m_end <= s
    only2 = m0 >= s
    lo_u = s if only1 else 0
    hi_u = length if only1 else (s if only2 else 0)
    full_end = lo_u + ((hi_u - lo_u) // step) * step
    lo_a = full_end if only1 else (length if only2 else s)
    lo_b = full_end if only2 else 0
    hi_b = 0 if only1 else s
    return _trips(lo_u, full_end, step) + _trips(lo_a, length, step) + _trips(lo_b, hi_b, step)


DOTS = {"xattn_fwd": 2, "xattn_dq": 3, "xattn_dkdv": 4}
"""Block matmuls per inner-loop trip: fwd QK^T, PV; dq QK^T, dO V^T, dS K;
dkdv K Q^T, P^T dO, V dO^T, dS^T Q."""


def kernel_work(kernel: str, bm: int, bn: int, block_d: int, shape: Shape, esize: int) -> dict[str, float]:
    """Programs, executed FLOPs and DRAM bytes of one launch of ``kernel`` for ``shape``."""
    b, length, h, d = shape.batch, shape.length, shape.heads, shape.head_dim
    rows = b * length * h
    if kernel == "xattn_bwd_preprocess":
        programs = math.ceil(length / bm) * b * h
        return {"programs": programs, "flops": 2.0 * rows * d, "bytes": rows * (2 * d * esize + 4)}
    own, step = (bn, bm) if kernel == "xattn_dkdv" else (bm, bn)
    blocks = math.ceil(length / own)
    trips = sum(walk_trips(i * own, s, length, own, step) for s in shape.splits for i in range(blocks))
    flops = float(trips * h * DOTS[kernel] * 2 * bm * bn * block_d)
    if kernel == "xattn_fwd":
        nbytes = rows * (4 * d * esize + 4)  # q, k, v read; o, lse written
    elif kernel == "xattn_dq":
        nbytes = rows * (5 * d * esize + 8)  # q, k, v, dO read; dq written; lse, Delta read
    else:
        nbytes = rows * (6 * d * esize + 8)  # q, k, v, dO read; dk, dv written; lse, Delta read
    return {"programs": blocks * b * h, "flops": flops, "bytes": float(nbytes)}


def resident_blocks(gpu: devices.GpuPeak, regs: int, smem: int, warps: int) -> int:
    """Programs one SM holds at once (registers, shared memory, warps, block limit)."""
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = gpu.regs_per_sm // (regs_per_warp * warps)
    by_smem = gpu.smem_per_sm // (smem + gpu.smem_reserved_per_block) if smem else gpu.max_blocks_per_sm
    by_warps = gpu.max_warps_per_sm // warps
    return max(0, min(gpu.max_blocks_per_sm, by_regs, by_smem, by_warps))


def predict(gpu: devices.GpuPeak, work: dict[str, float], regs: int, smem: int, warps: int, dtype) -> dict:
    blocks = resident_blocks(gpu, regs, smem, warps)
    if blocks == 0:
        return {
            "blocks_per_sm": 0,
            "occupancy": 0.0,
            "waves": math.inf,
            "t_compute_us": math.inf,
            "t_memory_us": math.inf,
            "t_pred_us": math.inf,
            "bound": "does not fit",
        }
    waves = work["programs"] / (gpu.sms * blocks)
    quant = math.ceil(waves) / waves
    t_c = work["flops"] / gpu.peak_flops(dtype) * quant * 1e6
    t_m = work["bytes"] / (gpu.hbm_gbs * 1e9) * 1e6
    return {
        "blocks_per_sm": blocks,
        "occupancy": blocks * warps / gpu.max_warps_per_sm,
        "waves": waves,
        "t_compute_us": t_c,
        "t_memory_us": t_m,
        "t_pred_us": max(t_c, t_m) + LAUNCH_US,
        "bound": "compute" if t_c > t_m else "memory",
    }


def load_compile_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise SystemExit(
            f"{path} not found: run\n  python -m fusmae_fast.kernels.compile_check --targets 86 "
            f"--only 'xattn_.*-D64-.*-fp16' --json {path} --jobs 1"
        )
    data = json.loads(path.read_text())
    rows = [
        r for r in data["rows"] if r.get("ok") and r["target"] == "sm_86" and r["kernel"].startswith("xattn")
    ]
    if not rows:
        raise SystemExit(f"{path} holds no successfully compiled sm_86 xattn configs")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/roofline.py", description=__doc__.split("\n")[0])
    p.add_argument("--compile-json", default=str(devices.RESULTS / "compile_check_sm86.json"))
    p.add_argument("--out-dir", default=str(devices.RESULTS))
    args = p.parse_args(argv)
    import torch

    from fusmae_fast.bench import report
    from fusmae_fast.cost_model import cross_modal_attention_flops
    from fusmae_fast.kernels.cross_modal_attention import kept_configs

    src = Path(args.compile_json)
    crow = load_compile_rows(src)
    dtype_of = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    rows: list[dict[str, Any]] = []
    shapes = default_shapes()
    for c in crow:
        m = CONFIG_RE.fullmatch(c["config"])
        if m is None:
            print(f"warning: cannot parse config {c['config']!r}; skipped", file=sys.stderr)
            continue
        bm, bn, d, warps, _stages, tname = m.groups()
        bm, bn, d, warps = int(bm), int(bn or 0), int(d), int(warps)
        dtype = dtype_of[tname]
        esize = torch.empty((), dtype=dtype).element_size()
        short = c["kernel"].removeprefix("xattn_")
        if short in ("fwd", "dq", "dkdv") and (bm, bn, warps, int(_stages)) not in kept_configs(
            short, d, esize
        ):
            print(
                f"note: {c['kernel']} {c['config']} is no longer in the autotune set; skipped",
                file=sys.stderr,
            )
            continue
        block_d = max(16, 1 << (d - 1).bit_length())
        for shape in shapes:
            if shape.head_dim != d:
                continue
            work = kernel_work(c["kernel"], bm, bn, block_d, shape, esize)
            for gpu in devices.GPU_PEAKS:
                pred = predict(gpu, work, c["regs"], c["smem"], warps, dtype)
                rows.append(
                    {
                        "gpu": gpu.name,
                        "shape": shape.name,
                        "dtype": tname,
                        "kernel": c["kernel"],
                        "config": c["config"],
                        "regs": c["regs"],
                        "smem": c["smem"],
                        "programs": work["programs"],
                        "executed_flops": work["flops"],
                        "bytes": work["bytes"],
                        **pred,
                    }
                )
    summary = []
    for gpu in devices.GPU_PEAKS:
        for shape in shapes:
            for tname in dict.fromkeys(r["dtype"] for r in rows):
                sel = [
                    r
                    for r in rows
                    if r["gpu"] == gpu.name and r["shape"] == shape.name and r["dtype"] == tname
                ]
                best = {}
                for k in ("xattn_fwd", "xattn_bwd_preprocess", "xattn_dq", "xattn_dkdv"):
                    cand = [r for r in sel if r["kernel"] == k]
                    if cand:
                        best[k] = min(cand, key=lambda r: r["t_pred_us"])
                if "xattn_fwd" not in best:
                    continue
                bwd = [best[k] for k in ("xattn_bwd_preprocess", "xattn_dq", "xattn_dkdv") if k in best]
                useful = cross_modal_attention_flops(
                    list(shape.splits), shape.length, shape.heads, shape.head_dim
                )
                summary.append(
                    {
                        "gpu": gpu.name,
                        "shape": shape.name,
                        "dtype": tname,
                        "fwd_us": best["xattn_fwd"]["t_pred_us"],
                        "bwd_us": sum(r["t_pred_us"] for r in bwd),
                        "fwd_bound": best["xattn_fwd"]["bound"],
                        "bwd_bound": "/".join(r["bound"] for r in bwd),
                        "fwd_config": best["xattn_fwd"]["config"],
                        "fwd_occupancy": best["xattn_fwd"]["occupancy"],
                        "bwd_configs": [r["config"] for r in bwd],
                        "useful_fwd_flops": useful,
                        "executed_fwd_flops": best["xattn_fwd"]["executed_flops"],
                        "complete_bwd": len(bwd) == 3,
                    }
                )
    result = {
        "benchmark": "roofline",
        "label": report.ROOFLINE_LABEL,
        "source": str(src.relative_to(devices.REPO)) if src.is_relative_to(devices.REPO) else str(src),
        "assumptions": ASSUMPTIONS,
        "launch_us": LAUNCH_US,
        "gpus": [dataclasses.asdict(g) for g in devices.GPU_PEAKS],
        "rows": rows,
        "summary": summary,
    }
    out = Path(args.out_dir)
    devices.write_json_atomic(out / "roofline.json", result)
    text = report.roofline_markdown(result, detail=True)
    atomic_write_text(out / "roofline.md", text + "\n")
    print(report.roofline_markdown(result))
    print(f"\nwrote {out / 'roofline.json'} and roofline.md ({report.ROOFLINE_LABEL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
