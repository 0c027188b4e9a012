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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fusmae_fast.kernels import config_sweep, parity_rule

LOSS_ATOL = 1e-6
"""atol of the loss value itself in fp32 (tests/parity/test_masked_loss.py's LOSS_ATOL)."""


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
    ck.rule("masked_mse", case, "loss", tri[0], ref[0], low[0], dtype, factor=2.0, atol=LOSS_ATOL)
    for name, t, r, lo in zip(("dpred", "dimg"), tri[1:], ref[1:], low[1:], strict=True):
        ck.rule("masked_mse", case, name, t, r, lo, dtype, factor=3.0)


def plan(size: str, dtypes: list[torch.dtype]) -> Iterator[tuple[str, Callable[[Checker], None]]]:
    """Every (op, launch) of the parity section, in run order: dtype-major, so that a time box cut
    leaves whole dtypes checked."""
    for dtype in dtypes:
        for shape in attention_cases(size):
            yield "cross_modal_attention", lambda ck, s=shape, d=dtype: check_attention(ck, *s, d)
        for shape in patch_embed_cases(size):
            yield "masked_patch_embed", lambda ck, s=shape, d=dtype: check_patch_embed(ck, *s, d)
        for shape in token_cases(size):
            yield "gather_tokens", lambda ck, s=shape, d=dtype: check_gather(ck, *s, d)
            yield "scatter_tokens", lambda ck, s=shape, d=dtype: check_scatter(ck, *s, d)
        for shape in loss_cases(size):
            yield "masked_mse", lambda ck, s=shape, d=dtype: check_loss(ck, *s, d)


def sweep_size(size: str) -> str:
    """config_sweep's size for a parity size."""
    return "gpu" if size == "gpu" else "interpreter"


def sweep_per_kernel(size: str) -> int | None:
    """How many configs of each kernel the sweep launches: all on a GPU; one in a rehearsal, which
    proves the sweep's path runs (tests/parity/test_every_config.py launches every config in the
    interpreter already)."""
    return None if size == "gpu" else 1


def count_launches(size: str, dtypes: list[torch.dtype], sweep: list[torch.dtype]) -> tuple[int, int]:
    """(op-case launches in ``dtypes``, every-config launches in ``sweep``) of a parity run; the second
    is also the number of cold compiles the sweep causes (one per kernel, config, dtype and
    specialised size)."""
    n_sweep = config_sweep.count_runs(sweep_size(size), sweep, per_kernel=sweep_per_kernel(size))
    return sum(1 for _ in plan(size, dtypes)), n_sweep


def check_sweep(ck: Checker, run: config_sweep.ConfigRun) -> None:
    """The rule on every output of one explicit config launch."""
    for name, got, ref64, low, factor in run.outputs:
        ck.rule(run.op, run.tag, f"{run.kernel} {name}", got, ref64, low, run.dtype, factor=factor)


def run_parity(
    device: torch.device, size: str, dtypes: list[torch.dtype], sweep: list[torch.dtype], deadline: float
) -> dict[str, Any]:
    """The op cases of ``plan(size, dtypes)``, then every kept config of every autotuned kernel in the
    dtypes ``sweep`` (``config_sweep.every_config_runs``), until done or ``deadline``
    (time.monotonic()): a summary."""
    ck = Checker(device)
    launches = list(plan(size, dtypes))
    n_ops, n_sweep = count_launches(size, dtypes, sweep)
    done = swept = 0
    for _, run in launches:
        if time.monotonic() > deadline:
            break
        run(ck)
        done += 1
    for dtype in sweep:  # one generator per (dtype, op): a launch that raises ends only its own
        for op in config_sweep.OPS:
            runs = config_sweep.every_config_runs(
                device, size=sweep_size(size), dtypes=(dtype,), ops=(op,), per_kernel=sweep_per_kernel(size)
            )
            while time.monotonic() <= deadline:
                try:
                    run = next(runs)
                except StopIteration:
                    break
                except Exception as exc:  # reported as a failed launch; the op's other configs are lost
                    ck.error(op, f"config sweep after {swept} launches", dtype, exc)
                    break
                check_sweep(ck, run)
                swept += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    failed = [asdict(r) for r in ck.records if not r.ok]
    return {
        "launches_planned": n_ops + n_sweep,
        "launches_run": done + swept,
        "op_launches": [done, n_ops],
        "config_launches": [swept, n_sweep],
        "checks": len(ck.records),
        "failed": failed,
        "records": [asdict(r) for r in ck.records],
        "max_err": dict(sorted(ck.report.max_err.items())),
    }
