"""Benchmark of the Eq. 2 op (two-way cross-modal attention): forward, backward, forward+backward.

Usage
    python bench/xattn.py                 # full matrix on this device
    python bench/xattn.py --quick         # small matrix (see QUICK)
    python bench/xattn.py --interpret     # CPU: also run our Triton kernel in Triton's interpreter

Cases
    Fus-MAE shapes: B in --batches (32, 200), H=12, D=64, L = tokens the presets keep at 75 % masking
    (every preset has 120 px images and 8 px patches: 2 x 225 patches -> L = 112); splits from the real
    masking code: consistent (split = L/2 in every sample) and independent (a random split per sample).
    Long-L sweep: L in --long-L (256 .. 4096), consistent split L/2, batch --long-batch.
Providers: see ``bench/xattn_providers.py``. Skips are printed with their reason and kept in the JSON.
Timing: CUDA ``triton.testing.do_bench`` (p20/p50/p80); CPU warm-up + one ``perf_counter`` sample per
call, percentiles of the samples, threads pinned (``--threads``) and reported.
Work: TFLOP/s counts only the useful 2*n1*n2 score entries per head (``cross_modal_attention_flops``;
backward = 2.5 x forward) whatever a provider really computes; GB/s divides the op's compulsory traffic
(``cross_modal_attention_bytes``: q, k, v, o (+ grads) once) by the time. On CUDA the roofline
fraction is max(flops / peak, bytes / bandwidth) / time for devices in ``devices.GPU_PEAKS``.
Every case starts with a correctness check of each provider (the samples with the smallest and the
largest split, one head, against an fp64 evaluation of the reference; gradients too for backward
modes); a provider that disagrees (or gives NaN) is flagged WRONG and the script exits non-zero.
Outputs: a table on stdout, ``bench/results/xattn_<device>[_quick].{json,md,png}``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

QUICK = {
    "batches": [32],
    "long_L": [256, 1024],
    "long_batch": 2,
    "reps": 10,
    "warmup": 2,
    "budget": 2.0,
    "rounds": 2,
}
"""--quick: B=32 only (no B=200), long-L sweep 256 and 1024 at B=2, 10 samples or 2 s per point,
two rounds (an explicit --reps, --warmup, --budget or --rounds wins)."""
DEFAULTS = {"reps": 30, "warmup": 3, "budget": 8.0, "rounds": 1}
"""Timing settings of a run without --quick, where the command line does not set them."""


TIMED_REGION = (
    "the provider call given (q, k, v, split): anything derived from split (masks, block masks, sample "
    "groups) is built inside; mask_ms_p50 times the mask alone for sdpa-mask and flex"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/xattn.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small matrix (see QUICK)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (comma list; default cuda fp16, cpu fp32)")
    p.add_argument("--providers", default=None, help="comma list (default: all)")
    p.add_argument("--modes", default="fwd,bwd,fwd+bwd")
    p.add_argument("--batches", default="32,200", help="batch sizes of the Fus-MAE shapes")
    p.add_argument("--maskings", default="consistent,independent")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--long-L", default="256,512,1024,2048,4096", help="long-L sweep ('' for none)")
    p.add_argument("--long-batch", type=int, default=None, help="batch of the sweep (cuda 32, cpu 2)")
    p.add_argument("--interpret", action="store_true", help="CPU: run fusmae-triton in the interpreter")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all)")
    p.add_argument("--reps", type=int, default=None, help="CPU: samples per point (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="CPU: untimed calls per point (default 3)")
    p.add_argument("--budget", type=float, default=None, help="CPU: seconds per point at most (default 8)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="time every point of a case this many times, in turn, keeping each point's fastest round "
        "(default 1, --quick 2): a burst of foreign load on a shared CPU then cannot decide a comparison",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="default bench/results")
    from fusmae_fast.bench import devices

    devices.add_host_allocator_argument(p)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if key == "batches":
                args.batches = ",".join(str(b) for b in value)
            elif key == "long_L":
                args.long_L = ",".join(str(v) for v in value)
            elif key == "long_batch" and args.long_batch is None:
                args.long_batch = value
            elif key in ("reps", "warmup", "budget", "rounds") and getattr(args, key) is None:
                setattr(args, key, value)  # what the command line says wins over --quick's value
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_cases(args: argparse.Namespace, long_batch: int) -> list[dict[str, Any]]:
    """Fus-MAE shapes (splits from the real masking code) and the long-L sweep."""
    import torch

    from fusmae_fast.config import ModelConfig
    from fusmae_fast.masking import random_masking

    cases: list[dict[str, Any]] = []
    lengths = sorted({ModelConfig.from_name(p).num_kept() for p in ("tiny", "small", "base")})
    n_patches = ModelConfig.from_name("base").num_patches
    gen = torch.Generator().manual_seed(args.seed)
    for b in _ints(args.batches):
        for length in lengths:
            for masking in [m for m in args.maskings.split(",") if m]:
                split = random_masking(b, n_patches, 0.75, masking, generator=gen).split
                if split.shape != (b,) or int(split.max()) > length:
                    raise RuntimeError("masking produced an unexpected split")
                name = f"B{b}-L{length}-{masking}"
                cases.append(dict(name=name, group="fusmae", B=b, L=length, masking=masking, split=split))
    for length in _ints(args.long_L):
        split = torch.full((long_batch,), length // 2, dtype=torch.int64)
        name = f"B{long_batch}-L{length}-consistent"
        cases.append(dict(name=name, group="long", B=long_batch, L=length, masking="consistent", split=split))
    return cases


class Runner:
    """Runs every (provider, mode) of one case: skip check, correctness check, timing, work rates."""

    TOL = {"fp32": 2e-4, "fp16": 2e-2, "bf16": 8e-2}

    def __init__(self, args: argparse.Namespace, device, peak, h: int, d: int) -> None:
        self.args, self.device, self.peak, self.h, self.d = args, device, peak, h, d
        self.rows: list[dict[str, Any]] = []
        self.skips: list[str] = []

    def run_case(
        self, case: dict[str, Any], dtype, dname: str, providers: list[str], modes: list[str]
    ) -> None:
        import torch

        from fusmae_fast.bench import devices
        from fusmae_fast.bench import xattn_providers as xp
        from fusmae_fast.cost_model import cross_modal_attention_bytes, cross_modal_attention_flops
        from fusmae_fast.kernels.cross_modal_attention import cross_modal_attention_ref

        b, length, h, d, device = case["B"], case["L"], self.h, self.d, self.device
        split = case["split"].to(device)
        torch.manual_seed(self.args.seed)
        q, k, v, do = (torch.randn(b, length, h, d, device=device, dtype=dtype) for _ in range(4))
        # fp64 evaluation of the reference on two samples (smallest and largest split: the edge cases)
        # and one head, for the correctness check
        picks = torch.stack([split.argmin(), split.argmax()])
        sl = (picks, slice(None), slice(0, 1))
        q1, k1, v1 = (t[sl].double().requires_grad_(True) for t in (q, k, v))
        o_ref = cross_modal_attention_ref(q1, k1, v1, split[picks])
        g_ref = torch.autograd.grad(o_ref, (q1, k1, v1), do[sl].double())
        flops = {
            "fwd": cross_modal_attention_flops(split, length, h, d),
            "bwd": cross_modal_attention_flops(split, length, h, d, backward=True),
        }
        flops["fwd+bwd"] = flops["fwd"] + flops["bwd"]
        traffic = {
            "fwd": cross_modal_attention_bytes(b, length, h, d, dtype),
            "bwd": cross_modal_attention_bytes(b, length, h, d, dtype, backward=True),
        }
        traffic["fwd+bwd"] = traffic["fwd"] + traffic["bwd"]
        free = devices.available_memory_bytes(device)
        runnable: list[dict[str, Any]] = []
        for provider in providers:
            for mode in modes:
                row: dict[str, Any] = dict(
                    case=case["name"],
                    group=case["group"],
                    B=b,
                    L=length,
                    H=h,
                    D=d,
                    masking=case["masking"],
                    dtype=dname,
                    provider=provider,
                    mode=mode,
                    useful_flops=flops[mode],
                    bytes=traffic[mode],
                    split_min=int(split.min()),
                    split_max=int(split.max()),
                )
                self.rows.append(row)
                reason = xp.skip_reason(
                    provider,
                    device,
                    dtype,
                    mode,
                    b=b,
                    length=length,
                    h=h,
                    d=d,
                    split=split,
                    interpret=self.args.interpret,
                    free_bytes=free,
                )
                if reason:
                    row.update(status="skipped", reason=reason)
                    self.skips.append(f"{case['name']} {dname} {provider} {mode}: {reason}")
                    print(f"SKIP  {case['name']:<24} {mode:<8} {provider:<16} {reason}")
                    continue
                try:
                    fn = xp.FUNCTIONS[provider]
                    self._check(row, fn, (q, k, v, do), split[picks], sl, o_ref, g_ref)
                    runnable.append(row)
                except Exception as exc:  # a provider that fails is reported, not hidden
                    self._fail(row, exc)
        # timing rounds: every point of the case once per round, in turn (devices.round_order); each
        # point keeps its fastest round
        for rnd in range(self.args.rounds):
            for row in devices.round_order(runnable, rnd):
                if row.get("status") == "error":
                    continue
                try:
                    self._time(row, xp, q, k, v, do, split)
                except Exception as exc:
                    self._fail(row, exc)
        for row in runnable:
            if row.get("status") == "ok":
                print(_line(row))

    def _fail(self, row: dict[str, Any], exc: Exception) -> None:
        row.update(status="error", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        print(f"ERROR {row['case']} {row['mode']} {row['provider']}: {row['reason']}")

    def _check(self, row, fn, tensors, split, sl, o_ref, g_ref) -> None:
        """Provider vs the fp64 reference on the picked samples (``split`` is theirs), one head."""
        import torch

        mode = row["mode"]
        qc, kc, vc = (t[sl].detach().clone().requires_grad_(mode != "fwd") for t in tensors[:3])
        oc = fn(qc, kc, vc, split)
        err = (oc.double() - o_ref).abs().max().nan_to_num(nan=float("inf")).item()
        if mode != "fwd":
            grads = torch.autograd.grad(oc, (qc, kc, vc), tensors[3][sl])
            errs = [
                (a.double() - r).abs().max().nan_to_num(nan=float("inf")).item()
                for a, r in zip(grads, g_ref, strict=True)
            ]
            err = max([err, *errs])
        row["check_max_abs_err"] = err
        row["check_ok"] = bool(err <= self.TOL[row["dtype"]])

    def _time(self, row, xp, q, k, v, do, split) -> None:
        from fusmae_fast import form_timing
        from fusmae_fast.bench.timing import measure

        args, device, provider, mode = self.args, self.device, row["provider"], row["mode"]
        call = _make_call(xp.FUNCTIONS[provider], mode, q, k, v, do, split)
        interp = provider == "fusmae-triton" and device.type == "cpu"
        recorded = form_timing.picks()
        if interp:
            timing = measure(call, device, warmup=0, reps=1, min_reps=1, budget_s=0)
        else:
            timing = measure(call, device, warmup=args.warmup, reps=args.reps, budget_s=args.budget)
        timed = {key: name for key, name in form_timing.picks().items() if key not in recorded}
        if timed:  # the forms our torch path timed on its first (warm-up) call of this point
            row["forms_timed"] = sorted(f"{key[0]}: {name}" for key, name in timed.items())
        row.setdefault("rounds_ms_p50", []).append(timing.p50)
        if "ms_p50" in row and row["ms_p50"] <= timing.p50:
            return  # an earlier round was faster (less disturbed): keep it
        row.update(
            status="ok",
            ms_p20=timing.p20,
            ms_p50=timing.p50,
            ms_p80=timing.p80,
            samples=timing.samples,
            timer=timing.method,
        )
        if interp:
            row["label"] = "interpreter, not a timing"
        else:
            sec = timing.p50 / 1e3
            row["tflops"] = row["useful_flops"] / sec / 1e12
            row["gbs"] = row["bytes"] / sec / 1e9
            if self.peak is not None:
                dtype = q.dtype
                t_roof = max(
                    row["useful_flops"] / self.peak.peak_flops(dtype),
                    row["bytes"] / (self.peak.hbm_gbs * 1e9),
                )
                row["roofline_frac"] = t_roof / sec
        builder = xp.mask_builder(provider)
        if builder is not None and mode == "fwd" and not interp:
            mt = measure(
                functools.partial(builder, split, row["L"]),
                device,
                warmup=args.warmup,
                reps=args.reps,
                budget_s=min(args.budget, 2.0),
            )
            row["mask_ms_p50"] = mt.p50


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.interpret:
        # must be set before any @triton.jit kernel is imported (fusmae_fast.ops imports the kernels)
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from fusmae_fast.bench import devices, report
    from fusmae_fast.bench import xattn_providers as xp

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    if args.interpret and device.type == "cuda":
        raise SystemExit("--interpret is for CPU runs (on CUDA the Triton kernel runs for real)")
    threads = devices.pin_threads(args.threads)
    info = devices.run_info(device, threads)
    info["host_allocator"] = devices.apply_host_allocator(args.host_allocator)
    dtypes_arg = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype_map = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dnames = [x for x in dtypes_arg.split(",") if x]
    if any(x not in dtype_map for x in dnames):
        raise SystemExit(f"unknown dtype in {dnames}; choose from {sorted(dtype_map)}")
    providers = args.providers.split(",") if args.providers else list(xp.PROVIDERS)
    if any(p not in xp.PROVIDERS for p in providers):
        raise SystemExit(f"unknown provider in {providers}; choose from {xp.PROVIDERS}")
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in xp.MODES for m in modes):
        raise SystemExit(f"--modes must be from {xp.MODES}")
    long_batch = args.long_batch or (32 if device.type == "cuda" else 2)
    peak = devices.gpu_peak(info["device_name"]) if device.type == "cuda" else None
    cases = build_cases(args, long_batch)
    h, d = args.heads, args.head_dim
    print(
        f"# xattn benchmark on {info['device_name']} ({device.type}), torch {info['torch']}, "
        f"triton {info['triton']}, threads {threads['intra_op']}, load {info['loadavg_start']}"
    )
    if args.quick:
        print(
            "# --quick: B=32 only (B=200 not run), long-L sweep 256 and 1024 at B=2, short timings, 2 rounds"
        )
    if device.type == "cuda" and peak is None:
        print(f"# no peak figures for {info['device_name']}: no roofline fraction is reported")
    runner = Runner(args, device, peak, h, d)
    t_start = time.perf_counter()
    for dname in dnames:
        for case in cases:
            runner.run_case(case, dtype_map[dname], dname, providers, modes)
    result = {
        "benchmark": "xattn",
        "quick": args.quick,
        "info": info,
        "settings": {
            "heads": h,
            "head_dim": d,
            "batches": _ints(args.batches),
            "long_L": _ints(args.long_L),
            "long_batch": long_batch,
            "reps": args.reps,
            "warmup": args.warmup,
            "budget_s": args.budget,
            "rounds": args.rounds,
            "seed": args.seed,
            "providers": providers,
            "modes": modes,
            "dtypes": dnames,
            "timed_region": TIMED_REGION,
        },
        "rows": runner.rows,
        "skips": runner.skips,
    }
    suffix = "_quick" if args.quick else ""
    base = devices.finish_run(result, t_start, args.out_dir, device, report.xattn_markdown, suffix)
    if not args.no_plot:
        xattn_plot(result, base.with_name(base.name + ".png"))
        print(f"wrote {base}.png")
    wrong = [r for r in runner.rows if r.get("check_ok") is False]
    for r in wrong:
        print(f"WRONG {r['case']} {r['mode']} {r['provider']}: max abs err {r['check_max_abs_err']:.3g}")
    return 1 if wrong else 0


def xattn_plot(result: dict[str, Any], path: Path) -> None:
    """p50 ms per provider: bars for the Fus-MAE shapes, lines over L for the long-L sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result["rows"] if r.get("status") == "ok" and "label" not in r]
    modes = list(dict.fromkeys(r["mode"] for r in result["rows"]))
    providers = list(dict.fromkeys(r["provider"] for r in ok))
    colors = {p: f"C{i}" for i, p in enumerate(providers)}
    fig, axes = plt.subplots(2, max(1, len(modes)), figsize=(5.2 * max(1, len(modes)), 8.5), squeeze=False)
    for j, mode in enumerate(modes):
        ax = axes[0][j]
        rows = [r for r in ok if r["group"] == "fusmae" and r["mode"] == mode]
        cases = list(dict.fromkeys(f"{r['case']}\n{r['dtype']}" for r in rows))
        width = 0.8 / max(1, len(providers))
        for i, prov in enumerate(providers):
            xs, ys, lo, hi = [], [], [], []
            for c, case in enumerate(cases):
                hit = [r for r in rows if r["provider"] == prov and f"{r['case']}\n{r['dtype']}" == case]
                if hit:
                    xs.append(c + i * width)
                    ys.append(hit[0]["ms_p50"])
                    lo.append(hit[0]["ms_p50"] - hit[0]["ms_p20"])
                    hi.append(hit[0]["ms_p80"] - hit[0]["ms_p50"])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=prov, color=colors[prov])
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, fontsize=7)
        ax.set_ylabel("ms (p50, bars p20-p80)")
        ax.set_title(f"Fus-MAE shapes, {mode}")
        ax.legend(fontsize=7)
        ax = axes[1][j]
        for prov in providers:
            pts = sorted(
                (r["L"], r["ms_p50"])
                for r in ok
                if r["group"] == "long" and r["mode"] == mode and r["provider"] == prov
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=prov, color=colors[prov])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L (split L/2)")
        ax.set_ylabel("ms (p50)")
        ax.set_title(f"long-L sweep, {mode}")
        if ax.lines:
            ax.legend(fontsize=7)
    info = result["info"]
    fig.suptitle(
        f"Eq. 2 cross-modal attention on {info['device_name']} — measured, {info['timestamp']}", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _make_call(fn, mode: str, q, k, v, do, split):
    """The timed callable of one (provider, mode): fwd without autograd, fwd+bwd, or bwd alone
    (backward of one retained forward graph, gradients returned, nothing accumulated)."""
    import torch

    if mode == "fwd":

        def call():
            with torch.no_grad():
                return fn(q, k, v, split)

        return call
    qx, kx, vx = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    if mode == "fwd+bwd":

        def call():
            o = fn(qx, kx, vx, split)
            return torch.autograd.grad(o, (qx, kx, vx), do)

        return call
    o_keep = fn(qx, kx, vx, split)

    def call():
        return torch.autograd.grad(o_keep, (qx, kx, vx), do, retain_graph=True)

    return call


def _line(row: dict[str, Any]) -> str:
    extra = row.get("label") or (
        f"{row['tflops']:.3f} TFLOP/s {row['gbs']:.1f} GB/s"
        + (f" roofline {row['roofline_frac']:.0%}" if "roofline_frac" in row else "")
    )
    check = "" if row.get("check_ok", True) else "  WRONG"
    forms = f"  timed: {', '.join(row['forms_timed'])}" if row.get("forms_timed") else ""
    return (
        f"{row['case']:<24} {row['mode']:<8} {row['provider']:<16} p50 {row['ms_p50']:9.3f} ms "
        f"[{row['ms_p20']:.3f}, {row['ms_p80']:.3f}]  {extra}{check}{forms}"
    )


if __name__ == "__main__":
    sys.exit(main())
