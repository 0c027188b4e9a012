"""One command that says whether this install is correct on this GPU, and how fast it is.

Usage
    python bench/gpu_check.py --out DIR [--budget-s 480] [--quick]   # on a CUDA machine
    python bench/gpu_check.py --rehearse --out DIR                    # the same plan on a CPU
    FUSMAE_CACHE=DIR python bench/gpu_check.py --prepare-sample       # e2e's data, for a GPU image

Sections, in this order (each time-boxed against ``--budget-s``; one that the remaining budget cannot
fit is skipped with a note, one that overruns its box is stopped with a note):

env      GPU name, compute capability, SM count, driver, CUDA, torch, triton, numpy, python, git SHA,
         and whether xformers / rasterio are importable.
parity   every Triton op, forward and every gradient, against the float64 reference on the device in
         fp32, fp16 and bf16 (``bench/gpu_parity.py``: odd shapes, ragged splits including 0 and L,
         the tolerance rule of tests/parity); any mismatch fails the run. The launches are spread over
         ``--workers`` spawned processes (default one per core, at most 16): a cold launch is mostly
         its Triton compile, one CPU core each, so they run side by side.
e2e      ``fusmae-fast pretrain --kernels triton --precision bf16`` for a few steps on a small built-in
         sample (``E2E_SAMPLE``), the same run resumed for a few more, then ``fusmae-fast eval linear``
         for one epoch.
xattn    the Eq. 2 matrix of ``bench/xattn.py`` (our kernel, sdpa-mask, flex, two-calls+cat, xformers
         when importable) with CUDA timing and the roofline fraction of devices.GPU_PEAKS' GPUs.
step     ``bench/step.py`` for tiny, small and base, kernels torch and triton, bf16, compile off and
         on: images/s, peak memory, triton/torch ratios; one step.py run per preset.

Before starting, the plan is printed: sections, the number of Triton compiles they may trigger (an upper
bound: every kept config of every kernel in the planned dtypes) and the estimated minutes on a GPU (a
model, not a measurement: seconds per cold compile from ``COMPILE_TIMES``, the rest assumed).
``--rehearse`` runs the same sections on the CPU with Triton's interpreter and tiny shapes (no bf16
kernels: the interpreter has none; e2e with ``--kernels torch``: the interpreter is too slow for a whole
model; step without compile; no timings are claimed). Results go to DIR as they finish:
``gpu_check.json`` and ``gpu_check.md`` are rewritten after every section, xattn / step / e2e keep their
own outputs in DIR/<section>/, so a run killed at its limit keeps every finished section. Exit status: 1
when a section's check failed (a parity mismatch, a wrong xattn result, an xattn.py run that crashed,
an e2e command that failed or a log short of its steps), 2 when a section raised (or parity workers
could not start), else 0; a section skipped or stopped by the budget does not change it.

No network is used and nothing is installed; xformers and rasterio are optional. Without rasterio the
e2e sample cannot be generated (it is written as GeoTIFFs and read back by the real readers), so e2e
is skipped with a note unless it is already in the sample cache: on a machine with rasterio,
``FUSMAE_CACHE=DIR python bench/gpu_check.py --prepare-sample`` writes it into DIR (about 45 MB);
bring DIR and set ``FUSMAE_CACHE=DIR`` for the check.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

COMPILE_S = 1.0
"""Assumed seconds per cold Triton compile, where ``COMPILE_TIMES`` cannot be read."""
COMPILE_TIMES = BENCH / "results" / "compile_check_sm90_bf16.json"
"""compile_check's report of every bf16 config compiled for sm_90 from a cold cache (``python -m
fusmae_fast.kernels.compile_check --targets 90 --only 'bf16$' --json ...`` with an empty
TRITON_CACHE_DIR): its rows' ``compile_s`` (``triton.compile`` alone, one CPU core each) give the plan
its seconds per cold compile. Measured on a CPU without a GPU; a GPU machine's cores compile at their
own speed."""
OP_CASE_COMPILES = 4
"""Assumed new compiles per op-case launch (the autotuner compiles each kept config of the launch's
key; configs the sweep compiled before are cache hits): an assumption for the plan."""
WORKER_START_S = 15.0
"""Assumed seconds for the parity workers to start (import torch and the kernels, create a CUDA
context), once, side by side: an assumption for the plan."""

SECTIONS = ("env", "parity", "e2e", "xattn", "step")

GPU_PRESETS = ("tiny", "small", "base")

E2E_STEPS = {False: 4, True: 1}
"""Optimizer steps of the first e2e run (the resumed run doubles them), on a GPU / in a rehearsal."""
E2E_BATCH = {False: 16, True: 8}
"""Batch size of the e2e runs, on a GPU / in a rehearsal (the resumed run's steps are one epoch of
``E2E_SAMPLE``'s train split on a GPU)."""
E2E_SAMPLE = (128, 16, 16)
"""(train, validation, test) patches of the built-in sample e2e runs on: small enough to bring to a
machine without rasterio (``--prepare-sample``)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for gpu_check.json/.md and each section's outputs")
    p.add_argument(
        "--prepare-sample",
        action="store_true",
        help="only write the e2e section's built-in sample into the sample cache ($FUSMAE_CACHE) and "
        "exit: for a GPU image without rasterio, bring that folder and set FUSMAE_CACHE to it there",
    )
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole run")
    p.add_argument("--quick", action="store_true", help="fewer dtypes / configs per section")
    p.add_argument("--rehearse", action="store_true", help="CPU: interpreter, tiny shapes, no timings")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    p.add_argument(
        "--sweep",
        choices=("none", "bf16", "all"),
        default="bf16",
        help="dtypes of the every-kept-config launches on the GPU (default bf16, the dtype the "
        "interpreter tests cannot run; 'all' adds fp32 and fp16: several hundred more compiles)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes the parity launches are spread over (their Triton compiles run side by side); "
        "default one per core, at most 16; 1 runs them in this process",
    )
    args = p.parse_args(argv)
    if not args.out and not args.prepare_sample:
        p.error("--out is required (except with --prepare-sample)")
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    if args.budget_s <= 0:
        p.error("--budget-s must be > 0")
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    return args


# ---------------------------------------------------------------------------------------------- plan


def planned_dtypes(args: argparse.Namespace, *, gpu: bool = False) -> list[str]:
    """The dtypes of the parity section (``gpu``: those of the GPU plan, also in a rehearsal)."""
    if args.rehearse and not gpu:
        return ["fp32", "fp16"]  # the interpreter computes no bf16
    return ["bf16"] if args.quick else ["fp32", "fp16", "bf16"]


def planned_sweep(args: argparse.Namespace, *, gpu: bool = False) -> list[str]:
    """The dtypes of the every-config sweep: fp32 in a rehearsal (tests/parity/test_every_config.py
    sweeps every config in fp32 and fp16 in the interpreter already; the rehearsal launches one config
    per kernel, ``gpu_parity.sweep_per_kernel``), ``--sweep``'s on a GPU."""
    if args.rehearse and not gpu:
        return ["fp32"]
    return {"none": [], "bf16": ["bf16"], "all": planned_dtypes(args, gpu=True)}[args.sweep]


def parity_workers(args: argparse.Namespace, n_units: int) -> int:
    """``--workers``, else one per core of this machine (at most 16 and one per launch)."""
    from fusmae_fast.bench import worker_pool

    return args.workers or worker_pool.default_workers(n_units)


def xattn_dtypes(args: argparse.Namespace) -> list[str]:
    return ["bf16"] if args.quick else ["fp16", "bf16"]


def step_matrix(args: argparse.Namespace, *, gpu: bool = False) -> dict[str, Any]:
    """What bench/step.py runs, per preset (one step.py run each); ``gpu``: the GPU plan's."""
    if args.rehearse and not gpu:
        import torch

        from fusmae_fast.device import emulated_precision

        # bf16 where this CPU has it, else fp32: step.py skips emulated bf16, and a rehearsal that
        # measures nothing would not run the measuring code
        precision = "fp32" if emulated_precision("bf16", torch.device("cpu")) else "bf16"
        return {
            "presets": ["tiny"], "compile": "off", "batch": 2, "steps": 1, "warmup": 0, "precision": precision
        }  # fmt: skip
    presets = ["tiny", "base"] if args.quick else list(GPU_PRESETS)
    return {
        "presets": presets,
        "compile": "off,on",
        "batch": None,
        "steps": 5,
        "warmup": 3,
        "precision": "bf16",
    }


def count_compiles(dtypes: list[str], module: str | None = None, head_dim: int | None = None) -> int:
    """Kept configs in ``dtypes`` as the kernel modules' compile_specs() list them (of ``module`` only,
    and of head dim ``head_dim`` only, when given): each is at most one cold compile when the autotuner
    tries it."""
    from fusmae_fast.kernels import compile_check

    total = 0
    for name in compile_check.MODULES if module is None else (module,):
        for spec in importlib.import_module(f"fusmae_fast.kernels.{name}").compile_specs():
            parts = spec["config"].split("-")
            dtype = parts[-1] if parts[-1] in ("fp32", "fp16", "bf16") else None
            if (dtype is None or dtype in dtypes) and (head_dim is None or f"D{head_dim}" in parts):
                total += 1
    return total


def compile_cost() -> tuple[float, str]:
    """Seconds per cold Triton compile for the plan and where the figure comes from: the mean
    ``compile_s`` of ``COMPILE_TIMES``, else ``COMPILE_S`` (assumed)."""
    try:
        report = json.loads(COMPILE_TIMES.read_text())
        times = [float(r["compile_s"]) for r in report["rows"] if r.get("ok") and r.get("compile_s")]
    except (OSError, ValueError, KeyError, TypeError):
        times = []
    if not times:
        return COMPILE_S, f"{COMPILE_S:.1f} s per cold compile assumed ({COMPILE_TIMES.name} unreadable)"
    mean = sum(times) / len(times)
    return mean, (
        f"{mean:.2f} s per cold compile, the mean of {len(times)} compiles measured by compile_check "
        f"(triton {report.get('triton', '?')}, {','.join(report.get('targets', []))}, {COMPILE_TIMES.name})"
    )


def build_plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Sections with their estimated seconds on a GPU (``gpu_s``, a model) and in a rehearsal
    (``cpu_s``), which share out the budget, and the seconds they need at least to be worth starting
    (``min_s``)."""
    from fusmae_fast.bench import gpu_parity

    names = gpu_parity.DTYPES
    dtypes = planned_dtypes(args)
    size = "rehearse" if args.rehearse else "gpu"
    sweep = planned_sweep(args)
    n_ops, n_sweep = gpu_parity.count_launches(size, [names[d] for d in dtypes], [names[d] for d in sweep])
    gpu_ops, gpu_sweep = gpu_parity.count_launches(
        "gpu",
        [names[d] for d in planned_dtypes(args, gpu=True)],
        [names[d] for d in planned_sweep(args, gpu=True)],
    )
    workers = parity_workers(args, n_ops + n_sweep)
    per_compile, _ = compile_cost()
    gpu_compiles = gpu_sweep + OP_CASE_COMPILES * gpu_ops
    xattn_compiles = count_compiles(xattn_dtypes(args), "cross_modal_attention", head_dim=64)
    sm = step_matrix(args)
    n_step = len(sm["presets"]) * 2 * len(sm["compile"].split(","))
    gpu_sm = step_matrix(args, gpu=True)
    gpu_step = len(gpu_sm["presets"]) * 2 * len(gpu_sm["compile"].split(","))
    rows = [
        dict(name="env", what="environment record", compiles=0, gpu_s=5, cpu_s=1, min_s=1),
        dict(
            name="parity",
            what=f"{n_ops} op launches (fwd + every grad) in {','.join(dtypes)} + {n_sweep} explicit "
            f"config launches in {','.join(sweep) or 'no dtype'}, over {workers} worker"
            f"{'s' if workers > 1 else ''}",
            compiles=gpu_compiles,
            workers=workers,
            gpu_s=int(gpu_compiles * per_compile / workers + (WORKER_START_S if workers > 1 else 0)) + 30,
            cpu_s=30,
            min_s=10,
        ),
        dict(
            name="e2e",
            what=f"pretrain {E2E_STEPS[args.rehearse]} steps, resume to {2 * E2E_STEPS[args.rehearse]}, "
            "eval linear 1 epoch",
            compiles=0,
            gpu_s=60,
            cpu_s=40,
            min_s=20,
        ),
        dict(
            name="xattn",
            what="Eq. 2 matrix B2 H2 D16 fp32, fwd+bwd, interpreter"
            if args.rehearse
            else f"Eq. 2 matrix --quick, {'+'.join(xattn_dtypes(args))}, 6 providers",
            compiles=xattn_compiles,
            gpu_s=90,
            cpu_s=15,
            min_s=10,
        ),
        dict(
            name="step",
            what=f"{n_step} configs: {','.join(sm['presets'])} x torch,triton x {sm['precision']} x compile "
            f"{sm['compile']}",
            compiles=0,
            gpu_s=gpu_step * 25,
            cpu_s=10,
            min_s=15,
        ),
    ]
    return [r for r in rows if r["name"] in args.sections]


def print_plan(plan: list[dict[str, Any]], args: argparse.Namespace) -> None:
    mode = (
        "rehearsal on the CPU (Triton interpreter, tiny shapes, no timings)" if args.rehearse else "GPU run"
    )
    print(f"# gpu_check plan ({mode}), budget {args.budget_s:.0f} s")
    print(f"#   {'section':<8} {'Triton compiles':>15} {'est. GPU min':>12}  what")
    for r in plan:
        print(f"#   {r['name']:<8} {r['compiles']:>15} {r['gpu_s'] / 60:>12.1f}  {r['what']}")
    total_c = sum(r["compiles"] for r in plan)
    total_s = sum(r["gpu_s"] for r in plan)
    print(
        f"#   {'total':<8} {total_c:>15} {total_s / 60:>12.1f}  (estimate: {compile_cost()[1]}; parity: one "
        f"compile per explicit config launch + {OP_CASE_COMPILES} per op launch (assumed), side by side over "
        f"its workers, one core each, {WORKER_START_S:.0f} s worker start assumed; xattn: an upper bound, "
        "every kept D64 attention config; e2e, xattn and step seconds assumed)"
    )
    if args.rehearse:
        print(
            "#   rehearsal: the interpreter compiles nothing; the GPU columns are what the GPU plan would do"
        )
    elif total_s > args.budget_s:
        print(
            f"#   the estimate exceeds --budget-s {args.budget_s:.0f}: each section gets a share of the "
            "budget by its estimate and is stopped or skipped with a note at its box (--quick, --sweep none "
            "or a larger --budget-s for more)"
        )


# ---------------------------------------------------------------------------------------------- sections


def section_env(ctx: dict[str, Any]) -> dict[str, Any]:
    import numpy
    import torch

    from fusmae_fast.bench import devices

    device = ctx["device"]
    info = devices.run_info(device, devices.pin_threads(None))
    info["numpy"] = numpy.__version__
    info["optional"] = {
        m: importlib.util.find_spec(m) is not None for m in ("xformers", "rasterio", "pytest")
    }
    needed = ("safetensors", "matplotlib", "tqdm")  # pretrain, the plots, progress
    info["missing"] = [m for m in needed if importlib.util.find_spec(m) is None]
    info["driver"] = None
    if device.type == "cuda":
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out = subprocess.run(
                    [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                info["driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
            except (OSError, subprocess.SubprocessError):
                pass
        info["cudnn"] = torch.backends.cudnn.version()
    git = info.get("git") or {}
    gpu = (
        f", sm_{info['capability'].replace('.', '')}, {info['sm_count']} SMs" if device.type == "cuda" else ""
    )
    line = (
        f"{info['device_name']} ({device.type}{gpu}), driver {info['driver']}, CUDA {info.get('cuda')}, "
        f"torch {info['torch']}, triton {info['triton']}, numpy {info['numpy']}, python {info['python']}, "
        f"git {str(git.get('sha'))[:12]}" + (" (local changes)" if git.get("dirty") else "")
    )
    if info["missing"]:
        line += f"; MISSING {', '.join(info['missing'])} (sections that need them will fail)"
    print(f"env: {line}")
    return {"status": "ok", "info": info, "summary": line}


def section_parity(ctx: dict[str, Any], box_s: float) -> dict[str, Any]:
    from fusmae_fast.bench import gpu_parity

    names = gpu_parity.DTYPES
    dtypes = [names[d] for d in planned_dtypes(ctx["args"])]
    size = "rehearse" if ctx["args"].rehearse else "gpu"
    sweep = [names[d] for d in planned_sweep(ctx["args"])]
    workers = parity_workers(ctx["args"], sum(gpu_parity.count_launches(size, dtypes, sweep)))
    deadline = time.monotonic() + box_s
    res = gpu_parity.run_parity(
        ctx["device"], size, dtypes, sweep, deadline, workers=workers, on_done=_ticker("parity")
    )
    ops, sweep = res["op_launches"], res["config_launches"]
    for f in res["failed"]:
        print(f"PARITY FAIL {f['op']} {f['case']} {f['output']}: {f['message']}")
    for line in res["worker_start_errors"]:
        print(f"parity: {line}")
    missing = res["launches_planned"] - res["launches_run"]
    res["status"] = "failed" if res["failed"] else "error" if missing and res["worker_start_errors"] else "ok"
    res["note"] = ""
    if missing:
        why = "workers failed to start" if res["worker_start_errors"] else f"time box {box_s:.0f} s reached"
        res["note"] = f"{why}: {missing} launches not run"
    if ctx["args"].rehearse:
        notes = [res["note"]] if res["note"] else []
        res["note"] = "; ".join(
            notes + ["bf16 not run: the interpreter has no bf16; config sweep: one config per kernel, fp32"]
        )
    worst: dict[str, float] = {}
    for r in res["records"]:
        worst[r["dtype"]] = max(worst.get(r["dtype"], 0.0), r["err"])
    res["summary"] = (
        f"{res['checks']} checks in {ops[0]}/{ops[1]} op launches + {sweep[0]}/{sweep[1]} config launches, "
        f"{len(res['failed'])} failed; largest |err| per dtype "
        + ", ".join(f"{d} {e:.2e}" for d, e in sorted(worst.items()))
    )
    return res


def _ticker(name: str, every_s: float = 10.0):
    """An ``on_done(finished, total)`` that prints ``name: finished/total`` at most every ``every_s``
    seconds and at the end (a long section shows it is alive)."""
    last = [time.monotonic()]

    def tick(finished: int, total: int) -> None:
        now = time.monotonic()
        if finished == total or now - last[0] >= every_s:
            last[0] = now
            print(f"{name}: {finished}/{total} launches", flush=True)

    return tick


def _run_logged(
    cmd: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd`` in its own process group with output to ``log``; stop the whole group at the time box."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout_s))
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
    return {
        "cmd": cmd,
        "rc": rc,
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - t0, 1),
        "log": str(log),
    }


def _cli(*argv: str) -> list[str]:
    """A ``fusmae-fast`` command line run by this interpreter (``python -m fusmae_fast.cli`` is what the
    console script calls), so that the e2e section tests the install gpu_check itself runs in."""
    return [sys.executable, "-m", "fusmae_fast.cli", *argv]


def e2e_sample() -> Path:
    """The store of the e2e section's built-in sample, generated into the sample cache if not there
    (ImportError without rasterio)."""
    from fusmae_fast.data.builtin import builtin_sample

    n_train, n_val, n_test = E2E_SAMPLE
    return builtin_sample(n_train=n_train, n_val=n_val, n_test=n_test)


def prepare_sample() -> int:
    """``--prepare-sample``: write the e2e sample into the sample cache and say what to bring."""
    from fusmae_fast.data.builtin import cache_dir

    try:
        store = e2e_sample()
    except ImportError as exc:
        print(f"gpu_check: --prepare-sample needs {exc.name or exc}, which is missing here")
        return 2
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    print(
        f"gpu_check: the e2e sample is {store} ({size / 2**20:.0f} MiB); on the GPU machine set "
        f"FUSMAE_CACHE to a copy of {cache_dir()}"
    )
    return 0


def section_e2e(ctx: dict[str, Any], box_s: float) -> dict[str, Any]:
    args, out = ctx["args"], ctx["out"] / "e2e"
    try:
        store = e2e_sample()
    except ImportError as exc:  # rasterio missing: the sample cannot be generated here
        return {
            "status": "skipped",
            "note": f"the e2e sample is not in the sample cache and generating it needs "
            f"{exc.name or exc}, which is missing: run `FUSMAE_CACHE=DIR python bench/gpu_check.py "
            "--prepare-sample` where it is installed, bring DIR and set FUSMAE_CACHE=DIR",
        }
    if out.exists():
        shutil.rmtree(out)
    kernels = "torch" if args.rehearse else "triton"
    batch = str(E2E_BATCH[args.rehearse])
    common = ["--data", str(store), "--preset", "tiny", "--kernels", kernels, "--precision", "bf16"]
    common += ["--epochs", "1", "--batch_size", batch, "--num_workers", "0", "--no-progress"]
    run = out / "run"
    steps = []
    deadline = time.monotonic() + box_s
    for name, extra in (
        ("pretrain", ["--max_steps", str(E2E_STEPS[args.rehearse])]),
        ("resume", ["--max_steps", str(2 * E2E_STEPS[args.rehearse]), "--resume", "auto"]),
    ):
        cmd = _cli("pretrain", *common, *extra, "--output_dir", str(run))
        steps.append(dict(name=name, **_run_logged(cmd, out / f"{name}.log", deadline - time.monotonic())))
        if steps[-1]["rc"] != 0:
            break
    if all(s["rc"] == 0 for s in steps):
        cmd = _cli(
            "eval",
            "linear",
            "--ckpt",
            str(run),
            "--data",
            str(store),
            "--epochs",
            "1",
            "--kernels",
            kernels,
            "--precision",
            "bf16",
            "--num_workers",
            "0",
            "--no-progress",
            "--out",
            str(out / "eval"),
        )
        steps.append(
            dict(name="eval linear", **_run_logged(cmd, out / "eval.log", deadline - time.monotonic()))
        )
    logged = []
    log_file = run / "log.jsonl"
    if log_file.exists():
        logged = [json.loads(ln) for ln in log_file.read_text().splitlines() if ln.strip()]
    last_step = max((r.get("step", 0) for r in logged), default=0)
    want_steps = 2 * E2E_STEPS[args.rehearse]
    ok = all(s["rc"] == 0 for s in steps) and len(steps) == 3 and last_step == want_steps
    note = "kernels torch: the interpreter is too slow for a whole model" if args.rehearse else ""
    if any(s["timed_out"] for s in steps):
        note = (note + "; " if note else "") + "time box reached"
    summary = ", ".join(f"{s['name']} rc {s['rc']}{' (timed out)' if s['timed_out'] else ''}" for s in steps)
    summary += f"; log.jsonl reaches step {last_step} (want {want_steps})"
    for s in steps:
        if s["rc"] != 0:
            tail = Path(s["log"]).read_text().strip().splitlines()[-3:]
            print(f"E2E {s['name']} failed (rc {s['rc']}): {' | '.join(tail)[:400]}")
    return {
        "status": "ok" if ok else "failed",
        "steps": steps,
        "last_step": last_step,
        "summary": summary,
        "note": note,
    }


def section_xattn(ctx: dict[str, Any], box_s: float) -> dict[str, Any]:
    args, out = ctx["args"], ctx["out"] / "xattn"
    cmd = [sys.executable, str(BENCH / "xattn.py"), "--out-dir", str(out)]
    if args.rehearse:  # not --quick: it would set B = 32 and the long-L sweep
        cmd += ["--device", "cpu", "--interpret", "--dtype", "fp32", "--batches", "2", "--heads", "2"]
        cmd += ["--head-dim", "16", "--maskings", "independent", "--long-L", "", "--modes", "fwd+bwd"]
        cmd += ["--reps", "2", "--warmup", "0", "--budget", "0.5"]
    else:
        cmd += ["--quick", "--device", "cuda", "--dtype", ",".join(xattn_dtypes(args))]
    run = _run_logged(cmd, out / "xattn.log", box_s)
    stem = f"xattn_{'cpu' if args.rehearse else 'cuda_quick'}"
    res: dict[str, Any] = {"run": run, "files": [str(out / f"{stem}.{e}") for e in ("json", "md", "png")]}
    result_file = out / f"{stem}.json"
    if run["timed_out"] or not result_file.exists():
        res.update(
            status="failed" if not run["timed_out"] else "stopped",
            note=f"xattn.py rc {run['rc']}, see {run['log']}",
        )
        res["summary"] = res["note"]
        return res
    rows = json.loads(result_file.read_text())["rows"]
    wrong = [r for r in rows if r.get("check_ok") is False]
    errors = [r for r in rows if r.get("status") == "error"]
    ok = [r for r in rows if r.get("status") == "ok"]
    ours = [r for r in ok if r["provider"] == "fusmae-triton" and "roofline_frac" in r]
    res["wrong"] = [f"{r['case']} {r['dtype']} {r['mode']} {r['provider']}" for r in wrong]
    res["status"] = "failed" if wrong else ("error" if errors else "ok")
    res["summary"] = (
        f"{len(ok)} timed, {sum(r.get('status') == 'skipped' for r in rows)} skipped, {len(errors)} errors, "
        f"{len(wrong)} WRONG"
    )
    if ours and not args.rehearse:
        best = max(ours, key=lambda r: r["roofline_frac"])
        res["summary"] += (
            f"; fusmae-triton best roofline fraction {best['roofline_frac']:.0%} "
            f"({best['case']} {best['dtype']} {best['mode']})"
        )
    elif not args.rehearse:
        res["summary"] += "; no roofline fraction (this GPU is not in devices.GPU_PEAKS)"
    return res


def section_step(ctx: dict[str, Any], box_s: float) -> dict[str, Any]:
    args, out = ctx["args"], ctx["out"] / "step"
    sm = step_matrix(args)
    deadline = time.monotonic() + box_s
    runs, rows, notes = [], [], []
    for preset in sm["presets"]:
        left = deadline - time.monotonic()
        if left < 10:
            notes.append(f"{preset}: not run, time box reached")
            continue
        pdir = out / preset
        cmd = [sys.executable, str(BENCH / "step.py"), "--presets", preset, "--providers", "fusmae"]
        cmd += ["--kernels", "torch,triton", "--precision", sm["precision"], "--compile", sm["compile"]]
        cmd += ["--steps", str(sm["steps"]), "--warmup", str(sm["warmup"]), "--out-dir", str(pdir)]
        if sm["batch"]:
            cmd += ["--batch", str(sm["batch"])]
        if args.rehearse:
            cmd += ["--device", "cpu", "--threads", "1"]
        run = _run_logged(cmd, pdir / "step.log", left)
        runs.append(run)
        result_file = pdir / f"step_{'cpu' if args.rehearse else 'cuda'}.json"
        if run["timed_out"]:
            notes.append(f"{preset}: stopped at the time box")
        elif result_file.exists():
            rows += json.loads(result_file.read_text())["rows"]
    table = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        twin = [
            t
            for t in rows
            if t.get("status") == "ok"
            and t["preset"] == r["preset"]
            and t["compile"] == r["compile"]
            and t["kernels"] == "torch"
        ]
        ratio = r["images_per_s"] / twin[0]["images_per_s"] if twin and r["kernels"] == "triton" else None
        table.append(
            dict(
                preset=r["preset"],
                kernels=r["kernels"],
                compile=r["compile"],
                batch=r["batch"],
                images_per_s=r["images_per_s"],
                peak_mem_mb=r["peak_mem_mb"],
                triton_over_torch=ratio,
            )
        )
    errors = [
        f"{r['preset']} {r['kernels']} compile={r['compile']}: {r.get('reason')}"
        for r in rows
        if r.get("status") == "error"
    ]
    skipped = [
        f"{r['preset']} {r['kernels']}: {r.get('reason')}" for r in rows if r.get("status") == "skipped"
    ]
    failed_runs = [r for r in runs if r["rc"] != 0 and not r["timed_out"]]
    status = "error" if errors or failed_runs else ("stopped" if notes else "ok")
    summary = f"{len(table)} configs measured, {len(skipped)} skipped, {len(errors)} errors"
    return {
        "status": status,
        "runs": runs,
        "table": table,
        "errors": errors,
        "skipped": skipped,
        "note": "; ".join(
            notes + ([f"rehearsal: compile off only, CPU, {sm['precision']}"] if args.rehearse else [])
        ),
        "summary": summary,
    }


RUNNERS = {"parity": section_parity, "e2e": section_e2e, "xattn": section_xattn, "step": section_step}


# ---------------------------------------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> str:
    where = (
        "rehearsal (CPU, interpreter, no timings)"
        if result["rehearse"]
        else f"on {result.get('device_name')}"
    )
    lines = [f"# gpu_check {where}", ""]
    lines += [
        "| section | Triton compiles (plan) | est. GPU min | status | seconds | summary |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["plan"]:
        sec = result["sections"].get(row["name"], {})
        summary = (sec.get("summary", "") + (f" — {sec['note']}" if sec.get("note") else "")).replace(
            "|", "/"
        )
        lines.append(
            f"| {row['name']} | {row['compiles']} | {row['gpu_s'] / 60:.1f} | {sec.get('status', 'pending')} "
            f"| {sec.get('seconds', '')} | {summary} |"
        )
    step = result["sections"].get("step", {})
    if step.get("table") and not result["rehearse"]:
        lines += [
            "",
            "| preset | kernels | compile | batch | images/s | peak MB | triton/torch |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in step["table"]:
            ratio = f"{r['triton_over_torch']:.2f}" if r["triton_over_torch"] else ""
            lines.append(
                f"| {r['preset']} | {r['kernels']} | {'on' if r['compile'] else 'off'} | {r['batch']} "
                f"| {r['images_per_s']:.1f} | {r['peak_mem_mb']:.0f} | {ratio} |"
            )
    failed = result["sections"].get("parity", {}).get("failed", [])
    if failed:
        lines += ["", "## parity failures", ""] + [
            f"- {f['op']} {f['case']} {f['output']}: {f['message']}" for f in failed
        ]
    return "\n".join(lines) + "\n"


def write_report(out: Path, result: dict[str, Any]) -> None:
    from fusmae_fast.atomic_write import atomic_write_text
    from fusmae_fast.bench import devices

    devices.write_json_atomic(out / "gpu_check.json", result)
    atomic_write_text(out / "gpu_check.md", markdown(result))


def exit_status(result: dict[str, Any]) -> int:
    sections = result["sections"].values()
    if any(s.get("status") == "failed" for s in sections):
        return 1
    return 2 if any(s.get("status") == "error" for s in sections) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare_sample:
        return prepare_sample()
    if args.rehearse:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        print(
            "gpu_check: torch sees no CUDA device; on a CPU run "
            "`python bench/gpu_check.py --rehearse --out DIR`"
        )
        return 2
    device = torch.device("cpu" if args.rehearse else "cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    plan = build_plan(args)
    print_plan(plan, args)
    ctx = {"args": args, "device": device, "out": out}
    result: dict[str, Any] = {
        "tool": "gpu_check",
        "rehearse": args.rehearse,
        "quick": args.quick,
        "budget_s": args.budget_s,
        "plan": plan,
        "sections": {},
    }
    for i, row in enumerate(plan):
        name = row["name"]
        left = deadline - time.monotonic()
        # a fair share of what is left, by the sections' estimates (time one leaves unused goes on)
        est = "cpu_s" if args.rehearse else "gpu_s"
        box = max(row["min_s"], left * row[est] / sum(r[est] for r in plan[i:]))
        t0 = time.monotonic()
        print(f"\n## {name}: {row['what']} (time box {min(box, left):.0f} s)")
        if left < row["min_s"]:
            sec = {
                "status": "skipped",
                "note": f"budget: {left:.0f} s left, the section needs about {row['min_s']} s",
            }
        else:
            try:
                sec = section_env(ctx) if name == "env" else RUNNERS[name](ctx, min(box, left))
            except Exception as exc:  # a section that crashes is reported, the next one still runs
                import traceback

                traceback.print_exc()
                sec = {"status": "error", "note": f"{type(exc).__name__}: {str(exc)[:400]}"}
        sec["seconds"] = round(time.monotonic() - t0, 1)
        if name == "env" and "info" in sec:
            result["device_name"] = sec["info"]["device_name"]
        result["sections"][name] = sec
        write_report(out, result)
        print(f"{name}: {sec['status']} in {sec['seconds']} s. {sec.get('summary', '')}")
    result["seconds"] = round(time.monotonic() - t_start, 1)
    write_report(out, result)
    status = exit_status(result)
    print(f"\n# gpu_check summary ({result['seconds']} s, exit {status}); {out / 'gpu_check.md'}")
    for row in plan:
        sec = result["sections"][row["name"]]
        note = f" [{sec['note']}]" if sec.get("note") else ""
        print(f"#   {row['name']:<7} {sec['status']:<8} {sec.get('summary', '')}{note}")
    return status


if __name__ == "__main__":
    sys.exit(main())
