"""Compile every Triton kernel config for real GPU targets, without a GPU, and check its resources.

Run as ``python -m fusmae_fast.kernels.compile_check [--targets 80,86,90] [--json PATH] [--jobs N]``.

For every module in ``MODULES`` that defines ``compile_specs()`` (contract: one dict per (kernel,
config, dtype) with keys kernel, config, fn, signature, constexprs, num_warps, num_stages), each spec
is compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` for each target.
Then, per compiled kernel:

- registers and spills: the ``-v`` report of the ptxas run that made the cubin. Triton passes ``-v`` to
  its own ptxas call and prints the report when ``TRITON_DUMP_PTXAS_LOG`` is set, which
  ``prepare_environment()`` does; the printed report is captured. When Triton's cache had the kernel
  (no ptxas ran), the ptxas Triton uses for the target (``get_ptxas``; Triton 3.9 ships a newer one for
  sm_90+) is re-run on the PTX with the flags of Triton's call (``-lineinfo -v --regAllocOptLevel=2
  --gpu-name=sm_XX``);
- shared memory: ``metadata.shared`` (the dynamic shared memory Triton asks for at launch);
- tensor-core instructions: lines of ``cuobjdump -sass`` on the cubin whose opcode is HMMA / HGMMA /
  IMMA / DMMA (the SASS forms of ``mma``/``wgmma``).

A table (kernel, config, target, regs, spills, smem bytes, mma count) is printed and a JSON report is
written. The exit status is non-zero if a listed module defines a ``@triton.jit`` function but no
``compile_specs()``, if a spec is malformed, if any config fails to compile, if any config spills
registers on sm_86, or if any config needs more than 101376 bytes (99 KB, the sm_86 per-block limit)
of shared memory on any target.

Each kernel's measured resources are stored beside Triton's cache (``RESOURCES_DIR`` under
``triton.knobs.cache.dir``), keyed by the compiled kernel's hash, which covers its source, options,
target, Triton version and ptxas version: a second run finds the compile and the report both cached and
runs no ptxas or cuobjdump (``Row.resources_from`` says where each row's figures came from).
``collect_specs()`` (which ``main()`` calls) first runs ``prepare_environment()``: it removes
``TRITON_INTERPRET`` from this process's environment before any kernel module is imported, since the
interpreter's ``@triton.jit`` objects cannot be compiled. Importing this module changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner, Heuristics
from triton.runtime.jit import JITFunction

from fusmae_fast.atomic_write import atomic_write_text

MODULES: tuple[str, ...] = (
    "cross_modal_attention",
    "reductions",
    "token_gather",
    "masked_patch_embed",
    "token_scatter",
    "masked_loss",
)
"""Kernel modules of ``fusmae_fast.kernels`` that are checked (in this order)."""

TARGETS: tuple[int, ...] = (80, 86, 90)
SMEM_LIMIT = 101376
"""Bytes of shared memory one block may use on sm_86 (99 KB); checked on every target."""
SPILL_TARGET = 86
REQUIRED_KEYS = ("kernel", "config", "fn", "signature", "constexprs", "num_warps", "num_stages")
MMA_RE = re.compile(r"\b(HMMA|HGMMA|IMMA|DMMA)\b")
REGS_RE = re.compile(r"Used (\d+) registers")
SPILL_RE = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
RESOURCE_FIELDS = ("regs", "spill_stores", "spill_loads", "mma")
"""The Row fields a resource report holds (ptxas's three, then the SASS mma count)."""
RESOURCES_DIR = "fusmae_fast_resources_v1"
"""Folder under Triton's cache dir for the stored resource reports (renamed when what they hold changes)."""


@dataclass
class Row:
    module: str
    kernel: str
    config: str
    target: str
    ok: bool = False
    regs: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    smem: int | None = None
    mma: int | None = None
    seconds: float = 0.0
    """Wall seconds of the whole check of this kernel (compile, and ptxas -v and cuobjdump if needed)."""
    compile_s: float = 0.0
    """Wall seconds of ``triton.compile`` alone: what a launch's first (cold-cache) compile costs."""
    resources_from: str = ""
    """Where regs/spills/mma came from: "triton's ptxas" (the compile's own ptxas report), "ptxas rerun"
    (the compile was cached), or "stored" (this kernel was measured by an earlier run)."""
    error: str = ""
    problems: list[str] = field(default_factory=list)


def _bin_dir() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _arch(cc: int) -> str:
    return f"sm_{cc}{'a' if cc >= 90 else ''}"


def is_jit_function(obj: object) -> bool:
    """True for a ``@triton.jit`` function (compiled or interpreted), also under autotune/heuristics."""
    while isinstance(obj, (Autotuner, Heuristics)):
        obj = obj.fn
    if isinstance(obj, JITFunction):
        return True
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - depends on the Triton version
        return False
    return isinstance(obj, InterpretedFunction)


def module_jit_functions(mod: object) -> list[str]:
    """Names of the ``@triton.jit`` functions defined (not merely imported) in a module."""
    names = []
    for name, obj in vars(mod).items():
        if is_jit_function(obj):
            inner = obj
            while isinstance(inner, (Autotuner, Heuristics)):
                inner = inner.fn
            if getattr(inner, "__module__", mod.__name__) == mod.__name__:
                names.append(name)
    return sorted(names)


def prepare_environment() -> None:
    """Make ``@triton.jit`` give compilable functions in this process: remove ``TRITON_INTERPRET`` (the
    interpreter's functions cannot be compiled), state Triton 3.9's default FP fusion (silences a
    warning) and make Triton print its ptxas report. Runs before any kernel module is imported; a
    module imported earlier stays as it was."""
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # compile_one() reads Triton's own ptxas -v report


def collect_specs(modules: tuple[str, ...] | list[str], package: str = "fusmae_fast.kernels"):
    """Import the modules and gather their specs; returns (specs as (module, spec) pairs, errors)."""
    prepare_environment()
    specs: list[tuple[str, dict]] = []
    errors: list[str] = []
    for name in modules:
        try:
            mod = importlib.import_module(f"{package}.{name}")
        except Exception as exc:  # a module that cannot be imported cannot be checked
            errors.append(f"{name}: import failed: {type(exc).__name__}: {exc}")
            continue
        jit_names = module_jit_functions(mod)
        fn = getattr(mod, "compile_specs", None)
        if fn is None:
            if jit_names:
                errors.append(
                    f"{name}: defines @triton.jit functions {jit_names} but no compile_specs(); "
                    "add compile_specs() (see the contract in this module's docstring)"
                )
            continue
        try:
            mod_specs = list(fn())
        except Exception as exc:
            errors.append(f"{name}: compile_specs() raised {type(exc).__name__}: {exc}")
            continue
        if jit_names and not mod_specs:
            errors.append(f"{name}: compile_specs() returned no spec but the module has {jit_names}")
        for i, spec in enumerate(mod_specs):
            missing = [k for k in REQUIRED_KEYS if k not in spec]
            if missing:
                errors.append(f"{name}: spec {i} misses keys {missing}")
                continue
            if not is_jit_function(spec["fn"]):
                errors.append(f"{name}: spec {i} ({spec['kernel']}) 'fn' is not a @triton.jit function")
                continue
            specs.append((name, spec))
    return specs, errors


def _ptxas_path(cc: int) -> str:
    """The ptxas Triton itself uses for this target (3.9 ships a newer one for sm_90+)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(cc).path
    except (ImportError, AttributeError):  # pragma: no cover - older Triton: one bundled ptxas
        return os.path.join(_bin_dir(), "ptxas")


def parse_ptxas_log(log: str) -> tuple[int, int, int] | None:
    """(registers, spill store bytes, spill load bytes) from a ptxas -v report; None if it has none."""
    regs = [int(m) for m in REGS_RE.findall(log)]
    spills = [(int(a), int(b)) for a, b in SPILL_RE.findall(log)]
    if not regs or not spills:
        return None
    return max(regs), max(s for s, _ in spills), max(lo for _, lo in spills)


def _ptxas_report(ptx: str, cc: int) -> tuple[int, int, int]:
    """Run Triton's ptxas -v on PTX; return (registers, spill store bytes, spill load bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [
            _ptxas_path(cc),
            "-lineinfo",
            "-v",
            "--regAllocOptLevel=2",
            f"--gpu-name={_arch(cc)}",
            src,
            "-o",
            os.path.join(tmp, "k.cubin"),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"ptxas -v exited with {out.returncode}: {log.strip()[-1500:]}")
    report = parse_ptxas_log(log)
    if report is None:
        raise RuntimeError(f"could not parse ptxas -v output:\n{log}")
    return report


