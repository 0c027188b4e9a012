"""What a benchmark ran on: device name, library versions, git SHA, threads, load; GPU peak figures.

Every JSON a benchmark writes carries ``run_info()`` so that a number is never separated from the
device it was measured on. ``GPU_PEAKS`` holds the vendor figures used for roofline fractions and
for ``bench/roofline.py``'s predictions; a GPU missing from it gets no roofline fraction (never a
guessed one).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.host_allocator import OPT_OUT_ENV, keep_freed_memory

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class GpuPeak:
    """Vendor peak figures of one GPU (dense, no sparsity), the inputs of a roofline."""

    name: str
    """Marketing name as used in the tables."""
    match: tuple[str, ...]
    """Lower-case substrings that identify it in ``torch.cuda.get_device_name()``."""
    hbm_gbs: float
    """DRAM bandwidth in GB/s (1e9 bytes per second)."""
    tensor_fp16_tflops: float
    """fp16/bf16 tensor-core peak with fp32 accumulation, TFLOP/s."""
    fp32_tflops: float
    """fp32 peak without tensor cores (our fp32 kernels use input_precision='ieee'), TFLOP/s."""
    sms: int
    """Streaming multiprocessors."""
    cc: int
    """Compute capability as an int (86 = sm_86)."""
    max_warps_per_sm: int
    max_blocks_per_sm: int
    regs_per_sm: int
    smem_per_sm: int
    """Shared memory per SM usable by blocks, bytes (the carve-out maximum)."""
    smem_reserved_per_block: int = 1024
    """Shared memory the driver reserves per resident block (1 KB on sm_80+)."""
    exclude: tuple[str, ...] = ()
    """Lower-case substrings of names that match but are other products with other peaks."""

    def peak_flops(self, dtype: torch.dtype) -> float:
        """FLOP/s for dots in ``dtype`` (fp16/bf16 on tensor cores, fp32 on the FMA units)."""
        tf = self.tensor_fp16_tflops if dtype in (torch.float16, torch.bfloat16) else self.fp32_tflops
        return tf * 1e12


# Sources: NVIDIA GA102 whitepaper (RTX 3090: 82 SMs, 936 GB/s, 71 TFLOP/s fp16 tensor with fp32 acc,
# 35.6 TFLOP/s fp32), A100 datasheet (40 GB SXM: 1555 GB/s, 312 TFLOP/s fp16 tensor, 19.5 fp32, 108 SMs),
# H100 SXM5 80 GB datasheet (3350 GB/s, 989 TFLOP/s dense fp16 tensor, 67 fp32, 132 SMs), H200 SXM
# datasheet (4800 GB/s HBM3e, the H100 SXM's compute: 989 TFLOP/s dense fp16 tensor, 67 fp32, 132 SMs).
# Per-SM limits from the CUDA C programming guide, compute-capability table (8.6: 48 warps,
# 16 blocks, 100 KB smem; 8.0: 64 warps, 32 blocks, 164 KB; 9.0: 64 warps, 32 blocks, 228 KB;
# 64K 32-bit registers each).
GPU_PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak("RTX 3090", ("3090",), 936.0, 71.0, 35.6, 82, 86, 48, 16, 65536, 102400, exclude=("3090 ti",)),
    GpuPeak("A100", ("a100",), 1555.0, 312.0, 19.5, 108, 80, 64, 32, 65536, 167936, exclude=("80gb",)),
    GpuPeak(
        "H100 SXM", ("h100",), 3350.0, 989.0, 67.0, 132, 90, 64, 32, 65536, 233472, exclude=("pcie", "nvl")
    ),
    GpuPeak("H200 SXM", ("h200",), 4800.0, 989.0, 67.0, 132, 90, 64, 32, 65536, 233472, exclude=("nvl",)),
)


def gpu_peak(device_name: str) -> GpuPeak | None:
    """The peak figures for a CUDA device name, or None if we have none (then no roofline fraction).

    Near namesakes with other figures (RTX 3090 Ti, A100 80 GB, H100 PCIe/NVL) are deliberately not
    matched: no fraction is better than a wrong one.
    """
    low = device_name.lower()
    for peak in GPU_PEAKS:
        if any(m in low for m in peak.match) and not any(x in low for x in peak.exclude):
            return peak
    return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def pin_threads(threads: int | None) -> dict[str, Any]:
    """Fix torch's intra-op thread count (default: all CPUs this process may run on) and report it.

    Inter-op threads are set to 1 when still possible (benchmarks run one op at a time).
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    n = threads if threads is not None else max(1, len(allowed) or (os.cpu_count() or 1))
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started in this process
        pass
    return {
        "intra_op": torch.get_num_threads(),
        "inter_op": torch.get_num_interop_threads(),
        "affinity": allowed,
        "cpu_count": os.cpu_count(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }


def add_host_allocator_argument(parser: argparse.ArgumentParser) -> None:
    """``--host-allocator keep|system`` (see ``apply_host_allocator``)."""
    parser.add_argument(
        "--host-allocator",
        default="keep",
        choices=("keep", "system"),
        help="keep: glibc malloc keeps freed memory for reuse, as every fusmae-fast command does "
        "(default); system: malloc as it is",
    )


def apply_host_allocator(choice: str) -> str:
    """Apply ``--host-allocator`` in this process; returns what holds, in words (for the JSON)."""
    if choice == "keep":
        if keep_freed_memory():
            return "keep: glibc malloc keeps freed memory for reuse (fusmae_fast.host_allocator)"
        return f"system: keep asked for, but the C library is not glibc or {OPT_OUT_ENV}=system"
    return "system: malloc as it is"


def git_sha() -> dict[str, Any]:
    """HEAD's SHA and whether the work tree had uncommitted changes (numbers may then not match it)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"sha": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages (other work on a shared machine skews CPU timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_info(device: torch.device, threads: dict[str, Any]) -> dict[str, Any]:
    """The header of every results JSON."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info: dict[str, Any] = {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "git": git_sha(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": threads,
        "loadavg_start": loadavg(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1",
    }
    if device.type == "cpu":
        from fusmae_fast.device import CPU_MATRIX_FLAGS, cpu_has_native

        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cpu_native"] = ["fp32"] + [p for p in CPU_MATRIX_FLAGS if cpu_has_native(p)]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["cuda"] = torch.version.cuda
        info["sm_count"] = props.multi_processor_count
        info["capability"] = f"{props.major}.{props.minor}"
        peak = gpu_peak(info["device_name"])
        info["peak"] = asdict(peak) if peak is not None else None
    return info


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on the device (CPU: MemAvailable), used to skip cases that would not fit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON atomically (``fusmae_fast.atomic_write``), so a crash never leaves half a results file."""
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def write_results(out_dir: Path, stem: str, result: dict[str, Any], table: str) -> None:
    """``<stem>.json`` (the result) and ``<stem>.md`` (its table) in out_dir, atomically; prints the table."""
    write_json_atomic(out_dir / f"{stem}.json", result)
    atomic_write_text(out_dir / f"{stem}.md", table + "\n")
    print()
    print(table)


def round_order(items: list, rnd: int) -> list:
    """The order to time ``items`` in round ``rnd`` (0-based) of an interleaved benchmark: as given in
    even rounds, reversed in odd ones. On a shared CPU the first point timed after a change of work
    runs slower; alternating the order cancels that in the same-round comparisons."""
    return items if rnd % 2 == 0 else items[::-1]


def finish_run(
    result: dict[str, Any],
    t0: float,
    out_dir: str | None,
    device: torch.device,
    markdown: Callable[[dict[str, Any]], str],
    suffix: str = "",
) -> Path:
    """Close a benchmark run: load average at the end and seconds into ``result["info"]``, then
    ``<benchmark>_<device><suffix>.json/.md`` written (``write_results``) into out_dir (default
    ``RESULTS``). Returns that path without its suffix, for any further output of the run."""
    info = result["info"]
    info["loadavg_end"] = loadavg()
    info["seconds"] = round(time.perf_counter() - t0, 1)
    folder = Path(out_dir) if out_dir else RESULTS
    stem = f"{result['benchmark']}_{device_tag(device)}{suffix}"
    write_results(folder, stem, result, markdown(result))
    print(f"\nwrote {folder / stem}.json/.md in {info['seconds']} s")
    return folder / stem


def device_tag(device: torch.device) -> str:
    """Short tag for result file names: 'cpu' or 'cuda'."""
    return device.type
