"""MAE's reconstruction loss on masked patches only, targets read straight from the image.

masked_mse
    pred (B, N, P*P*C_in) in MAE's patchify order (per patch: rows p, columns q, then channel c,
    ``nchpwq -> nhwpqc``); img (B, C_in, H, W); mask (B, N) float or bool, 1/True = masked.
    target = patchify(img); with norm_pix, each target patch is normalised to zero mean and unit
    variance (unbiased variance, eps 1e-6, as MAE). loss = sum over masked patches of the mean over
    the patch vector of (pred - target)^2, divided by the number of masked patches (0 if none).
    Computed and returned in fp32 whatever the input dtype (fp64 for an fp64 reference).
    (A float mask acts as a per-patch weight: loss = sum w * mse / max(sum w, 1), as the reference.)

The torch path
    ``kernels='torch'`` runs ``fusmae_fast.torch_ops.masked_mse_torch``: this reference's math in one
    autograd function with a hand-written backward; it falls back to ``masked_mse_ref`` when the image
    or mask needs a gradient.

The Triton path (``masked_mse_triton``)
    Forward: one launch, a program per BLOCK_M patches (rows b*N + n). A program loads the mask
    weights of its rows; for masked rows only it reads the target pixels straight from img (no
    patchify copy, no normalised-target tensor) and pred, holds each whole patch vector in registers
    (BLOCK_D = next power of two >= P*P*C_in), computes mean and unbiased variance exactly in two
    passes over registers, and the per-patch MSE in fp32. Visible patches cost only their mask load.
    Each program writes (sum of w * mse, sum of w) to an fp32 partial buffer; a one-program finish
    launch adds the partials in a fixed order and writes the loss and the weight sum (deterministic,
    no atomics, no host sync). One config per BLOCK_D (``rows_per_program``, ``num_warps``: tiles of
    up to 2048 elements, 8 per thread; the kernels have no loop to tune), so the partial layout depends on
    the shapes only. norm_pix and the wanted gradients are runtime flags (one compiled kernel each).
    Backward: one launch over all rows reads the saved weight sum and d loss from device memory and
    writes d pred = d loss * 2 w (pred - target_n) / (D * max(sum w, 1)) in pred's dtype, exact zeros
    on visible patches; when img needs a gradient (the model's images do not), d img through the
    per-patch normalisation, (1/s)(g - mean(g)) - (t - mu) sum(g (t - mu)) / ((D - 1) s^3) with
    s = sqrt(var + eps) and g = d loss/d target_n, is written for every pixel (zeros on visible
    patches): no memset. A float mask gets no gradient.
    Limits: P*P*C_in <= ``MAX_PATCH_ELEMENTS`` (4096: e.g. P = 16 with 16 channels) since a patch
    lives in registers; norm_pix needs P*P*C_in >= 2. dtypes: pred and img fp32 / fp16 / bf16, any mix
    (bf16 tested on CUDA only); mask bool, uint8 or float. Strides are passed explicitly (pred's
    last dim contiguous). Registered with ``torch.library`` (fake implementations, autograd), so
    ``torch.compile`` traces it without graph breaks.

Work and traffic (B, N patches, fraction m masked, D = P*P*C_in; e bytes per element)
    Triton forward: read m*B*N*D*(e_pred + e_img) + B*N mask bytes; ~8 FLOPs per masked element.
    Textbook MAE: patchify copy of the whole image (read + write B*N*D), mean/var/normalise passes over
    all B*N patches, (pred - target)^2 over all B*N*D elements, then the mask. The decoder's final
    projection can also run on the masked rows only (2*m*B*N*d_dec*D instead of 2*B*N*d_dec*D FLOPs)
    when only the loss is needed; bench/fusion_savings.py counts both.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .compile_spec import launch_spec, signature
from .triton_runtime import (
    TL_DTYPE_NAME,
    check_float,
    interpreting,
    last_dim_contiguous,
    launch_fixed,
    pow2_block,
)

EPS = 1.0e-6
"""The norm_pix variance epsilon (MAE's)."""


def check_norm_pix(norm_pix: bool, elements: int) -> None:
    """norm_pix's unbiased variance needs two elements per patch (both paths check it)."""
    if norm_pix and elements < 2:
        raise ValueError("norm_pix needs at least 2 elements per patch (unbiased variance)")


# ----------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------

MAX_PATCH_ELEMENTS = 4096
"""Largest P*P*C_in the register-resident kernels take."""
TILE_ELEMENTS = 2048
"""Elements (rows x BLOCK_D) one program holds per tile on a GPU."""
INTERPRETER_TILE_ELEMENTS = 16384
"""Under the interpreter (cost per operation, not per element) programs take bigger tiles."""
MAX_ROWS = 64
"""At most this many patches per program (keeps the per-row index math small)."""
ELEMENTS_PER_THREAD = 8
"""Tile elements per thread: the backward keeps about six fp32 tiles and the addresses live."""
FINISH_BLOCK = 1024


@triton.jit
def _load_patches(
    PRED,
    IMG,
    MASK,
    pid,
    ROWS,
    N,
    C_IN,
    P,
    GRID_W,
    D,
    stride_pb,
    stride_pn,
    stride_ib,
    stride_ic,
    stride_ih,
    stride_iw,
    stride_mb,
    stride_mn,
    norm_pix,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Rows pid*BLOCK_M.. : weights w, target t (normalised when norm_pix), pred x, centred target,
    rstd, and the addressing needed to write gradients. Visible rows load nothing (all zeros)."""
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < ROWS
    b = (rows // N).to(tl.int64)
    n = rows % N
    w = tl.load(MASK + b * stride_mb + n * stride_mn, mask=row_ok, other=0).to(tl.float32)
    active = row_ok & (w != 0.0)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    pq = d // C_IN  # patchify order: d = (p * P + q) * C_in + c
    c = d % C_IN
    img_col = c * stride_ic + (pq // P) * stride_ih + (pq % P) * stride_iw
    img_row = b * stride_ib + (n // GRID_W) * P * stride_ih + (n % GRID_W) * P * stride_iw
    m2 = active[:, None] & d_ok[None, :]
    t = tl.load(IMG + img_row[:, None] + img_col[None, :], mask=m2, other=0.0).to(tl.float32)
    x = tl.load(PRED + (b * stride_pb + n * stride_pn)[:, None] + d[None, :], mask=m2, other=0.0).to(
        tl.float32
    )
    centred = t
    rstd = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
    if norm_pix:
        mean = tl.sum(t, 1) / D
        centred = tl.where(m2, t - mean[:, None], 0.0)
        var = tl.sum(centred * centred, 1) / (D - 1)
        rstd = 1.0 / tl.sqrt_rn(var + 1.0e-6)
        t = centred * rstd[:, None]
    return rows, row_ok, b, n, w, m2, d, d_ok, img_row, img_col, x, t, centred, rstd


@triton.jit
def _mse_fwd_kernel(
    PRED,
    IMG,
    MASK,
    PART,
    ROWS,
    N,
    C_IN,
    P,
    GRID_W,
    D,
    stride_pb,
    stride_pn,
    stride_ib,
    stride_ic,
    stride_ih,
    stride_iw,
    stride_mb,
    stride_mn,
    norm_pix,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """part[pid] = (sum over the block's rows of w * mean_d (pred - target)^2, sum of w)."""
    pid = tl.program_id(0)
    _, _, _, _, w, _, _, _, _, _, x, t, _, _ = _load_patches(
        PRED,
        IMG,
        MASK,
        pid,
        ROWS,
        N,
        C_IN,
        P,
        GRID_W,
        D,
        stride_pb,
        stride_pn,
        stride_ib,
        stride_ic,
        stride_ih,
        stride_iw,
        stride_mb,
        stride_mn,
        norm_pix,
        BLOCK_M,
        BLOCK_D,
    )
    e = x - t  # zero on visible rows and past D (both loads masked)
    per = tl.sum(e * e, 1) / D
    tl.store(PART + pid.to(tl.int64) * 2, tl.sum(per * w, 0))
    tl.store(PART + pid.to(tl.int64) * 2 + 1, tl.sum(w, 0))


@triton.jit
def _mse_finish_kernel(PART, LOSS, WSUM, NUM, BLOCK: tl.constexpr):
    """One program: loss = sum of partial losses / max(sum of weights, 1), in a fixed order."""
    offs = tl.arange(0, BLOCK)
    acc_l = tl.zeros([BLOCK], dtype=tl.float32)
    acc_w = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, NUM, BLOCK):
        i = start + offs
        ok = i < NUM
        acc_l += tl.load(PART + i * 2, mask=ok, other=0.0)
        acc_w += tl.load(PART + i * 2 + 1, mask=ok, other=0.0)
    total_w = tl.sum(acc_w, 0)
    tl.store(LOSS, tl.sum(acc_l, 0) / tl.maximum(total_w, 1.0))
    tl.store(WSUM, total_w)


@triton.jit
def _mse_bwd_kernel(
    PRED,
    IMG,
    MASK,
    WSUM,
    DLOSS,
    DPRED,
    DIMG,
    ROWS,
    N,
    C_IN,
    P,
    GRID_W,
    D,
    stride_pb,
    stride_pn,
    stride_ib,
    stride_ic,
    stride_ih,
    stride_iw,
    stride_mb,
    stride_mn,
    stride_db,
    stride_dn,
    stride_gb,
    stride_gc,
    stride_gh,
    stride_gw,
    norm_pix,
    want_dpred,
    want_dimg,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """d pred = dloss * 2 w (pred - target) / (D max(sum w, 1)) (0 on visible rows); d img through
    the normalisation, written for every pixel of the block's patches."""
    pid = tl.program_id(0)
    rows, row_ok, b, n, w, m2, d, d_ok, img_row, img_col, x, t, centred, rstd = _load_patches(
        PRED,
        IMG,
        MASK,
        pid,
        ROWS,
        N,
        C_IN,
        P,
        GRID_W,
        D,
        stride_pb,
        stride_pn,
        stride_ib,
        stride_ic,
        stride_ih,
        stride_iw,
        stride_mb,
        stride_mn,
        norm_pix,
        BLOCK_M,
        BLOCK_D,
    )
    scale = tl.load(DLOSS).to(tl.float32) * 2.0 / (D * tl.maximum(tl.load(WSUM), 1.0))
    g = (scale * w)[:, None] * (x - t)  # d loss / d pred; zero on visible rows and past D
    out_mask = row_ok[:, None] & d_ok[None, :]
    if want_dpred:
        tl.store(
            DPRED + (b * stride_db + n * stride_dn)[:, None] + d[None, :],
            g.to(DPRED.dtype.element_ty),
            mask=out_mask,
        )
    if want_dimg:
        gt = -g  # d loss / d (normalised) target
        if norm_pix:
            mean_g = tl.sum(gt, 1) / D
            proj = tl.sum(gt * centred, 1) / (D - 1)
            gt = rstd[:, None] * (gt - mean_g[:, None]) - (rstd * rstd * rstd * proj)[:, None] * centred
            gt = tl.where(m2, gt, 0.0)
        g_row = b * stride_gb + (n // GRID_W) * P * stride_gh + (n % GRID_W) * P * stride_gw
        pq = d // C_IN
        g_col = (d % C_IN) * stride_gc + (pq // P) * stride_gh + (pq % P) * stride_gw
        tl.store(DIMG + g_row[:, None] + g_col[None, :], gt.to(DIMG.dtype.element_ty), mask=out_mask)


# ----------------------------------------------------------------------------------------------------
# Configs: one per BLOCK_D (memory-bound, no loop: a fixed number of tile elements per thread)
# ----------------------------------------------------------------------------------------------------


def rows_per_program(bd: int, interpreter: bool | None = None) -> int:
    """BLOCK_M for a BLOCK_D: a function of the shapes only (the partial buffer layout depends on it)."""
    interp = interpreting() if interpreter is None else interpreter
    if interp:
        return max(1, INTERPRETER_TILE_ELEMENTS // bd)
    return max(1, min(MAX_ROWS, TILE_ELEMENTS // bd))


def num_warps(bd: int) -> int:
    """Warps for a BLOCK_D: ``ELEMENTS_PER_THREAD`` elements of the (rows x BLOCK_D) tile per thread
    (4 to 16 warps). compile_check confirms no spills on sm_86 for every BLOCK_D."""
    tile = rows_per_program(bd, False) * bd
    return max(4, min(16, tile // (32 * ELEMENTS_PER_THREAD)))


def _grid_meta(bd: int) -> dict:
    return {"BLOCK_M": rows_per_program(bd), "BLOCK_D": bd, "num_warps": num_warps(bd), "num_stages": 1}


# ----------------------------------------------------------------------------------------------------
# Host launchers
# ----------------------------------------------------------------------------------------------------


def _mask_view(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def _geometry(pred: torch.Tensor, img: torch.Tensor, patch: int) -> tuple[int, int, int, int, int]:
    B, C_in, H, W = img.shape
    N = pred.shape[1]
    return B, N, C_in, W // patch, patch * patch * C_in


def _common_args(pred, img, mask, patch):
    B, N, C_in, grid_w, D = _geometry(pred, img, patch)
    return (B * N, N, C_in, patch, grid_w, D, pred.stride(0), pred.stride(1), *img.stride(), *mask.stride())


def _forward(
    pred: torch.Tensor, img: torch.Tensor, mask: torch.Tensor, patch: int, norm_pix: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    loss = torch.zeros((), dtype=torch.float32, device=pred.device)
    wsum = torch.zeros((), dtype=torch.float32, device=pred.device)
    B, N, _, _, D = _geometry(pred, img, patch)
    if B * N == 0:
        return loss, wsum
    pred = last_dim_contiguous(pred)
    mask = _mask_view(mask)
    bd = pow2_block(D)
    bm = rows_per_program(bd)
    programs = triton.cdiv(B * N, bm)
    part = torch.empty((programs, 2), dtype=torch.float32, device=pred.device)
    args = (pred, img, mask, part, *_common_args(pred, img, mask, patch))
    launch_fixed(_mse_fwd_kernel, (programs,), *args, int(norm_pix), **_grid_meta(bd))
    finish = {"BLOCK": FINISH_BLOCK, "num_warps": 4, "num_stages": 1}
    launch_fixed(_mse_finish_kernel, (1,), part, loss, wsum, programs, **finish)
    return loss, wsum


def _backward(
    dloss: torch.Tensor,
    pred: torch.Tensor,
    img: torch.Tensor,
    mask: torch.Tensor,
    wsum: torch.Tensor,
    patch: int,
    norm_pix: bool,
    want_pred: bool,
    want_img: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    dpred = (
        torch.empty(pred.shape, dtype=pred.dtype, device=pred.device) if want_pred else pred.new_empty((0,))
    )
    dimg = torch.empty(img.shape, dtype=img.dtype, device=img.device) if want_img else img.new_empty((0,))
    B, N, _, _, D = _geometry(pred, img, patch)
    if B * N == 0 or not (want_pred or want_img):
        return dpred, dimg
    pred = last_dim_contiguous(pred)
    mask = _mask_view(mask)
    bd = pow2_block(D)
    bm = rows_per_program(bd)
    dp = dpred if want_pred else pred
    di = dimg if want_img else img
    dloss = dloss.reshape(()).to(torch.float32)
    args = (
        pred,
        img,
        mask,
        wsum,
        dloss,
        dp,
        di,
        *_common_args(pred, img, mask, patch),
        *(dp.stride()[:2] if want_pred else (0, 0)),
        *(di.stride() if want_img else (0,) * 4),
    )
    flags = (int(norm_pix), int(want_pred), int(want_img))
    launch_fixed(_mse_bwd_kernel, (triton.cdiv(B * N, bm),), *args, *flags, **_grid_meta(bd))
    return dpred, dimg


# ----------------------------------------------------------------------------------------------------
# torch.library registration and entry
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("fusmae_fast::masked_mse_fwd", mutates_args=())
def _mse_fwd_op(
    pred: torch.Tensor, img: torch.Tensor, mask: torch.Tensor, patch: int, norm_pix: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(pred, img, mask, patch, norm_pix)


@_mse_fwd_op.register_fake
def _mse_fwd_fake(pred, img, mask, patch, norm_pix):
    return pred.new_empty((), dtype=torch.float32), pred.new_empty((), dtype=torch.float32)


@torch.library.custom_op("fusmae_fast::masked_mse_bwd", mutates_args=())
def _mse_bwd_op(
    dloss: torch.Tensor,
    pred: torch.Tensor,
    img: torch.Tensor,
    mask: torch.Tensor,
    wsum: torch.Tensor,
    patch: int,
    norm_pix: bool,
    want_pred: bool,
    want_img: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backward(dloss, pred, img, mask, wsum, patch, norm_pix, want_pred, want_img)


@_mse_bwd_op.register_fake
def _mse_bwd_fake(dloss, pred, img, mask, wsum, patch, norm_pix, want_pred, want_img):
    dpred = pred.new_empty(pred.shape) if want_pred else pred.new_empty((0,))
    dimg = img.new_empty(img.shape) if want_img else img.new_empty((0,))
    return dpred, dimg


def _setup_context(ctx, inputs, output) -> None:
    pred, img, mask, patch, norm_pix = inputs
    _, wsum = output
    ctx.save_for_backward(pred, img, mask, wsum)
    ctx.patch = patch
    ctx.norm_pix = norm_pix
    ctx.mark_non_differentiable(wsum)


def _autograd_backward(ctx, dloss, dwsum):
    pred, img, mask, wsum = ctx.saved_tensors
    want_pred, want_img = ctx.needs_input_grad[:2]
    if not (want_pred or want_img):
        return None, None, None, None, None
    dpred, dimg = _mse_bwd_op(dloss, pred, img, mask, wsum, ctx.patch, ctx.norm_pix, want_pred, want_img)
    return (dpred if want_pred else None), (dimg if want_img else None), None, None, None


_mse_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def masked_mse_triton(
    pred: torch.Tensor, img: torch.Tensor, mask: torch.Tensor, patch: int, norm_pix: bool
) -> torch.Tensor:
    """Triton path of masked_mse (same semantics as ``masked_mse_ref``); returns an fp32 scalar.

    Shapes are validated by ``fusmae_fast.ops``; here: float dtypes of pred and img, a bool / integer
    / float mask, and the register limit P*P*C_in <= MAX_PATCH_ELEMENTS (2 <= it with norm_pix).
    """
    check_float("pred", pred)
    check_float("img", img)
    if mask.dtype.is_complex:
        raise TypeError(f"mask must be bool, integer or float, got {mask.dtype}")
    D = patch * patch * img.shape[1]
    if D > MAX_PATCH_ELEMENTS:
        raise ValueError(
            f"P*P*C_in = {D} exceeds the Triton path's limit of {MAX_PATCH_ELEMENTS} elements per patch "
            "(a patch is held in registers); use kernels='torch' for such patches"
        )
    check_norm_pix(norm_pix, D)
    loss, _ = torch.ops.fusmae_fast.masked_mse_fwd(pred, img, mask, int(patch), bool(norm_pix))
    return loss


# ----------------------------------------------------------------------------------------------------
# Reference (pure torch; the tests' oracle and the torch path's fallback)
# ----------------------------------------------------------------------------------------------------


def _patchify(img: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C), MAE's patchify order (nchpwq -> nhwpqc): the target layout of the
    loss, written out here because kernels import only torch and triton (the model's own is
    ``fusmae_fast.patches.patchify``)."""
    b, c, hh, ww = img.shape
    view = img.reshape(b, c, hh // patch, patch, ww // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return view.reshape(b, (hh // patch) * (ww // patch), -1)


def masked_mse_ref(
    pred: torch.Tensor, img: torch.Tensor, mask: torch.Tensor, patch: int, norm_pix: bool
) -> torch.Tensor:
    """Pure-torch reference of masked_mse (fp32 scalar)."""
    acc = torch.promote_types(pred.dtype, torch.float32)
    target = _patchify(img.to(acc), patch)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + EPS) ** 0.5
    per_patch = ((pred.to(acc) - target) ** 2).mean(dim=-1)
    m = mask.to(acc)
    denom = m.sum()
    return (per_patch * m).sum() / denom.clamp(min=1.0)


# ----------------------------------------------------------------------------------------------------
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------

COMPILE_BLOCK_D: tuple[int, ...] = tuple(1 << k for k in range(4, 13))
"""Every BLOCK_D the Triton path launches (16 .. MAX_PATCH_ELEMENTS)."""


COMPILE_FLAGS: dict[str, int] = {"norm_pix": 1, "want_dpred": 1, "want_dimg": 0}
"""The flags of the launch the specs are compiled as (MAE's norm_pix_loss, the gradient of pred only):
int arguments, which the JIT specialises (1 becomes a constant), so each value is its own variant."""

COMPILE_STRIDES: dict[str, int] = {"stride_iw": 1, "stride_mn": 1, "stride_gb": 0, "stride_gc": 0}
"""The strides every launch of the model has: contiguous image rows and mask (unit strides, the
constant 1), no d img (zero strides, without want_dimg). Sizes and the other strides vary with the
shape and stay unmarked."""


def _spec(kernel: str, config: str, fn, sig: dict, constexprs: dict, warps: int) -> dict:
    # fresh torch allocations are 16-byte aligned; the mask is a view (maybe offset), so not listed
    ints = {n: v for n, v in (COMPILE_FLAGS | COMPILE_STRIDES).items() if n in fn.arg_names}
    if "stride_gh" in fn.arg_names:
        ints |= {"stride_gh": 0, "stride_gw": 0}
    return launch_spec(kernel, config, fn, sig, constexprs, ints, warps, 1, unaligned=("MASK",))


def compile_specs() -> list[dict]:
    """Specs for every (kernel, BLOCK_D, pred dtype) the launchers run, with ``COMPILE_FLAGS`` and
    ``COMPILE_STRIDES``. The image is compiled as fp32 (the model's input dtype), the mask as uint8 (a
    bool mask's view)."""
    specs = []
    for tname in TL_DTYPE_NAME.values():
        fwd_sig = signature(
            _mse_fwd_kernel,
            {"PRED": f"*{tname}", "IMG": "*fp32", "MASK": "*u8", "PART": "*fp32"},
            ("BLOCK_M", "BLOCK_D"),
        )
        bwd_sig = signature(
            _mse_bwd_kernel,
            {
                "PRED": f"*{tname}",
                "IMG": "*fp32",
                "MASK": "*u8",
                "WSUM": "*fp32",
                "DLOSS": "*fp32",
                "DPRED": f"*{tname}",
                "DIMG": "*fp32",
            },
            ("BLOCK_M", "BLOCK_D"),
        )
        for bd in COMPILE_BLOCK_D:
            bm, warps = rows_per_program(bd, False), num_warps(bd)
            consts = {"BLOCK_M": bm, "BLOCK_D": bd}
            tag = f"BM{bm}-BD{bd}-w{warps}-{tname}"
            specs.append(_spec("mse_fwd", tag, _mse_fwd_kernel, fwd_sig, consts, warps))
            specs.append(_spec("mse_bwd", tag, _mse_bwd_kernel, bwd_sig, consts, warps))
    sig = signature(_mse_finish_kernel, {"PART": "*fp32", "LOSS": "*fp32", "WSUM": "*fp32"}, ("BLOCK",))
    specs.append(
        _spec("mse_finish", f"B{FINISH_BLOCK}-w4", _mse_finish_kernel, sig, {"BLOCK": FINISH_BLOCK}, 4)
    )
    return specs