def _mma_count(cubin: bytes) -> int:
    """Tensor-core instructions in the SASS (cuobjdump -sass)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run(
            [os.path.join(_bin_dir(), "cuobjdump"), "-sass", path], capture_output=True, text=True, check=True
        )
    return sum(1 for line in out.stdout.splitlines() if MMA_RE.search(line))


def _resources_path(kernel_hash: str) -> str:
    return os.path.join(triton.knobs.cache.dir, RESOURCES_DIR, f"{kernel_hash}.json")


def _load_resources(kernel_hash: str) -> dict | None:
    """The stored report of an earlier run for this compiled kernel, or None (absent or unreadable)."""
    try:
        with open(_resources_path(kernel_hash)) as f:
            stored = json.load(f)
        return {k: int(stored[k]) for k in RESOURCE_FIELDS}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_resources(kernel_hash: str, resources: dict) -> None:
    """Write the report atomically (parallel jobs may measure the same kernel); a failed write is
    only a lost shortcut."""
    path = _resources_path(kernel_hash)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, json.dumps(resources))
    except OSError:
        pass


def _measure_resources(kern, cc: int, compile_log: str) -> tuple[dict, str]:
    """Registers, spills and tensor-core instructions of a compiled kernel, and where they came from."""
    stored = _load_resources(kern.hash)
    if stored is not None:
        return stored, "stored"
    report = parse_ptxas_log(compile_log)
    source = "triton's ptxas"
    if report is None:  # Triton's cache had the cubin: no ptxas ran in this compile
        report, source = _ptxas_report(kern.asm["ptx"], cc), "ptxas rerun"
    resources = dict(zip(RESOURCE_FIELDS, (*report, _mma_count(kern.asm["cubin"])), strict=True))
    _store_resources(kern.hash, resources)
    return resources, source


def _attrs(spec: dict) -> dict:
    """Divisibility-by-16 attributes, as Triton's launcher specializes them for aligned arguments.

    A spec may list them in the optional key ``divisible_by_16`` (argument names); without it every
    pointer argument is taken as 16-byte aligned (true for fresh torch allocations) and no int is.
    """
    sig = spec["signature"]
    names = spec.get("divisible_by_16")
    if names is None:
        names = [n for n, t in sig.items() if isinstance(t, str) and t.startswith("*")]
    arg_names = spec["fn"].arg_names
    return {(arg_names.index(n),): [["tt.divisibility", 16]] for n in names}


def compile_one(module: str, spec: dict, cc: int) -> Row:
    """Compile one spec for one target and measure it."""
    row = Row(module=module, kernel=spec["kernel"], config=spec["config"], target=f"sm_{cc}")
    t0 = time.perf_counter()
    try:
        src = ASTSource(
            fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"], attrs=_attrs(spec)
        )
        opts = {"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]}
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # Triton prints its ptxas report (TRITON_DUMP_PTXAS_LOG)
            kern = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=opts)
        row.compile_s = time.perf_counter() - t0
        row.smem = int(kern.metadata.shared)
        resources, row.resources_from = _measure_resources(kern, cc, log.getvalue())
        for name, value in resources.items():  # RESOURCE_FIELDS
            setattr(row, name, value)
        row.ok = True
    except Exception as exc:
        row.error = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
    row.seconds = time.perf_counter() - t0
    if not row.ok:
        row.problems.append("compile failed")
    else:
        if row.smem is not None and row.smem > SMEM_LIMIT:
            row.problems.append(f"shared memory {row.smem} > {SMEM_LIMIT}")
        if cc == SPILL_TARGET and (row.spill_stores or row.spill_loads):
            row.problems.append(f"spills on sm_{cc}: {row.spill_stores} B stores, {row.spill_loads} B loads")
    return row


_WORK: list[tuple[str, dict]] = []


def _worker(job: tuple[int, int]) -> Row:
    index, cc = job
    module, spec = _WORK[index]
    return compile_one(module, spec, cc)


def run(specs: list[tuple[str, dict]], targets: list[int], jobs: int = 1) -> list[Row]:
    """Compile every spec for every target (in ``jobs`` forked processes when jobs > 1)."""
    work = [(i, cc) for cc in targets for i in range(len(specs))]
    if jobs <= 1 or len(work) <= 1:
        return [compile_one(specs[i][0], specs[i][1], cc) for i, cc in work]
    _WORK[:] = specs
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(_worker, work, chunksize=4))


def format_table(rows: list[Row], target: str | None = None) -> str:
    head = ("kernel", "config", "target", "regs", "spills(st/ld B)", "smem B", "mma", "status")
    lines = []
    for r in rows:
        if target is not None and r.target != target:
            continue
        spills = "-" if r.spill_stores is None else f"{r.spill_stores}/{r.spill_loads}"
        status = "ok" if r.ok and not r.problems else "; ".join(r.problems)
        lines.append(
            (
                r.kernel,
                r.config,
                r.target,
                str(r.regs if r.regs is not None else "-"),
                spills,
                str(r.smem if r.smem is not None else "-"),
                str(r.mma if r.mma is not None else "-"),
                status,
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusmae_fast.kernels.compile_check", description=__doc__)
    parser.add_argument("--targets", default=",".join(str(t) for t in TARGETS), help="e.g. 80,86,90")
    parser.add_argument("--modules", default=",".join(MODULES), help="kernel modules to check")
    parser.add_argument("--package", default="fusmae_fast.kernels", help="package holding the modules")
    parser.add_argument("--only", default="", help="only specs whose 'kernel/config' matches this regex")
    parser.add_argument(
        "--json", default=os.path.join(tempfile.gettempdir(), "fusmae_fast_compile_check.json")
    )
    parser.add_argument("--jobs", type=int, default=1, help="parallel compile processes (default 1)")
    parser.add_argument(
        "--per-kernel",
        type=int,
        default=0,
        help="at most this many specs per kernel, in listed order, after --only (0 = all; quick checks)",
    )
    args = parser.parse_args(argv)
    targets = [int(t) for t in args.targets.split(",") if t]
    modules = [m for m in args.modules.split(",") if m]
    t0 = time.perf_counter()
    specs, errors = collect_specs(modules, package=args.package)
    if args.only:
        pattern = re.compile(args.only)
        specs = [(m, s) for m, s in specs if pattern.search(f"{s['kernel']}/{s['config']}")]
    if args.per_kernel > 0:
        seen: dict[str, int] = {}
        kept = []
        for m, s in specs:
            key = f"{m}.{s['kernel']}"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= args.per_kernel:
                kept.append((m, s))
        specs = kept
    rows = run(specs, targets, max(1, args.jobs))
    print(format_table(rows))
    bad = [r for r in rows if r.problems]
    for r in bad:
        print(f"FAIL {r.module}.{r.kernel} [{r.config}] {r.target}: {'; '.join(r.problems)} {r.error}")
    for e in errors:
        print(f"FAIL {e}")
    report = {
        "triton": triton.__version__,
        "targets": [f"sm_{t}" for t in targets],
        "smem_limit": SMEM_LIMIT,
        "modules": modules,
        "errors": errors,
        "rows": [asdict(r) for r in rows],
        "ok": not bad and not errors,
        "seconds": time.perf_counter() - t0,
    }
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    n_mod = len({m for m, _ in specs})
    print(
        f"{len(rows)} compiles ({len(specs)} specs from {n_mod} modules x {len(targets)} targets), "
        f"{len(bad)} failing, {len(errors)} module errors, {report['seconds']:.0f} s; JSON: {args.json}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
