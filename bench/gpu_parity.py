"""Parity of every Triton op, forward and every gradient, against the float64 reference on one device.

The cases ``bench/gpu_check.py`` runs in its parity section: each op's Triton entry (``*_triton``)
against its pure-torch ``*_ref`` evaluated in float64, with the tolerance rule of the parity tests
(``ErrorReport.check``: fp32 a fixed (atol, rtol); fp16 / bf16 the flash-attention rule, the kernel's
error vs fp64 at most 2 x (outputs) or 3 x (gradients) the error of the torch path on the same
low-precision inputs + a small atol). Gather and scatter forwards and their copied gradients must be
bit-exact with the torch path in the same dtype, as in tests/parity.

Shapes come in two sizes: ``gpu`` (what a GPU runs: odd lengths, the decoder's L = 450, L = 1024,
head dims 40 / 64 / 128, the model's widths 256 and 768) and ``rehearse`` (tiny, for Triton's CPU
interpreter). Every attention launch carries ragged splits per sample including 0 and L; every
patch-embed, loss and token launch mixes a sample with nothing masked and one with everything masked.

A mismatch never raises: each check becomes a record (op, case, output, dtype, errors, ok, message).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fusmae_fast.bench import worker_pool
from fusmae_fast.kernels import config_sweep, parity_rule
from fusmae_fast.kernels.config_sweep import SweepLaunch


@dataclass
class Check:
    """One checked tensor of one case."""

    op: str
    case: str
    output: str
    dtype: str
    err: float
    ok: bool
    message: str = ""


def _seed(text: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(text.encode()))


def _grads(fn: Callable, leaves: list[torch.Tensor | None], extra: tuple, dout: torch.Tensor, order=None):
    """fn's output and the gradient of every non-None leaf for upstream ``dout``."""
    live = [t.detach().clone().requires_grad_(True) if t is not None else None for t in leaves]
    args = list(live) if order is None else order(live)
    out = fn(*args, *extra)
    wanted = [t for t in live if t is not None]
    grads = torch.autograd.grad(out, wanted, dout, allow_unused=True, materialize_grads=True)
    return [out.detach(), *grads]


def _three_ways(tri_fn, ref_fn, leaves64, extra, dout64, dtype):
    """(Triton in ``dtype``, reference in float64, reference in ``dtype``) outputs and gradients; the
    third is needed by the low-precision rule only, so float32 reuses the float64 result."""
    leaves = [t.to(dtype) for t in leaves64]
    tri = _grads(tri_fn, leaves, extra, dout64.to(dtype))
    ref = _grads(ref_fn, leaves64, extra, dout64)
    low = ref if dtype == torch.float32 else _grads(ref_fn, leaves, extra, dout64.to(dtype))
    return tri, ref, low


