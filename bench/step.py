"""Benchmark of a whole pretraining step (masking + forward + backward + AdamW) and of ``encode``, in
images/s and as a fraction of this device's matrix-multiply peak.

Usage
    python bench/step.py --quick          # tiny (B=16) and small (B=8), fp32, eager; + a profile
    python bench/step.py                  # tiny, small, base; fp32 and bf16; compile off and on
    python bench/step.py --presets base --batch 16 --precision bf16 --compile on --kernels triton

Providers
    fusmae  our model (``fusmae_fast.model.FusMAE``) with ``--kernels`` torch and/or triton (triton: CUDA)
    plain   the same model computed the textbook way (``bench/plain_model.py``): same weights (the
            FusMAE state dict, loaded strictly), same masks, same optimizer; the baseline our fusions
            are measured against in the same run.
Tasks
    pretrain  one pretraining step, both providers;
    encode    ``FusMAE.encode(s1, s2)`` under ``torch.inference_mode``: both modalities, all 450 tokens
              (what embeddings and linear probes run), fusmae only (plain has no encoder of its own).
Fraction of peak: counted FLOPs per second / the GEMM peak of the row's dtype, measured in the same
run before and after the matrix (``bench/gemm_peak.py``; the better of the two is kept). On a CPU also
the fraction of the adjacent peak: the worker reads the ViT-shaped product's rate before the first
timed step and after each (``gemm_peak.PeakProbe``, untimed) and each step's rate is taken over the
mean of its two neighbours (median, min, max over the steps), which a machine whose speed drifts
within the run cannot skew.
Each configuration runs in a fresh worker process (``--worker``), so peak memory is that
configuration's own and one configuration's allocator state cannot help or hurt the next.
Timing: warm-up steps, then one ``perf_counter`` sample per step (CUDA: synchronised), p20/p50/p80;
images/s = batch / p50. Memory: CUDA ``max_memory_allocated``; CPU the process's peak resident set
(VmHWM, reset via /proc/self/clear_refs after the model and optimizer are built; ``resource``
ru_maxrss if that is not allowed), reported as the total and as the growth during the steps
(optimizer state + activations + allocator caches).
Host allocator: ``--host-allocator keep`` (default, what every ``fusmae-fast`` command does) lets
glibc's malloc keep freed memory for reuse (``fusmae_fast.host_allocator``), ``system`` leaves it as
it is; the parent and every worker use the same setting, and the JSON records it.
--recount FILE counts the FLOPs of every eager row of an earlier result again, each in a fresh worker
built as the run built it, and rewrites its GFLOP/image and fractions (timings untouched; the header
says when): for a fix of the counter, without timing the matrix again.
--profile PRESET adds a torch.profiler breakdown (top ops by self CPU time, and time per model
region) of both providers for that preset, at --profile-precision (default bf16 when measured).
Outputs: a table on stdout, bench/results/step_<device>[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_BATCH = {"tiny": 32, "small": 32, "base": 16}
QUICK = {
    "presets": "tiny,small",
    "batch": {"tiny": 16, "small": 8},
    "precision": "fp32",
    "compile": "off",
    "steps": 6,
    "warmup": 2,
    "profile": "small",
    "tasks": "pretrain,encode",
}
"""--quick: tiny at B=16 and small at B=8, fp32, eager, 6 timed steps after 2 warm-up steps, and the
profile of the small preset."""
WORKER_TIMEOUT_S = 1800
ROW_KEYS = ("task", "preset", "provider", "kernels", "precision", "compile", "batch", "variant", "masking")
"""What names a configuration in a result row (and rebuilds it for ``--recount``)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/step.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny+small at small batch, fp32, eager (+ profile)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--presets", default="tiny,small,base")
    p.add_argument("--tasks", default="pretrain,encode", help="pretrain and/or encode (comma list)")
    p.add_argument("--providers", default="fusmae,plain")
    p.add_argument("--kernels", default=None, help="torch,triton (default: cuda both, cpu torch)")
    p.add_argument("--precision", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    p.add_argument("--compile", default="off,on", help="torch.compile the model: off and/or on")
    p.add_argument("--batch", type=int, default=None, help="batch for every preset (default per preset)")
    p.add_argument("--variant", default="xae", choices=("xae", "xad"))
    p.add_argument("--masking", default="consistent", help="consistent and/or independent (comma list)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="run the whole matrix this many times, interleaved (the order reversed every other round), "
        "keep each config's fastest round (default 2 with --quick, else 1): fairer ratios on a shared CPU",
    )
    p.add_argument("--profile", default=None, help="preset to profile with torch.profiler (both providers)")
    p.add_argument(
        "--profile-precision", default=None, help="fp32 or bf16 (default: bf16 if measured, else fp32)"
    )
    from fusmae_fast.bench import devices

    devices.add_host_allocator_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="default bench/results")
    p.add_argument("--recount", default=None, metavar="FILE", help="recount an earlier result's FLOPs")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batches = dict(DEFAULT_BATCH)
    if args.quick:
        args.presets = QUICK["presets"]
        args.batches = dict(QUICK["batch"])
        args.precision = QUICK["precision"]
        args.compile = QUICK["compile"]
        args.steps, args.warmup = QUICK["steps"], QUICK["warmup"]
        args.profile = args.profile or QUICK["profile"]
    if args.rounds is None:
        args.rounds = 2 if args.quick else 1
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.batch is not None:
        args.batches = {k: args.batch for k in ("tiny", "small", "base")}
    if args.profile_precision is None:
        args.profile_precision = "bf16" if "bf16" in _items(args.precision) else "fp32"
    if args.profile_precision not in ("fp32", "bf16"):
        p.error(f"--profile-precision must be fp32 or bf16, got {args.profile_precision!r}")
    return args


