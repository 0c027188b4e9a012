"""Masked patch embedding (Eq. 1 on the kept patches only): patches MAE masks are never projected.

masked_patch_embed
    img (B, C_in, H, W); weight (C, C_in, P, P) (Conv2d layout, Eq. 1); bias (C,); pos (N, C) with
    N = (H/P)(W/P) patches in raster order; ids_keep (B, K) int64 raster patch indices.
    out[b, j] = W . patch(img[b], ids_keep[b, j]) + bias + pos[ids_keep[b, j]].
    Ragged keeps (independent masking): an index of -1 marks an empty slot; its output row is 0 and
    it receives/propagates no gradient. Masked patches are never projected.

The Triton path (``masked_patch_embed_triton``)
    Forward: one GEMM launch over the B*K kept rows only, grid (row blocks, embedding blocks), a row
    block never spanning two samples: a program loads the ids of its rows, reads each kept patch's
    C_in*P*P pixels straight from img (im2col on the fly, reduction index r = (c, p, q) in Conv2d
    weight order, P a compile-time constant), multiplies with the weight by ``tl.dot`` (fp32
    accumulate; fp32 inputs use input_precision="ieee" unless ``allow_tf32``) and adds bias and
    pos[ids_keep] in fp32 before one rounding to the output dtype. Empty slots (-1) give exact zero
    rows; a block made only of empty slots skips its reduction (the model's ragged keeps put them in
    one run per sample: the S1 embedding's slots [split, K), the S2 embedding's [0, split)). No
    patch tensor, no full-image convolution, no gather pass, no separate bias/pos add.
    Backward (only what is needed, from ``ctx.needs_input_grad``):
      d img: zeros (masked patches stay 0; one memset) plus one GEMM launch dout . W over the kept rows,
        stored straight to the patches' pixels; a sample's patches are distinct, so one writer per pixel.
      d weight: split-K GEMM dout^T . patches over the kept rows (blocks of empty slots skipped); each
        row split writes an fp32 partial (S, C, C_in*P*P) that ``reductions.sum_rows`` adds in a fixed
        order. S depends only on the shapes (``dw_splits``); the order within a split follows the
        config's row block, so d weight is bitwise reproducible for a given config (deterministic
        mode pins it: ``triton_runtime``'s Determinism).
      d pos, d bias: the inverse map of ids_keep, then token_gather's backward kernel without dx
        (``scattered_rows_sum``) gives batch-split partials of d pos[n] = sum_b dout[b, inv[b, n]];
        ``reductions.reduce_splits`` sums them and also the per-block column sums, which ``sum_rows``
        turns into d bias = sum_n d pos[n]. No atomics.
    Limits: img, weight, bias, pos share one dtype; ids_keep distinct per row (-1 slots excepted) when
    img, bias or pos needs a gradient (checked by the forward in eager mode, by the backward op under
    torch.compile). Any patch size (P = 2^k gives shift/mask
    index math); any C, C_in. The GEMM configs (``_GEMM_TABLE``) are checked by compile_check for P in
    ``COMPILE_PATCHES``.

Work and traffic (B, K kept, N patches, R = C_in*P*P, C; e bytes per element)
    FLOPs: forward 2*B*K*R*C (the textbook Conv2d over all patches: 2*B*N*R*C); backward: d weight
    2*B*K*R*C, d img 2*B*K*R*C. Bytes, forward: the kept patches' pixels B*K*R*e, W (R*C*e, cached),
    the output B*K*C*e, ids and pos rows. The textbook path also writes and re-reads the full (B, N, C)
    embedding and gathers it (see bench/fusion_savings.py for the per-step totals).

dtypes: fp32, fp16, bf16 (bf16 tested on CUDA only: the interpreter has no bf16). Strides of every
tensor are passed explicitly; offsets are 64-bit in the batch index. Under ``TRITON_INTERPRET=1`` one
fixed config per kernel is launched (``MPE_INTERPRETER_CONFIG``); on a GPU a small autotune set
filtered by ``keep_gemm()``. The op is registered with ``torch.library`` (fake implementations and
autograd), so ``torch.compile`` traces it without graph breaks. Double backward is not supported.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .compile_spec import launch_spec, signature
from .reductions import TARGET_PROGRAMS, inverse_map, reduce_splits, sum_rows
from .token_gather import scattered_rows_sum
from .triton_runtime import (
    TL_DTYPE_NAME,
    TRITON_VERSION,
    ConfigFields,
    ConfigTable,
    autotune_bucket,
    autotuned,
    check_distinct,
    check_distinct_or_defer,
    check_float,
    dot_precision,
    grad_wanted,
    last_dim_contiguous,
    launch,
    or_empty,
)

# ----------------------------------------------------------------------------------------------------
# Kernels: im2col on the fly, GEMMs over the kept rows only
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _patch_rows(IDS, rows, row_ok, K, GRID_W, stride_ib, stride_ik, PATCH: tl.constexpr):
    """Per flattened row m = b*K + j: (b int64, j, patch index or 0, valid, patch row ph*P, col pw*P)."""
    b = (rows // K).to(tl.int64)
    j = rows % K
    idx = tl.load(IDS + b * stride_ib + j * stride_ik, mask=row_ok, other=-1)
    valid = row_ok & (idx >= 0)
    safe = tl.where(valid, idx, 0)
    y0 = (safe // GRID_W) * PATCH
    x0 = (safe % GRID_W) * PATCH
    return b, j, safe, valid, y0, x0


@triton.jit
def _sample_rows(pid, K, BLOCK_M: tl.constexpr):
    """Row block ``pid`` of a grid of B * cdiv(K, BLOCK_M) blocks that never straddle two samples: the
    flattened rows b*K + j of block j // BLOCK_M of sample b, and which of them exist (j < K). With
    modality-sorted ragged keeps, whole blocks of empty slots then occur and are skipped."""
    blocks = tl.cdiv(K, BLOCK_M)
    j = (pid % blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    return (pid // blocks) * K + j, j < K


@triton.jit
def _patch_cols(r, PATCH: tl.constexpr):
    """Reduction index r = (c, p, q) in Conv2d weight order -> (c, p, q)."""
    c = r // (PATCH * PATCH)
    pq = r % (PATCH * PATCH)
    return c, pq // PATCH, pq % PATCH


@triton.jit
def _mpe_fwd_kernel(
    IMG,
    W,
    BIAS,
    POS,
    IDS,
    OUT,
    K,
    C,
    C_IN,
    GRID_W,
    M_BUCKET,
    stride_imb,
    stride_imc,
    stride_imh,
    stride_imw,
    stride_wo,
    stride_wc,
    stride_wp,
    stride_wq,
    stride_bias,
    stride_pn,
    stride_pc,
    stride_ib,
    stride_ik,
    stride_ob,
    stride_ok,
    PATCH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """out[m, o] = sum_r patch(m)[r] W[o, r] + bias[o] + pos[id(m), o]; rows with id -1 are 0.
    Rows are m = b*K + j (BLOCK_M of one sample per program), columns o (BLOCK_N), reduction
    r = (c, p, q)."""
    rows, row_ok = _sample_rows(tl.program_id(0), K, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < C
    b, j, idx, valid, y0, x0 = _patch_rows(IDS, rows, row_ok, K, GRID_W, stride_ib, stride_ik, PATCH)
    img_row = b * stride_imb + y0 * stride_imh + x0 * stride_imw
    R = C_IN * PATCH * PATCH
    # a block without a kept patch skips the reduction (ragged keeps: whole blocks of empty slots)
    r_hi = tl.where(tl.sum(valid.to(tl.int32), 0) > 0, R, 0)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    t = tl.arange(0, BLOCK_R)
    for r0 in range(0, r_hi, BLOCK_R):
        r = r0 + t
        r_ok = r < R
        c, p, q = _patch_cols(r, PATCH)  # 1-D index math (constexpr P: shifts and masks for P = 2^k)
        a = tl.load(
            IMG + img_row[:, None] + (c * stride_imc + p * stride_imh + q * stride_imw)[None, :],
            mask=valid[:, None] & r_ok[None, :],
            other=0.0,
        )
        w = tl.load(
            W + (c * stride_wc + p * stride_wp + q * stride_wq)[:, None] + cols[None, :] * stride_wo,
            mask=r_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    bias = tl.load(BIAS + cols * stride_bias, mask=col_ok, other=0.0).to(tl.float32)
    pos = tl.load(
        POS + (idx * stride_pn)[:, None] + cols[None, :] * stride_pc,
        mask=valid[:, None] & col_ok[None, :],
        other=0.0,
    ).to(tl.float32)
    out = tl.where(valid[:, None], acc + bias[None, :] + pos, 0.0)
    tl.store(
        OUT + (b * stride_ob + j * stride_ok)[:, None] + cols[None, :],
        out.to(OUT.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def _mpe_dimg_kernel(
    DOUT,
    W,
    IDS,
    DIMG,
    K,
    C,
    C_IN,
    GRID_W,
    M_BUCKET,
    stride_db,
    stride_dk,
    stride_wo,
    stride_wc,
    stride_wp,
    stride_wq,
    stride_ib,
    stride_ik,
    stride_gb,
    stride_gc,
    stride_gh,
    stride_gw,
    PATCH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """d patch(m)[r] = sum_o dout[m, o] W[o, r], stored into d img at the patch's pixels (kept rows only;
    patches of one sample are distinct, so every pixel has at most one writer). BLOCK_M rows and
    BLOCK_R pixels per program (rows of one sample), reduction over o in BLOCK_N steps."""
    rows, row_ok = _sample_rows(tl.program_id(0), K, BLOCK_M)
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    R = C_IN * PATCH * PATCH
    r_ok = r < R
    b, j, idx, valid, y0, x0 = _patch_rows(IDS, rows, row_ok, K, GRID_W, stride_ib, stride_ik, PATCH)
    c, p, q = _patch_cols(r, PATCH)
    w_col = c * stride_wc + p * stride_wp + q * stride_wq
    d_row = b * stride_db + j * stride_dk
    o_hi = tl.where(tl.sum(valid.to(tl.int32), 0) > 0, C, 0)
    acc = tl.zeros([BLOCK_M, BLOCK_R], dtype=tl.float32)
    for o0 in range(0, o_hi, BLOCK_N):
        o = o0 + tl.arange(0, BLOCK_N)
        o_ok = o < C
        g = tl.load(DOUT + d_row[:, None] + o[None, :], mask=valid[:, None] & o_ok[None, :], other=0.0)
        w = tl.load(
            W + o[:, None] * stride_wo + w_col[None, :], mask=o_ok[:, None] & r_ok[None, :], other=0.0
        )
        acc = tl.dot(g, w, acc, input_precision=DOT_PRECISION)
    g_row = b * stride_gb + y0 * stride_gh + x0 * stride_gw
    tl.store(
        DIMG + g_row[:, None] + (c * stride_gc + p * stride_gh + q * stride_gw)[None, :],
        acc.to(DIMG.dtype.element_ty),
        mask=valid[:, None] & r_ok[None, :],
    )


@triton.jit
def _mpe_dw_kernel(
    DOUT,
    IMG,
    IDS,
    PART,
    M,
    K,
    C,
    C_IN,
    GRID_W,
    rows_per_split,
    stride_db,
    stride_dk,
    stride_imb,
    stride_imc,
    stride_imh,
    stride_imw,
    stride_ib,
    stride_ik,
    PATCH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Split-K d weight: part[s, o, r] = sum over the rows m of split s of dout[m, o] patch(m)[r].
    BLOCK_N outputs o and BLOCK_R reduction columns r per program; rows in BLOCK_M steps; blocks of
    empty slots are skipped. The splits are summed in a fixed order by ``sum_rows``."""
    o = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    pid_s = tl.program_id(2)
    o_ok = o < C
    R = C_IN * PATCH * PATCH
    r_ok = r < R
    c, p, q = _patch_cols(r, PATCH)
    img_col = c * stride_imc + p * stride_imh + q * stride_imw
    m_lo = pid_s * rows_per_split
    m_hi = tl.minimum(M, m_lo + rows_per_split)
    acc = tl.zeros([BLOCK_N, BLOCK_R], dtype=tl.float32)
    for m0 in range(m_lo, m_hi, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < m_hi
        b, j, idx, valid, y0, x0 = _patch_rows(IDS, rows, row_ok, K, GRID_W, stride_ib, stride_ik, PATCH)
        if tl.sum(valid.to(tl.int32), 0) > 0:
            gt = tl.load(
                DOUT + (b * stride_db + j * stride_dk)[None, :] + o[:, None],
                mask=o_ok[:, None] & valid[None, :],
                other=0.0,
            )
            a = tl.load(
                IMG + (b * stride_imb + y0 * stride_imh + x0 * stride_imw)[:, None] + img_col[None, :],
                mask=valid[:, None] & r_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(gt, a, acc, input_precision=DOT_PRECISION)
    base = pid_s.to(tl.int64) * C * R
    tl.store(PART + base + o[:, None] * R + r[None, :], acc, mask=o_ok[:, None] & r_ok[None, :])


# ----------------------------------------------------------------------------------------------------
# Configs: the autotune set as a (config, predicate) table, the interpreter's configs
# ----------------------------------------------------------------------------------------------------

GemmConf = tuple[int, int, int, int, int]
"""(BLOCK_M rows, BLOCK_N embedding columns, BLOCK_R patch-pixel columns, num_warps, num_stages).
fwd: program = BLOCK_M rows x BLOCK_N columns, reduction over r. dimg: BLOCK_M rows x BLOCK_R pixels,
reduction over the embedding in BLOCK_N steps. dw: BLOCK_N x BLOCK_R of d weight, reduction over rows
in BLOCK_M steps."""

GEMM_FIELDS = ConfigFields(("BLOCK_M", "BLOCK_N", "BLOCK_R", "num_warps", "num_stages"))

SPLIT_ROW_ALIGN = 128
"""d weight row splits start at multiples of this (>= every BLOCK_M of the set)."""
MIN_ROWS_PER_SPLIT = 256
"""Fewest rows one d weight split reduces over."""


def _always(C: int, R: int) -> bool:
    return True


def _wide(C: int, R: int) -> bool:  # both GEMM extents at least 128: big tiles are not mostly padding
    return C >= 128 and R >= 128


def _not_before_triton39(C: int, R: int) -> bool:
    """Kept on Triton >= 3.9 only: under Triton 3.6 ptxas spills registers of this config on sm_86
    (fp16 d weight at P8 and P16), so older Tritons do without it."""
    return TRITON_VERSION >= (3, 9)


_GEMM_TABLE = ConfigTable(
    GEMM_FIELDS,
    {
        ("fwd", 2): (
            ((64, 64, 32, 4, 2), _always),
            ((32, 64, 64, 4, 2), _always),
            ((128, 64, 32, 8, 2), _wide),
            ((64, 128, 32, 8, 2), _wide),
            ((128, 128, 32, 8, 2), _wide),
        ),
        ("dimg", 2): (
            ((64, 64, 32, 4, 2), _always),
            ((32, 64, 64, 4, 2), _always),
            ((64, 64, 64, 8, 2), _wide),
            ((128, 64, 32, 8, 2), _wide),
        ),
        ("dw", 2): (
            ((32, 64, 64, 4, 2), _always),
            ((64, 64, 64, 4, 2), _not_before_triton39),
            ((32, 128, 64, 8, 2), _wide),
            ((64, 64, 128, 8, 2), _wide),
            ((32, 128, 128, 8, 2), _wide),
        ),
        ("fwd", 4): (
            ((32, 32, 16, 4, 2), _always),
            ((64, 32, 16, 4, 2), _always),
            ((32, 64, 16, 4, 2), _wide),
            ((64, 64, 16, 8, 2), _wide),
        ),
        ("dimg", 4): (
            ((32, 32, 16, 4, 2), _always),
            ((64, 32, 16, 4, 2), _always),
            ((32, 32, 64, 4, 2), _wide),
            ((64, 32, 64, 8, 2), _wide),
        ),
        ("dw", 4): (
            ((16, 32, 32, 4, 2), _always),
            ((16, 64, 32, 4, 2), _always),
            ((16, 64, 64, 8, 2), _wide),
        ),
    },
)
"""Per (kernel, element-size group): configs and the (C, R) for which keep() lets each through."""

GEMM_CONFIGS: dict[str, tuple[GemmConf, ...]] = {
    kernel: _GEMM_TABLE.configs(kernel) for kernel in ("fwd", "dimg", "dw")
}
"""Every config of the masked_patch_embed autotune set per kernel."""


def keep_gemm(kernel: str, conf: GemmConf, C: int, R: int, esize: int) -> bool:
    """keep(): may the autotuner try ``conf`` for this kernel, embedding width C, patch size R and
    element size?"""
    return _GEMM_TABLE.keep(kernel, conf, esize, C, R)


def kept_gemm_configs(kernel: str, C: int, R: int, esize: int) -> list[GemmConf]:
    return _GEMM_TABLE.kept(kernel, esize, C, R)


MPE_INTERPRETER_CONFIG: dict[str, GemmConf] = {
    "fwd": (64, 32, 128, 4, 1),
    "dimg": (64, 32, 128, 4, 1),
    "dw": (64, 32, 128, 4, 1),
}
"""The config launched under ``TRITON_INTERPRET=1``: large blocks (the interpreter's cost is per
operation, not per element); the tests also run small ones (partial blocks along every axis)."""


def _gemm_shape(args) -> tuple[int, int]:
    """(C, R = C_in * P * P) of a launch, from its arguments by name."""
    return args["C"], args["C_IN"] * args["PATCH"] ** 2


def _gemm_prune(kernel: str, tensor_arg: str):
    return _GEMM_TABLE.prune(kernel, tensor_arg, _gemm_shape)


def _gemm_triton_configs(kernel: str) -> list[triton.Config]:
    return _GEMM_TABLE.triton_configs(kernel)


_GEMM_KEY = ["C", "C_IN", "M_BUCKET", "PATCH", "DOT_PRECISION"]
_mpe_fwd_tuned = autotuned(_mpe_fwd_kernel, _gemm_triton_configs("fwd"), _GEMM_KEY, _gemm_prune("fwd", "IMG"))
_mpe_dimg_tuned = autotuned(
    _mpe_dimg_kernel, _gemm_triton_configs("dimg"), _GEMM_KEY, _gemm_prune("dimg", "DOUT")
)
_mpe_dw_tuned = autotuned(
    _mpe_dw_kernel,
    _gemm_triton_configs("dw"),
    ["C", "C_IN", "rows_per_split", "PATCH", "DOT_PRECISION"],
    _gemm_prune("dw", "DOUT"),
)


def _m_bucket(M: int) -> int:
    return autotune_bucket(M, 1 << 16)


def dw_splits(M: int, C: int, R: int) -> tuple[int, int]:
    """(splits, rows per split) of the d weight reduction over M rows; a function of the shapes only."""
    if M == 0:
        return 0, SPLIT_ROW_ALIGN
    tiles = triton.cdiv(C, 64) * triton.cdiv(R, 64)
    want = max(1, min(triton.cdiv(TARGET_PROGRAMS, tiles), triton.cdiv(M, MIN_ROWS_PER_SPLIT)))
    per = triton.cdiv(triton.cdiv(M, want), SPLIT_ROW_ALIGN) * SPLIT_ROW_ALIGN
    return triton.cdiv(M, per), per


# ----------------------------------------------------------------------------------------------------
# Host launchers
# ----------------------------------------------------------------------------------------------------


def _mpe_forward(
    img: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
    allow_tf32: bool,
) -> torch.Tensor:
    B, C_in, H, W = img.shape
    C = weight.shape[0]
    K = ids_keep.shape[1]
    out = torch.empty((B, K, C), dtype=img.dtype, device=img.device)
    if out.numel() == 0:
        return out
    M = B * K
    strides = (*img.stride(), *weight.stride(), bias.stride(0), *pos.stride(), *ids_keep.stride())
    sizes = (K, C, C_in, W // patch, _m_bucket(M))
    args = (img, weight, bias, pos, ids_keep, out, *sizes, *strides, *out.stride()[:2])

    def grid(m):
        return (B * triton.cdiv(K, m["BLOCK_M"]), triton.cdiv(C, m["BLOCK_N"]))

    meta = {"PATCH": patch, "DOT_PRECISION": dot_precision(img.dtype, allow_tf32)}
    launch(_mpe_fwd_tuned, grid, args, meta, GEMM_FIELDS, MPE_INTERPRETER_CONFIG["fwd"])
    return out


def _mpe_backward(
    dout: torch.Tensor,
    img: torch.Tensor,
    weight: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
    n: int,
    need_img: bool,
    need_weight: bool,
    bias_dtype: torch.dtype | None,
    pos_dtype: torch.dtype | None,
    allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    B, C_in, H, W = img.shape
    C = weight.shape[0]
    K = ids_keep.shape[1]
    M, R = B * K, C_in * patch * patch
    dout = last_dim_contiguous(dout)
    meta = {"PATCH": patch, "DOT_PRECISION": dot_precision(img.dtype, allow_tf32)}
    dimg = dw = dbias = dpos = None
    if need_img:
        dimg = torch.zeros((B, C_in, H, W), dtype=img.dtype, device=img.device)  # masked patches stay 0
        if M * C:
            strides = (*dout.stride()[:2], *weight.stride(), *ids_keep.stride(), *dimg.stride())
            args = (dout, weight, ids_keep, dimg, K, C, C_in, W // patch, _m_bucket(M), *strides)

            def grid_dimg(m):
                return (B * triton.cdiv(K, m["BLOCK_M"]), triton.cdiv(R, m["BLOCK_R"]))

            launch(_mpe_dimg_tuned, grid_dimg, args, meta, GEMM_FIELDS, MPE_INTERPRETER_CONFIG["dimg"])
    if need_weight:
        splits, per = dw_splits(M, C, R)
        part = torch.zeros((max(splits, 1), C, R), dtype=torch.float32, device=img.device)
        if M * C:
            strides = (*dout.stride()[:2], *img.stride(), *ids_keep.stride())
            args = (dout, img, ids_keep, part, M, K, C, C_in, W // patch, per, *strides)

            def grid_dw(m):
                return (triton.cdiv(C, m["BLOCK_N"]), triton.cdiv(R, m["BLOCK_R"]), splits)

            launch(_mpe_dw_tuned, grid_dw, args, meta, GEMM_FIELDS, MPE_INTERPRETER_CONFIG["dw"])
        dw = sum_rows(part.reshape(part.shape[0], C * R), weight.dtype).reshape(weight.shape)
    if bias_dtype is not None or pos_dtype is not None:
        inv = inverse_map(ids_keep, n)
        part = scattered_rows_sum(dout, inv, None, True)
        dpos, rowsum = reduce_splits(part, pos_dtype, bias_dtype is not None)
        if bias_dtype is not None:
            dbias = sum_rows(rowsum, bias_dtype)
    return or_empty(dout, dimg, dw, dbias, dpos)


# ----------------------------------------------------------------------------------------------------
# torch.library registration and entry
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("fusmae_fast::masked_patch_embed_fwd", mutates_args=())
def _mpe_fwd_op(
    img: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
    allow_tf32: bool,
    check_ids: bool,
) -> torch.Tensor:
    """``check_ids``: the caller skipped the distinct-index check (traced); the backward op runs it."""
    return _mpe_forward(img, weight, bias, pos, ids_keep, patch, allow_tf32)


@_mpe_fwd_op.register_fake
def _mpe_fwd_fake(img, weight, bias, pos, ids_keep, patch, allow_tf32, check_ids):
    return img.new_empty((img.shape[0], ids_keep.shape[1], weight.shape[0]))


@torch.library.custom_op("fusmae_fast::masked_patch_embed_bwd", mutates_args=())
def _mpe_bwd_op(
    dout: torch.Tensor,
    img: torch.Tensor,
    weight: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
    n: int,
    need_img: bool,
    need_weight: bool,
    bias_dtype: torch.dtype | None,
    pos_dtype: torch.dtype | None,
    allow_tf32: bool,
    check_ids: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # the forward ran traced: its check was skipped (the weight's gradient needs none)
    if check_ids and (need_img or bias_dtype is not None or pos_dtype is not None):
        check_distinct("ids_keep", ids_keep)
    return _mpe_backward(
        dout, img, weight, ids_keep, patch, n, need_img, need_weight, bias_dtype, pos_dtype, allow_tf32
    )


@_mpe_bwd_op.register_fake
def _mpe_bwd_fake(
    dout, img, weight, ids_keep, patch, n, need_img, need_weight, bias_dtype, pos_dtype, allow_tf32, check_ids
):
    C = weight.shape[0]
    dimg = torch.empty_like(img, memory_format=torch.contiguous_format) if need_img else dout.new_empty((0,))
    dw = (
        torch.empty_like(weight, memory_format=torch.contiguous_format)
        if need_weight
        else dout.new_empty((0,))
    )
    dbias = dout.new_empty((C,), dtype=bias_dtype) if bias_dtype is not None else dout.new_empty((0,))
    dpos = dout.new_empty((n, C), dtype=pos_dtype) if pos_dtype is not None else dout.new_empty((0,))
    return dimg, dw, dbias, dpos


def _mpe_setup_context(ctx, inputs, output) -> None:
    img, weight, bias, pos, ids_keep, patch, allow_tf32, check_ids = inputs
    ctx.save_for_backward(img, weight, ids_keep)
    ctx.patch = patch
    ctx.n = pos.shape[0]
    ctx.dtypes = (bias.dtype, pos.dtype)
    ctx.allow_tf32 = allow_tf32
    ctx.check_ids = check_ids


def _mpe_autograd_backward(ctx, dout):
    img, weight, ids_keep = ctx.saved_tensors
    need_img, need_w, need_b, need_pos = ctx.needs_input_grad[:4]
    if not (need_img or need_w or need_b or need_pos):
        return None, None, None, None, None, None, None, None
    dimg, dw, dbias, dpos = _mpe_bwd_op(
        dout,
        img,
        weight,
        ids_keep,
        ctx.patch,
        ctx.n,
        need_img,
        need_w,
        ctx.dtypes[0] if need_b else None,
        ctx.dtypes[1] if need_pos else None,
        ctx.allow_tf32,
        ctx.check_ids,
    )
    return (
        dimg if need_img else None,
        dw if need_w else None,
        dbias if need_b else None,
        dpos if need_pos else None,
        None,
        None,
        None,
        None,
    )


_mpe_fwd_op.register_autograd(_mpe_autograd_backward, setup_context=_mpe_setup_context)


def masked_patch_embed_triton(
    img: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
    *,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """Triton path of masked_patch_embed (same semantics as ``masked_patch_embed_ref``).

    Shapes are validated by ``fusmae_fast.ops``; here: img, weight, bias and pos share one float dtype,
    and (when img, bias or pos needs a gradient) the kept indices of a row are distinct: here in eager
    mode, in the backward op where torch.compile traced this.
    ``allow_tf32`` lets fp32 dots use TF32 on GPUs.
    """
    for name, t in (("img", img), ("weight", weight), ("bias", bias), ("pos", pos)):
        check_float(name, t)
    if not (img.dtype == weight.dtype == bias.dtype == pos.dtype):
        raise TypeError(
            "img, weight, bias and pos must share a dtype for the Triton path, got "
            f"{img.dtype}, {weight.dtype}, {bias.dtype}, {pos.dtype} (cast the parameters to img.dtype)"
        )
    if patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch}")
    check_ids = check_distinct_or_defer("ids_keep", ids_keep, grad_wanted(img, bias, pos))
    return torch.ops.fusmae_fast.masked_patch_embed_fwd(
        img, weight, bias, pos, ids_keep, int(patch), allow_tf32, check_ids
    )


# ----------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------


def masked_patch_embed_ref(
    img: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
) -> torch.Tensor:
    """Pure-torch reference: projects only the kept patches (rows with id -1 are zero)."""
    b, k = ids_keep.shape
    dim = weight.shape[0]
    flat_w = weight.reshape(dim, -1)
    valid = ids_keep >= 0
    safe = ids_keep.clamp(min=0)
    # Read only the kept patches, straight from a view of the image (no full patchify copy): indexing
    # (B, C, h, P, w, P) at [b, :, row, :, col, :] gives (B, K, C, P, P), Conv2d weight order (c, p, q).
    c_in, grid_w = img.shape[1], img.shape[3] // patch
    view = img.reshape(b, c_in, img.shape[2] // patch, patch, grid_w, patch)
    batch_idx = torch.arange(b, device=img.device)[:, None].expand(b, k)
    kept = view[batch_idx, :, safe // grid_w, :, safe % grid_w, :].reshape(b, k, c_in * patch * patch)
    if torch.compiler.is_compiling():
        # No data-dependent branch or shape under torch.compile (no graph break): project every slot
        # and zero the empty ones; torch.where sends no gradient into the unselected rows.
        full = torch.nn.functional.linear(kept, flat_w, bias) + pos[safe]
        return torch.where(valid[..., None], full, full.new_zeros(()))
    if bool(valid.all()):
        return torch.nn.functional.linear(kept, flat_w, bias) + pos[safe]
    out = kept.new_zeros(b, k, dim)
    rows = torch.nn.functional.linear(kept[valid], flat_w, bias) + pos[safe[valid]]
    return out.index_put((valid,), rows)


# ----------------------------------------------------------------------------------------------------
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------

COMPILE_PATCHES: tuple[int, ...] = (8, 16)
"""Patch sizes compiled for the masked_patch_embed kernels (PATCH is a compile-time constant): the
Fus-MAE/BigEarthNet patch (8) and ViT's 16."""


COMPILE_SHAPE: tuple[int, int, int, int, int] = (64, 12, 120, 56, 768)
"""(B, C_in, image size, K, C) of the launch the specs are compiled as: 12-band 120 x 120 images, a
quarter of the patches kept, ViT-B width, contiguous tensors (unit strides are the constant 1)."""


def compile_values(kernel: str, patch: int) -> dict[str, int]:
    """The int arguments (sizes and strides) of a launch at ``COMPILE_SHAPE`` and ``patch``."""
    B, C_in, size, K, C = COMPILE_SHAPE
    grid_w, M = size // patch, B * K
    img = torch.empty(B, C_in, size, size, device="meta").stride()
    weight = torch.empty(C, C_in, patch, patch, device="meta").stride()
    ids = (K, 1)
    tokens = (K * C, C)  # out / dout (B, K, C)
    sizes = {"K": K, "C": C, "C_IN": C_in, "GRID_W": grid_w}
    if kernel == "fwd":
        strides = (*img, *weight, 1, C, 1, *ids, *tokens)
        names = (
            "imb",
            "imc",
            "imh",
            "imw",
            "wo",
            "wc",
            "wp",
            "wq",
            "bias",
            "pn",
            "pc",
            "ib",
            "ik",
            "ob",
            "ok",
        )
        return (
            sizes
            | {"M_BUCKET": _m_bucket(M)}
            | {f"stride_{n}": v for n, v in zip(names, strides, strict=True)}
        )
    if kernel == "dimg":
        strides = (*tokens, *weight, *ids, *img)
        names = ("db", "dk", "wo", "wc", "wp", "wq", "ib", "ik", "gb", "gc", "gh", "gw")
        return (
            sizes
            | {"M_BUCKET": _m_bucket(M)}
            | {f"stride_{n}": v for n, v in zip(names, strides, strict=True)}
        )
    per = dw_splits(M, C, C_in * patch * patch)[1]
    names = ("db", "dk", "imb", "imc", "imh", "imw", "ib", "ik")
    strides = dict(zip((f"stride_{n}" for n in names), (*tokens, *img, *ids), strict=True))
    return {"M": M, **sizes, "rows_per_split": per, **strides}


def compile_specs() -> list[dict]:
    """One spec per (kernel, config, dtype, patch size, dot precision) the launchers can run."""
    specs = []
    kernels = {
        "fwd": (_mpe_fwd_kernel, {"IMG": "D", "W": "D", "BIAS": "D", "POS": "D", "IDS": "*i64", "OUT": "D"}),
        "dimg": (_mpe_dimg_kernel, {"DOUT": "D", "W": "D", "IDS": "*i64", "DIMG": "D"}),
        "dw": (_mpe_dw_kernel, {"DOUT": "D", "IMG": "D", "IDS": "*i64", "PART": "*fp32"}),
    }
    consts = ("PATCH", "BLOCK_M", "BLOCK_N", "BLOCK_R", "DOT_PRECISION")
    for dtype, tname in TL_DTYPE_NAME.items():
        esize = torch.empty((), dtype=dtype).element_size()
        precisions = ("ieee", "tf32") if dtype == torch.float32 else ("ieee",)
        for kname, (fn, ptrs) in kernels.items():
            sig = signature(fn, {k: (f"*{tname}" if v == "D" else v) for k, v in ptrs.items()}, consts)
            for patch in COMPILE_PATCHES:
                for precision in precisions:
                    if precision == "tf32" and patch != COMPILE_PATCHES[0]:
                        continue
                    for m, n, r, w, s in GEMM_CONFIGS[kname]:
                        if not any(keep_gemm(kname, (m, n, r, w, s), 768, R, esize) for R in (64, 768)):
                            continue
                        config = f"BM{m}-BN{n}-BR{r}-w{w}-s{s}-P{patch}-{precision}-{tname}"
                        values = {"PATCH": patch, "BLOCK_M": m, "BLOCK_N": n, "BLOCK_R": r}
                        values["DOT_PRECISION"] = precision
                        ints = compile_values(kname, patch)
                        specs.append(launch_spec(f"mpe_{kname}", config, fn, sig, values, ints, w, s))
    return specs