class Checker:
    """Applies the parity tests' rule and turns each outcome into a ``Check`` record."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.report = parity_rule.ErrorReport("gpu_check parity max |error| vs float64 reference:")
        self.max_abs_error = parity_rule.max_abs_error
        self.records: list[Check] = []

    def rule(self, op, case, name, got, ref64, low, dtype, *, factor: float, atol: float | None = None):
        """``ErrorReport.check`` for one tensor, recorded instead of raised."""
        err = self.max_abs_error(got, ref64)
        ok, message = True, ""
        try:
            if not torch.isfinite(got).all():
                raise AssertionError(f"{case} {name}: non-finite values")
            kw = {} if atol is None else {"atol": atol}
            self.report.check(name, got, ref64, low, dtype, case, factor=factor, **kw)
        except AssertionError as exc:
            ok, message = False, str(exc)
        self.records.append(Check(op, case, name, str(dtype)[6:], err, ok, message))

    def exact(self, op, case, name, got, want, dtype) -> None:
        """Bit-exact with the torch path in the same dtype (copies and one rounded add)."""
        ok = got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
        err = self.max_abs_error(got, want) if got.shape == want.shape else float("inf")
        msg = "" if ok else f"{case} {name}: not bit-exact with the torch path (max err {err:.3e})"
        self.records.append(Check(op, case, name, str(dtype)[6:], err, ok, msg))

    def error(self, op, case, dtype, exc: Exception) -> None:
        msg = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.records.append(Check(op, case, "launch", str(dtype)[6:], float("inf"), False, msg))

    def outcomes(self, op, case, names, tri, ref, low, dtype, factors) -> None:
        for name, t, r, lo, f in zip(names, tri, ref, low, factors, strict=True):
            self.rule(op, case, name, t, r, lo, dtype, factor=f)


# ---------------------------------------------------------------------------------------------- cases


def attention_cases(size: str) -> list[tuple[int, int, int]]:
    """(L, H, D) of the attention launches; each runs B = 3 with splits [0, L, random] and then
    [1, L // 2, L - 1]."""
    if size == "gpu":
        return [(113, 3, 40), (450, 2, 64), (1024, 2, 128), (77, 1, 80)]
    return [(7, 1, 16), (33, 2, 40)]


def check_attention(ck: Checker, L: int, H: int, D: int, dtype: torch.dtype) -> None:
    from fusmae_fast.kernels.cross_modal_attention import (
        cross_modal_attention_ref,
        cross_modal_attention_triton,
    )

    dev = ck.device
    for kinds in ("0,L,rand", "1,half,L-1"):
        case = f"L{L}-H{H}-D{D}-splits[{kinds}]-{str(dtype)[6:]}"
        gen = _seed(case)
        q, k, v, do = (torch.randn(3, L, H, D, generator=gen, dtype=torch.float64) for _ in range(4))
        rand = int(torch.randint(0, L + 1, (1,), generator=gen))
        table = {"0": 0, "L": L, "rand": rand, "1": min(1, L), "half": L // 2, "L-1": max(L - 1, 0)}
        split = torch.tensor([table[x] for x in kinds.split(",")], dtype=torch.int64, device=dev)
        leaves64 = [t.to(dev) for t in (q, k, v)]
        try:
            tri, ref, low = _three_ways(
                cross_modal_attention_triton, cross_modal_attention_ref, leaves64, (split,), do.to(dev), dtype
            )
        except Exception as exc:  # a launch that fails is a failed case, not a crash of the check
            ck.error("cross_modal_attention", case, dtype, exc)
            continue
        ck.outcomes(
            "cross_modal_attention", case, ("o", "dq", "dk", "dv"), tri, ref, low, dtype, (2, 3, 3, 3)
        )


def patch_embed_cases(size: str) -> list[tuple[int, int, int, int]]:
    """(image size, patch, C_in, embed width) of the masked patch embedding launches."""
    if size == "gpu":
        return [(120, 8, 12, 768), (120, 8, 2, 256), (64, 16, 2, 40)]
    return [(8, 4, 2, 40), (16, 8, 3, 24)]


def check_patch_embed(ck: Checker, hw: int, P: int, C_in: int, C: int, dtype: torch.dtype) -> None:
    from fusmae_fast.kernels.masked_patch_embed import masked_patch_embed_ref, masked_patch_embed_triton

    dev, N = ck.device, (hw // P) ** 2
    case = f"{hw}x{hw}-P{P}-Cin{C_in}-C{C}-keeps[N,N/4,0]-{str(dtype)[6:]}"
    gen = _seed(case)
    img = torch.randn(3, C_in, hw, hw, generator=gen, dtype=torch.float64)
    weight = torch.randn(C, C_in, P, P, generator=gen, dtype=torch.float64) / (C_in * P * P) ** 0.5
    bias = torch.randn(C, generator=gen, dtype=torch.float64)
    pos = torch.randn(N, C, generator=gen, dtype=torch.float64)
    rows = []
    for keep in (N, N // 4, 0):  # ragged per-modality keeps: kept patches at random slots, -1 elsewhere
        row = torch.full((N,), -1, dtype=torch.int64)
        row[torch.randperm(N, generator=gen)[:keep]] = torch.randperm(N, generator=gen)[:keep]
        rows.append(row)
    ids = torch.stack(rows).to(dev)
    dout = torch.randn(3, N, C, generator=gen, dtype=torch.float64)
    leaves64 = [t.to(dev) for t in (img, weight, bias, pos)]
    try:
        tri, ref, low = _three_ways(
            masked_patch_embed_triton, masked_patch_embed_ref, leaves64, (ids, P), dout.to(dev), dtype
        )
    except Exception as exc:
        ck.error("masked_patch_embed", case, dtype, exc)
        return
    names = ("out", "dimg", "dweight", "dbias", "dpos")
    ck.outcomes("masked_patch_embed", case, names, tri, ref, low, dtype, (2, 3, 3, 3, 3))


def token_cases(size: str) -> list[tuple[int, int, int]]:
    """(N, C, K) of the gather / scatter launches (K = 0 and K = N included)."""
    if size == "gpu":
        return [(225, 768, 56), (225, 256, 0), (450, 40, 450)]
    return [(16, 12, 4), (16, 40, 0), (9, 2, 9)]


def check_gather(ck: Checker, N: int, C: int, K: int, dtype: torch.dtype) -> None:
    from fusmae_fast.kernels.token_gather import gather_tokens_ref, gather_tokens_triton

    dev = ck.device
    case = f"N{N}-C{C}-K{K}-{str(dtype)[6:]}"
    gen = _seed(case)
    x, pos = torch.randn(3, N, C, generator=gen), torch.randn(N, C, generator=gen)
    ids = torch.stack([torch.randperm(N, generator=gen)[:K] for _ in range(3)]).to(dev)
    dout = torch.randn(3, K, C, generator=gen)
    x, pos, dout = (t.to(dev, dtype) for t in (x, pos, dout))
    try:
        tri = _grads(gather_tokens_triton, [x, pos], (), dout, order=lambda t: [t[0], ids, t[1]])
        same = _grads(gather_tokens_ref, [x, pos], (), dout, order=lambda t: [t[0], ids, t[1]])
        ref = _grads(
            gather_tokens_ref,
            [x.double(), pos.double()],
            (),
            dout.double(),
            order=lambda t: [t[0], ids, t[1]],
        )
    except Exception as exc:
        ck.error("gather_tokens", case, dtype, exc)
        return
    ck.exact("gather_tokens", case, "out", tri[0], same[0], dtype)
    ck.exact("gather_tokens", case, "dx", tri[1], same[1], dtype)
    ck.rule("gather_tokens", case, "dpos", tri[2], ref[2], same[2], dtype, factor=3.0)


def check_scatter(ck: Checker, N: int, C: int, K: int, dtype: torch.dtype) -> None:
    from fusmae_fast.kernels.token_scatter import scatter_tokens_ref, scatter_tokens_triton

    dev = ck.device
    case = f"N{N}-C{C}-K{K}-{str(dtype)[6:]}"
    gen = _seed(case)
    latent, mask_token = torch.randn(3, K, C, generator=gen), torch.randn(C, generator=gen)
    pos, dout = torch.randn(N, C, generator=gen), torch.randn(3, N, C, generator=gen)
    # MAE's ids_restore: argsort of a random shuffle; positions >= K are masked
    ids = torch.stack([torch.argsort(torch.randperm(N, generator=gen)) for _ in range(3)]).to(dev)
    latent, mask_token, pos, dout = (t.to(dev, dtype) for t in (latent, mask_token, pos, dout))

    def order(t):
        return [t[0], ids, t[1], t[2]]

    try:
        tri = _grads(scatter_tokens_triton, [latent, mask_token, pos], (), dout, order=order)
        same = _grads(scatter_tokens_ref, [latent, mask_token, pos], (), dout, order=order)
        leaves64 = [latent.double(), mask_token.double(), pos.double()]
        ref = _grads(scatter_tokens_ref, leaves64, (), dout.double(), order=order)
    except Exception as exc:
        ck.error("scatter_tokens", case, dtype, exc)
        return
    ck.exact("scatter_tokens", case, "out", tri[0], same[0], dtype)
    ck.exact("scatter_tokens", case, "dlatent", tri[1], same[1], dtype)
    ck.rule("scatter_tokens", case, "dmask_token", tri[2], ref[2], same[2], dtype, factor=3.0)
    ck.rule("scatter_tokens", case, "dpos", tri[3], ref[3], same[3], dtype, factor=3.0)


def loss_cases(size: str) -> list[tuple[int, int, int, bool]]:
    """(image size, patch, C_in, norm_pix) of the masked loss launches."""
    if size == "gpu":
        return [(120, 8, 12, True), (120, 8, 2, False), (64, 16, 12, True)]
    return [(8, 4, 2, True), (8, 4, 3, False)]


def check_loss(ck: Checker, hw: int, P: int, C_in: int, norm_pix: bool, dtype: torch.dtype) -> None:
    from fusmae_fast.kernels.masked_loss import masked_mse_ref, masked_mse_triton

    dev, N = ck.device, (hw // P) ** 2
    case = f"{hw}x{hw}-P{P}-Cin{C_in}-norm{int(norm_pix)}-ratios[0,0.75,1]-{str(dtype)[6:]}"
    gen = _seed(case)
    img = torch.randn(3, C_in, hw, hw, generator=gen, dtype=torch.float64) * 3.0 + 1.0
    pred = torch.randn(3, N, P * P * C_in, generator=gen, dtype=torch.float64)
    mask = torch.zeros(3, N, dtype=torch.bool)
    for b, ratio in enumerate((0.0, 0.75, 1.0)):
        mask[b, torch.randperm(N, generator=gen)[: int(round(N * ratio))]] = True
    mask = mask.to(dev)
    # upstream gradient D * (masked patches) / 2, so that d pred is O(1) (as in the parity tests)
    upstream = torch.tensor(P * P * C_in * max(float(mask.sum()), 1.0) / 2.0, dtype=torch.float64, device=dev)
    leaves64 = [pred.to(dev), img.to(dev)]
    try:
        tri, ref, low = _three_ways(
            masked_mse_triton, masked_mse_ref, leaves64, (mask, P, norm_pix), upstream, dtype
        )
    except Exception as exc:
        ck.error("masked_mse", case, dtype, exc)
        return
    ck.rule("masked_mse", case, "loss", tri[0], ref[0], low[0], dtype, factor=2.0, atol=parity_rule.LOSS_ATOL)
    for name, t, r, lo in zip(("dpred", "dimg"), tri[1:], ref[1:], low[1:], strict=True):
        ck.rule("masked_mse", case, name, t, r, lo, dtype, factor=3.0)


@dataclass(frozen=True)
class OpLaunch:
    """One op-case launch of the parity section, named by plain values (picklable: a worker process
    runs it on its own)."""

    op: str
    dtype: str
    """The float inputs' dtype: fp32, fp16 or bf16."""
    shape: tuple


_CASES: dict[str, tuple[Callable[[str], list[tuple]], Callable[..., None]]] = {
    "cross_modal_attention": (attention_cases, check_attention),
    "masked_patch_embed": (patch_embed_cases, check_patch_embed),
    "gather_tokens": (token_cases, check_gather),
    "scatter_tokens": (token_cases, check_scatter),
    "masked_mse": (loss_cases, check_loss),
}
"""Op -> (its shapes for a size, its check)."""

DTYPES = config_sweep.DTYPES
"""A launch's dtype name -> the torch dtype (config_sweep's)."""


def plan(size: str, dtypes: list[torch.dtype]) -> list[OpLaunch]:
    """Every op-case launch of the parity section, in run order: dtype-major, so that a time box cut
    of a serial run leaves whole dtypes checked."""
    launches = []
    for dtype in dtypes:
        name = config_sweep.DTYPE_NAMES[dtype]
        for op, (shapes, _) in _CASES.items():
            launches += [OpLaunch(op, name, tuple(shape)) for shape in shapes(size)]
    return launches


def sweep_size(size: str) -> str:
    """config_sweep's size for a parity size."""
    return "gpu" if size == "gpu" else "interpreter"


def sweep_per_kernel(size: str) -> int | None:
    """How many configs of each kernel the sweep launches: all on a GPU; one in a rehearsal, which
    proves the sweep's path runs (tests/parity/test_every_config.py launches every config in the
    interpreter already)."""
    return None if size == "gpu" else 1


def units(size: str, dtypes: list[torch.dtype], sweep: list[torch.dtype]) -> list[OpLaunch | SweepLaunch]:
    """The parity run's launches: the op cases of ``plan(size, dtypes)``, then every kept config of
    every autotuned kernel in the dtypes ``sweep`` (one ``config_sweep.SweepLaunch`` each)."""
    return [
        *plan(size, dtypes),
        *config_sweep.sweep_launches(sweep_size(size), sweep, per_kernel=sweep_per_kernel(size)),
    ]


def count_launches(size: str, dtypes: list[torch.dtype], sweep: list[torch.dtype]) -> tuple[int, int]:
    """(op-case launches in ``dtypes``, every-config launches in ``sweep``) of a parity run; the second
    is also the number of cold compiles the sweep causes (one per kernel, config, dtype and
    specialised size)."""
    return len(plan(size, dtypes)), len(units(size, [], sweep))


def run_unit(ck: Checker, unit: OpLaunch | SweepLaunch) -> None:
    """Run one launch and record its checks in ``ck``; a launch that raises is a failed check."""
    if isinstance(unit, OpLaunch):
        _CASES[unit.op][1](ck, *unit.shape, DTYPES[unit.dtype])
        return
    try:
        run = config_sweep.run_launch(ck.device, unit)
    except Exception as exc:  # reported as a failed launch; the other launches go on
        ck.error(unit.op, _unit_label(unit)[1], DTYPES[unit.dtype], exc)
        return
    for name, got, ref64, low, factor in run.outputs:
        ck.rule(run.op, run.tag, f"{run.kernel} {name}", got, ref64, low, run.dtype, factor=factor)


_WORKER_DEVICE: list[torch.device] = []


def _start_worker(device: str) -> None:
    """A worker process's set-up: the device its launches use."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    _WORKER_DEVICE[:] = [dev]


def _unit_in_worker(unit: OpLaunch | SweepLaunch) -> tuple[list[dict], dict[str, float]]:
    ck = Checker(_WORKER_DEVICE[0])
    run_unit(ck, unit)
    if ck.device.type == "cuda":
        try:
            torch.cuda.synchronize(ck.device)
        except RuntimeError as exc:  # a sticky error (e.g. an illegal address): later launches would fail
            raise worker_pool.WorkerBroken(f"CUDA context lost after this launch: {exc}") from exc
    return [asdict(r) for r in ck.records], ck.report.max_err


def _unit_label(unit: OpLaunch | SweepLaunch) -> tuple[str, str, str]:
    """(op, case, dtype) naming a launch in a failure record."""
    dtype = str(DTYPES[unit.dtype])[6:]  # as Checker's records name it
    if isinstance(unit, OpLaunch):
        return unit.op, f"{unit.op} {unit.shape}", dtype
    return unit.op, f"{unit.kernel} {unit.config} {unit.shape}", dtype


def run_parity(
    device: torch.device,
    size: str,
    dtypes: list[torch.dtype],
    sweep: list[torch.dtype],
    deadline: float,
    *,
    workers: int = 1,
    on_done: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Every launch of ``units(size, dtypes, sweep)`` until done or ``deadline`` (time.monotonic()):
    in this process one after the other (``workers=1``), or spread over ``workers`` spawned processes
    (``worker_pool``: the Triton compiles run side by side; a worker that dies fails its launch
    only). Records come back in the units' order either way. A summary."""
    todo = units(size, dtypes, sweep)
    per_unit: dict[int, list[dict]] = {}
    max_err: dict[str, float] = {}
    start_errors: list[str] = []
    if workers <= 1:
        ck = Checker(device)
        for i, unit in enumerate(todo):
            if time.monotonic() > deadline:
                break
            n = len(ck.records)
            run_unit(ck, unit)
            per_unit[i] = [asdict(r) for r in ck.records[n:]]
            if on_done is not None:
                on_done(len(per_unit), len(todo))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        max_err = ck.report.max_err
    else:
        out = worker_pool.run_units(
            _unit_in_worker,
            todo,
            workers=workers,
            deadline=deadline,
            initializer=_start_worker,
            initargs=(str(device),),
            on_done=on_done,
        )
        for i, (records, errs) in out.results.items():
            per_unit[i] = records
            for key, err in errs.items():
                max_err[key] = max(max_err.get(key, 0.0), err)
        for i, message in out.errors.items():
            op, case, dtype = _unit_label(todo[i])
            per_unit[i] = [asdict(Check(op, case, "launch", dtype, float("inf"), False, message))]
        start_errors = out.start_errors
    records = [r for i in sorted(per_unit) for r in per_unit[i]]
    n_ops, n_sweep = count_launches(size, dtypes, sweep)
    done_ops = sum(1 for i in per_unit if i < n_ops)
    return {
        "launches_planned": n_ops + n_sweep,
        "launches_run": len(per_unit),
        "op_launches": [done_ops, n_ops],
        "config_launches": [len(per_unit) - done_ops, n_sweep],
        "workers": workers,
        "worker_start_errors": start_errors,
        "checks": len(records),
        "failed": [r for r in records if not r["ok"]],
        "records": records,
        "max_err": dict(sorted(max_err.items())),
    }