# ---------------------------------------------------------------------------------------------- worker


def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def build(cfg: dict[str, Any]):
    """Model, optimizer, inputs and the step function for one configuration."""
    import torch

    from fusmae_fast.config import ModelConfig
    from fusmae_fast.masking import random_masking
    from fusmae_fast.model import FusMAE
    from fusmae_fast.optim import adamw

    device = torch.device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    kernels = cfg["kernels"] if cfg["provider"] == "fusmae" else "torch"
    mcfg = ModelConfig.from_name(
        cfg["preset"], variant=cfg["variant"], masking=cfg["masking"], kernels=kernels
    )
    model = FusMAE(mcfg)
    if cfg["provider"] == "plain":
        from fusmae_fast.bench.plain_model import plain_from

        model = plain_from(model)
    model = model.to(device).train()
    b = cfg["batch"]
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    s1 = torch.randn(b, mcfg.s1_channels, mcfg.img_size, mcfg.img_size, generator=g).to(device)
    s2 = torch.randn(b, mcfg.s2_channels, mcfg.img_size, mcfg.img_size, generator=g).to(device)
    mask_gen = torch.Generator().manual_seed(cfg["seed"] + 2)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if cfg["precision"] == "bf16"
        else contextlib.nullcontext()
    )
    is_plain = cfg["provider"] == "plain"
    rf = torch.profiler.record_function
    losses: list[float] = []
    if cfg.get("task") == "encode":
        encode = torch.compile(model.eval().encode) if cfg["compile"] else model.eval().encode

        def infer() -> None:
            with torch.inference_mode(), autocast:
                feats = encode(s1, s2)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            losses.append(float(feats.cls.float().norm()))

        return model, infer, losses, device
    opt = adamw(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    fwd = torch.compile(model) if cfg["compile"] else model

    def step() -> None:
        with rf("step/masking"):
            masking = random_masking(
                b, mcfg.num_patches, mcfg.mask_ratio, mcfg.masking, generator=mask_gen, device=device
            )
        with rf("step/forward"), autocast:
            out = fwd(s1, s2, masking=masking)  # FusMAE as pretraining runs it by default
            loss = out if is_plain else out.loss
        with rf("step/backward"):
            loss.backward()
        with rf("step/optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        losses.append(float(loss.detach()))

    return model, step, losses, device


def run_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from fusmae_fast.bench import devices, gemm_peak
    from fusmae_fast.bench.timing import time_cpu
    from fusmae_fast.device import emulated_precision

    threads = devices.pin_threads(cfg["threads"])
    result: dict[str, Any] = {"threads": threads["intra_op"]}
    model, step, losses, device = build(cfg)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        method = "torch.cuda.max_memory_allocated"
    else:
        base_kb = _rss_kb("VmRSS")
        method = (
            "peak RSS (VmHWM reset after model+optimizer build)"
            if _reset_peak_rss()
            else "ru_maxrss (process peak)"
        )
    t0 = time.perf_counter()
    step()  # first step: compile (if on), optimizer state allocation
    result["first_step_s"] = time.perf_counter() - t0
    probe = None
    native = cfg["precision"] in gemm_peak.DTYPES and emulated_precision(cfg["precision"], device) is None
    if device.type == "cpu" and native:
        probe = gemm_peak.PeakProbe(device, cfg["precision"])  # the peak next to each step
    timing = time_cpu(
        step,
        warmup=max(0, cfg["warmup"] - 1),
        reps=cfg["steps"],
        min_reps=cfg["steps"],
        budget_s=1e9,
        between=probe,
    )
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        result.update(peak_mem_mb=peak / 2**20, step_mem_mb=(peak - base) / 2**20)
    else:
        hwm = _rss_kb("VmHWM") if "VmHWM" in method else None
        peak_kb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result.update(peak_mem_mb=peak_kb / 1024, step_mem_mb=(peak_kb - (base_kb or 0)) / 1024)
    result.update(
        status="ok",
        ms_p20=timing.p20,
        ms_p50=timing.p50,
        ms_p80=timing.p80,
        samples=timing.samples,
        step_ms_in_order=timing.in_order_ms,
        adjacent_peaks_gflops=timing.between,
        images_per_s=cfg["batch"] / (timing.p50 / 1e3),
        mem_method=method,
        loss_first=losses[0],
        loss_last=losses[-1],
        params=sum(p.numel() for p in model.parameters()),
    )
    if not cfg["compile"]:
        result["gflop_per_image"] = gflop_per_image(step, cfg["batch"])
    return result


def gflop_per_image(step, batch: int) -> float:
    """Matmul/conv/attention GFLOP of one call of ``step`` (a whole step, forward and backward) per
    image: deterministic and load-free. Call it after a first call, which times the attention forms."""
    from fusmae_fast.bench.flop_count import count_flops

    return count_flops(step) / batch / 1e9


def count_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """``--recount``'s worker: one configuration built as a timed run builds it, one uncounted call (the
    attention forms are picked there, as in the run's first step), then the counted call."""
    from fusmae_fast.bench import devices

    devices.pin_threads(cfg["threads"])
    _, step, _, _ = build(cfg)
    step()
    return {"status": "ok", "gflop_per_image": gflop_per_image(step, cfg["batch"])}


def recount(path: Path) -> int:
    """``--recount FILE``: the eager rows' GFLOP/image counted again (each in a fresh worker), every
    row's fractions recomputed from them with the run's own peaks, FILE and its table rewritten. A
    worker picks its attention forms by timing afresh, and SDPA's flash backward is credited with its
    score recompute, the explicit form's is not: where a near tie went the other way, a row's count
    moves by that recompute (a fraction of a percent of a step)."""
    from fusmae_fast.bench import devices, report

    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--recount: cannot read {path}: {exc}") from None
    if not isinstance(result, dict) or result.get("benchmark") != "step":
        raise SystemExit(f"--recount: {path} is not a bench/step.py result")
    rows = [r for r in result["rows"] if r.get("status") == "ok" and not r["compile"]]
    for i, r in enumerate(rows, 1):
        cfg = {k: r[k] for k in ROW_KEYS}
        cfg.update(mode="count", device=result["info"]["device"], seed=result["settings"]["seed"])
        # the allocator setting and the thread count change no count; the threads are the run's anyway
        cfg.update(threads=result["info"]["threads"]["intra_op"], host_allocator="keep")
        res = run_config(cfg)
        if res.get("status") != "ok":
            print(f"ERROR {_name(r)}: {res.get('reason')}")
            return 1
        old, new = r.get("gflop_per_image"), res["gflop_per_image"]
        print(f"[{i}/{len(rows)}] {_name(r)}: {old} -> {new} GFLOP/image")
        r["gflop_per_image"] = new
    add_fractions(result["rows"], result["peaks"])
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result["info"]["recounted"] = {"git": devices.git_sha(), "timestamp": stamp}
    devices.write_results(path.parent, path.stem, result, report.step_markdown(result))
    return 0


# ---------------------------------------------------------------------------------------------- profile


def _wrap(obj: Any, attr: str, region: str) -> None:
    """Make ``obj.attr(...)`` run inside ``record_function(region)`` (profiling workers only)."""
    import torch

    fn = getattr(obj, attr)

    def wrapped(*a, **kw):
        with torch.profiler.record_function(region):
            return fn(*a, **kw)

    setattr(obj, attr, wrapped)


REGIONS = (
    "step/masking",
    "step/forward",
    "fwd/embed",
    "fwd/xattn_block",
    "fwd/vit_blocks",
    "fwd/decoders",
    "fwd/loss",
    "step/backward",
    "step/optimizer",
)


def _instrument(model: Any, provider: str) -> None:
    """record_function ranges around the model's regions (profiling workers only)."""
    _wrap(model, "embed", "fwd/embed")
    block = getattr(model, "xattn_encoder", None) or getattr(model, "xattn_decoder", None)
    _wrap(block, "forward", "fwd/xattn_block")
    for blk in model.blocks:
        _wrap(blk, "forward", "fwd/vit_blocks")
    for dec in (model.decoder_s1, model.decoder_s2):
        _wrap(dec, "forward", "fwd/decoders")
    if provider == "plain":
        from fusmae_fast.bench import plain_model

        _wrap(plain_model, "forward_loss", "fwd/loss")
    else:
        from fusmae_fast import ops

        _wrap(ops, "masked_mse", "fwd/loss")


def profile_pair(cfg: dict[str, Any], steps: int = 3) -> dict[str, Any]:
    """torch.profiler of both providers in one process, one step each in turn (so a burst of foreign
    load hits both alike): top ops by self CPU time and CPU time per model region, per step."""
    from torch.profiler import ProfilerActivity, profile

    from fusmae_fast.bench import devices

    devices.pin_threads(cfg["threads"])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cfg["device"] == "cuda" else [])
    runs = {}
    for provider in ("fusmae", "plain"):
        model, step, _, _ = build({**cfg, "provider": provider, "kernels": "torch", "compile": False})
        _instrument(model, provider)
        step()
        step()
        runs[provider] = (step, {}, {})
    for _ in range(steps):
        for step, ops_acc, reg_acc in runs.values():
            with profile(activities=activities, with_flops=True) as prof:
                step()
            for e in prof.key_averages():
                if e.key in REGIONS:
                    reg_acc[e.key] = reg_acc.get(e.key, 0.0) + e.cpu_time_total / 1e3 / steps
                elif not e.key.startswith(("step/", "fwd/")):
                    ms, calls, flops = ops_acc.get(e.key, (0.0, 0.0, 0.0))
                    ops_acc[e.key] = (
                        ms + e.self_cpu_time_total / 1e3 / steps,
                        calls + e.count / steps,
                        flops + (e.flops or 0) / steps,
                    )
    out = {}
    for provider, (_, ops_acc, reg_acc) in runs.items():
        ops_ = [{"op": k, "self_ms": v[0], "calls": v[1]} for k, v in ops_acc.items()]
        ops_.sort(key=lambda o: -o["self_ms"])
        out[provider] = {
            "regions": reg_acc,
            "top": ops_[:12],
            "all": ops_,
            "steps": steps,
            "matrix_products": matrix_products(ops_acc),
        }
    return out


MATRIX_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
"""The ops whose FLOPs torch.profiler counts (``with_flops``) and that run on the BLAS / oneDNN GEMMs."""


def matrix_products(ops_acc: dict[str, tuple[float, float, float]]) -> dict[str, float]:
    """Self time and GFLOP/s of the matrix products inside the profiled step: how fast the GEMMs run
    in place (operands fresh from the previous op, outputs newly allocated), to set against the peak
    of the same products timed alone."""
    ms = sum(ops_acc[k][0] for k in MATRIX_OPS if k in ops_acc)
    gflop = sum(ops_acc[k][2] for k in MATRIX_OPS if k in ops_acc) / 1e9
    return {
        "ops": [k for k in MATRIX_OPS if k in ops_acc],
        "self_ms": ms,
        "gflop": gflop,
        "gflops": gflop / (ms / 1e3) if ms else 0.0,
    }


# ------------------------------------------------------------------------------------------------ main


def _items(csv: str) -> list[str]:
    return [x for x in csv.split(",") if x]


def configs(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    kernels = _items(args.kernels or ("torch,triton" if device == "cuda" else "torch"))
    out = []
    axes = (args.tasks, args.presets, args.masking, args.precision, args.compile, args.providers)
    for task, preset, masking, precision, comp, provider in itertools.product(*map(_items, axes)):
        if task == "encode" and (provider != "fusmae" or masking != _items(args.masking)[0]):
            continue  # encode: our model only, and no masking (one row, whatever --masking lists)
        for kern in kernels if provider == "fusmae" else ["-"]:
            out.append(
                {
                    "task": task,
                    "preset": preset,
                    "provider": provider,
                    "kernels": kern,
                    "precision": precision,
                    "compile": comp == "on",
                    "batch": args.batches[preset],
                    "variant": args.variant,
                    "masking": masking,
                    "device": device,
                    "seed": args.seed,
                    "threads": args.threads,
                    "host_allocator": args.host_allocator,
                    "steps": args.steps,
                    "warmup": args.warmup,
                }
            )
    return out


def skip_reason(cfg: dict[str, Any]) -> str | None:
    if cfg["task"] not in ("pretrain", "encode"):
        return f"unknown task {cfg['task']!r}"
    if cfg["preset"] not in DEFAULT_BATCH:
        return f"unknown preset {cfg['preset']!r}"
    if cfg["provider"] not in ("fusmae", "plain"):
        return f"unknown provider {cfg['provider']!r}"
    if cfg["kernels"] not in ("torch", "triton", "-"):
        return f"unknown kernels {cfg['kernels']!r}"
    if cfg["precision"] not in ("fp32", "bf16"):
        return f"unknown precision {cfg['precision']!r}"
    if cfg["masking"] not in ("consistent", "independent"):
        return f"unknown masking {cfg['masking']!r}"
    if cfg["kernels"] == "triton" and cfg["device"] != "cuda":
        return "kernels=triton needs CUDA (Triton's CPU interpreter is a test tool, not a timing)"
    import torch

    from fusmae_fast.device import emulated_precision

    emulated = emulated_precision(cfg["precision"], torch.device(cfg["device"]))
    if emulated:
        return f"{emulated} (a timing of the emulation, not of this library)"
    return None


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh Python process; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"worker timed out after {WORKER_TIMEOUT_S} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"status": "error", "reason": f"worker exit {proc.returncode}: {' | '.join(tail)[:400]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        from fusmae_fast.bench import devices

        cfg = json.loads(args.worker)
        devices.apply_host_allocator(cfg.get("host_allocator", "keep"))
        try:
            workers = {"profile": profile_pair, "count": count_worker}
            res = workers.get(cfg.get("mode"), run_worker)(cfg)
        except Exception as exc:  # reported by the parent as an error row
            import traceback

            traceback.print_exc()
            res = {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:400]}"}
        print(json.dumps(res))
        return 0
    if args.recount:
        return recount(Path(args.recount))

    import torch

    from fusmae_fast.bench import devices, gemm_peak, report

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = devices.pin_threads(args.threads)
    info = devices.run_info(device, threads)
    info["host_allocator"] = devices.apply_host_allocator(args.host_allocator)
    cfgs = configs(args, device.type)
    print(
        f"# step benchmark on {info['device_name']} ({device.type}), torch {info['torch']}, threads "
        f"{threads['intra_op']}, load {info['loadavg_start']}: {len(cfgs)} configurations"
    )
    if args.quick:
        print("# --quick: tiny B=16 and small B=8 only (no base), fp32, eager, 6 timed steps")
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    precisions = _items(args.precision)
    peaks_before = gemm_peak.measure_peaks(device, precisions)
    print(f"# GEMM peak: {_peaks_text(peaks_before)}")
    results: list[list[dict[str, Any]]] = [[] for _ in cfgs]
    for rnd in range(args.rounds):
        if args.rounds > 1:
            print(f"# round {rnd + 1}/{args.rounds}")
        for i, cfg in devices.round_order(list(enumerate(cfgs)), rnd):
            reason = skip_reason(cfg)
            if reason:
                if rnd == 0:
                    print(f"SKIP  {_name(cfg)}: {reason}")
                results[i].append({"status": "skipped", "reason": reason})
                continue
            res = run_config(cfg)
            results[i].append(res)
            if res["status"] == "ok":
                what = "loss" if cfg["task"] == "pretrain" else "|cls|"
                print(
                    f"{_name(cfg)}: {res['ms_p50']:.1f} ms [{res['ms_p20']:.1f}, {res['ms_p80']:.1f}] "
                    f"{res['images_per_s']:.1f} images/s, peak {res['peak_mem_mb']:.0f} MB, "
                    f"{what} {res['loss_first']:.4f} -> {res['loss_last']:.4f}"
                )
            else:
                print(f"ERROR {_name(cfg)}: {res['reason']}")
    peaks = gemm_peak.merge_peaks(peaks_before, gemm_peak.measure_peaks(device, precisions))
    print(f"# GEMM peak kept: {_peaks_text(peaks)}")
    for cfg, runs in zip(cfgs, results, strict=True):
        row = {k: cfg[k] for k in ROW_KEYS}
        ok = [r for r in runs if r["status"] == "ok"]
        best = min(ok, key=lambda r: r["ms_p50"]) if ok else runs[-1]
        row.update(best)
        if ok:
            row["rounds_ms_p50"] = [r["ms_p50"] for r in ok]
        rows.append(row)
    add_fractions(rows, peaks)
    profile_result: dict[str, Any] | None = None
    profile_error: str | None = None
    from fusmae_fast.device import emulated_precision

    emulated = args.profile and emulated_precision(args.profile_precision, device)
    if emulated:
        print(f"# profile at fp32, not {args.profile_precision}: {emulated}")
        args.profile_precision = "fp32"
    if args.profile:
        pcfg = {
            "mode": "profile",
            "preset": args.profile,
            "batch": args.batches[args.profile],
            "precision": args.profile_precision,
            "variant": args.variant,
            "masking": _items(args.masking)[0],
            "device": device.type,
            "seed": args.seed,
            "threads": args.threads,
            "host_allocator": args.host_allocator,
        }
        print(f"# profiling {args.profile} (both providers, interleaved, torch.profiler)")
        prof = run_config(pcfg)
        if prof.get("status") == "error":
            print(f"ERROR profile: {prof['reason']}")
            profile_error = prof["reason"]
        else:
            names = {"fusmae": "fusmae (torch)", "plain": "plain"}
            profile_result = {
                "precision": args.profile_precision,
                "peak_gflops": peaks.get(args.profile_precision, {}).get("peak_gflops"),
                "what": f"{args.profile}, batch {pcfg['batch']}, {args.profile_precision}, eager, "
                f"{args.variant}/{pcfg['masking']}, one step of each provider in turn",
                "providers": {names[k]: v for k, v in prof.items()},
                "regions": {names[k]: v["regions"] for k, v in prof.items()},
            }
    result: dict[str, Any] = {
        "benchmark": "step",
        "quick": args.quick,
        "info": info,
        "settings": {
            "tasks": args.tasks,
            "presets": args.presets,
            "batches": args.batches,
            "precision": args.precision,
            "compile": args.compile,
            "variant": args.variant,
            "masking": args.masking,
            "steps": args.steps,
            "warmup": args.warmup,
            "seed": args.seed,
            "rounds": args.rounds,
            "optimizer": "fusmae_fast.optim.adamw (fused AdamW) lr 1.5e-4 betas (0.9, 0.95) wd 0.05",
            "memory_method": next((r["mem_method"] for r in rows if r.get("mem_method")), None),
            "inputs": "random normal images (normalised bands), 120x120, generated once",
        },
        "peaks": peaks,
        "rows": rows,
    }
    if profile_result is not None:
        result["profile"] = profile_result
    if profile_error is not None:
        result["profile_error"] = profile_error
    suffix = "_quick" if args.quick else ""
    devices.finish_run(result, t_start, args.out_dir, device, report.step_markdown, suffix)
    return 0 if all(r["status"] != "error" for r in rows) else 1


def _peaks_text(peaks: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{k} {v['peak_gflops']:.0f} GFLOP/s" for k, v in peaks.items())


def add_fractions(rows: list[dict[str, Any]], peaks: dict[str, dict[str, Any]]) -> None:
    """``fraction_of_peak`` of every measured row. FLOPs are counted in eager workers only (the counter
    does not see inside a compiled graph); a compiled row does the same work as its eager twin, so it
    takes the twin's count."""
    from fusmae_fast.bench import gemm_peak

    key = ("task", "preset", "provider", "kernels", "precision", "batch", "variant", "masking")
    counted = {tuple(r[k] for k in key): r.get("gflop_per_image") for r in rows if not r["compile"]}
    for r in rows:
        if r.get("status") != "ok":
            continue
        gflop = r.get("gflop_per_image") or counted.get(tuple(r[k] for k in key))
        peak = peaks.get(r["precision"], {}).get("peak_gflops")
        r["fraction_of_peak"] = gemm_peak.fraction_of_peak(gflop, r["images_per_s"], peak)
        adjacent = gemm_peak.fraction_of_adjacent_peak(
            gflop and gflop * r["batch"],
            r.get("step_ms_in_order") or [],
            r.get("adjacent_peaks_gflops") or [],
        )
        if adjacent is not None:
            r["fraction_of_adjacent_peak"] = adjacent


def _name(row: dict[str, Any]) -> str:
    kern = f" kernels={row['kernels']}" if row["provider"] == "fusmae" else ""
    return (
        f"{row['task']:<8} {row['preset']:<5} {row['provider']:<6}{kern} {row['precision']} compile="
        f"{'on' if row['compile'] else 'off'} B={row['batch']}"
    )


if __name__ == "__main__":
    sys.exit(main())
