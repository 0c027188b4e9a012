"""Masked patch embedding and token gather: compute only the tokens MAE keeps.

masked_patch_embed
    img (B, C_in, H, W); weight (C, C_in, P, P) (Conv2d layout, Eq. 1); bias (C,); pos (N, C) with
    N = (H/P)(W/P) patches in raster order; ids_keep (B, K) int64 raster patch indices.
    out[b, j] = W . patch(img[b], ids_keep[b, j]) + bias + pos[ids_keep[b, j]].
    Ragged keeps (independent masking): an index of -1 marks an empty slot; its output row is 0 and
    it receives/propagates no gradient. Masked patches are never projected.
gather_tokens
    x (B, N, C); ids_keep (B, K) in [0, N); out[b, j] = x[b, ids_keep[b, j]] (+ pos[ids_keep[b, j]]).
    Exact (a copy, plus one add when pos is given).

The Triton path of masked_patch_embed (``masked_patch_embed_triton``)
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
        row split writes an fp32 partial (S, C, C_in*P*P) that ``sum_rows`` adds in a fixed order.
        S depends only on the shapes (``dw_splits``): deterministic.
      d pos, d bias: the inverse map of ids_keep, then the gather backward kernel without dx gives
        batch-split partials of d pos[n] = sum_b dout[b, inv[b, n]]; ``reduce_splits`` sums them and
        also the per-block column sums, which ``sum_rows`` turns into d bias = sum_n d pos[n]. No atomics.
    Limits: img, weight, bias, pos share one dtype; ids_keep distinct per row (-1 slots excepted) when
    img, bias or pos needs a gradient (checked in eager mode). Any patch size (P = 2^k gives shift/mask
    index math); any C, C_in. The GEMM configs (``_GEMM_TABLE``) are checked by compile_check for P in
    ``COMPILE_PATCHES``.

Work and traffic of masked_patch_embed (B, K kept, N patches, R = C_in*P*P, C; e bytes per element)
    FLOPs: forward 2*B*K*R*C (the textbook Conv2d over all patches: 2*B*N*R*C); backward: d weight
    2*B*K*R*C, d img 2*B*K*R*C. Bytes, forward: the kept patches' pixels B*K*R*e, W (R*C*e, cached),
    the output B*K*C*e, ids and pos rows. The textbook path also writes and re-reads the full (B, N, C)
    embedding and gathers it (see bench/fusion_savings.py for the per-step totals).

The Triton path of gather_tokens (``gather_tokens_triton``)
    Forward: one launch over (B*K row blocks, C blocks): each row loads its index, copies
    x[b, ids_keep[b, j]] and, with pos, adds pos[ids_keep[b, j]] in fp32 and rounds once to the output
    dtype (torch's type promotion of x and pos). Bit-exact with the reference: a copy, or one correctly
    rounded add.
    Backward: the indices of a row are distinct (checked in eager mode when a gradient is needed), so
    dx needs no atomics. An inverse map inv[b, n] = j (or -1), int32 (B, N), is built by one small
    scatter launch; then one launch over (N blocks, C blocks, batch splits) walks the batch and, for each
    position n, reads dout[b, inv[b, n]] (or 0): it writes every row of dx (no memset) and accumulates
    d pos[n] = sum_b dout[b, inv[b, n]] in fp32 registers. Each batch split writes its partial sum to
    an fp32 (S, N, C) buffer that a reduction launch sums in a fixed order: deterministic, no atomics.
    S (batch splits) is chosen on the host from the shapes only (enough programs to fill an sm_86 GPU,
    at least ``MIN_BATCH_PER_SPLIT`` samples per split), never from the autotuned block sizes, so the
    result does not depend on the config the autotuner picks.

Shared reductions (also used by token_scatter)
    ``reduce_splits``: out[n, c] = sum_s part[s, n, c] (fp32, fixed order) and optionally the per-block
    column sums rowsum[nb, c] = sum_{n in block nb} out[n, c]; ``sum_rows``: out[l] = sum_r part[r, l].

dtypes: fp32, fp16, bf16 (bf16 tested on CUDA only: the interpreter has no bf16); the output dtype is
torch.promote_types(x.dtype, pos.dtype). Strides: the (B, N) / (B, K) strides of every tensor are passed
explicitly; a tensor whose last dim is not contiguous is made contiguous once on the host. Offsets are
64-bit in the batch index. Under ``TRITON_INTERPRET=1`` one fixed config per kernel is launched
(``INTERPRETER_CONFIG``); on a GPU a small autotune set filtered by ``keep()``. The ops are registered
with ``torch.library`` (fake implementations and autograd), so ``torch.compile`` traces them without
graph breaks. Double backward is not supported.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from .compile_spec import compile_spec, signature


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


def gather_tokens_ref(
    x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None = None
) -> torch.Tensor:
    """Pure-torch reference of gather_tokens."""
    b, k = ids_keep.shape
    out = torch.gather(x, 1, ids_keep[..., None].expand(b, k, x.shape[-1]))
    if pos is not None:
        out = out + pos[ids_keep]
    return out


# ----------------------------------------------------------------------------------------------------
# Shared host helpers
# ----------------------------------------------------------------------------------------------------

SM_COUNT = 82
"""Streaming multiprocessors of the target GPU (RTX 3090, sm_86); sizes the batch/row splits."""
TARGET_PROGRAMS = 4 * SM_COUNT
"""Programs a reduction launch aims for (about four per SM)."""
MIN_BATCH_PER_SPLIT = 8
"""Fewest samples one batch split of a reduction over the batch walks."""
NOMINAL_TILE = (32, 64)
"""(rows, columns) tile used to size the splits (independent of the autotuned block sizes)."""

_TT_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
FLOAT_DTYPES = tuple(_TT_DTYPE)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16 for the Triton path, got {t.dtype}")


def value_checks_enabled() -> bool:
    """Host-side value checks read tensors back (a sync); inside torch.compile they are skipped."""
    return not torch.compiler.is_compiling()


def check_distinct(name: str, ids: torch.Tensor, below: int | None = None) -> None:
    """Raise if a row of ``ids`` repeats a value (only values >= 0, and < ``below`` when given, count)."""
    if ids.numel() == 0 or ids.shape[1] < 2:
        return
    live = ids >= 0
    if below is not None:
        live &= ids < below
    sentinel = -1 - torch.arange(ids.shape[1], device=ids.device)  # distinct stand-ins for dead slots
    vals = torch.where(live, ids, sentinel[None, :]).sort(dim=1).values
    if bool((vals[:, 1:] == vals[:, :-1]).any()):
        raise ValueError(
            f"{name} repeats an index within a row; the Triton backward needs distinct indices per row "
            "(MAE's ids_keep / ids_restore are permutations)"
        )


def grad_wanted(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def batch_splits(batch: int, rows: int, cols: int) -> int:
    """Batch splits of a (rows, cols)-tiled reduction over the batch: a function of the shapes only."""
    tiles = triton.cdiv(rows, NOMINAL_TILE[0]) * triton.cdiv(cols, NOMINAL_TILE[1])
    return max(1, min(triton.cdiv(TARGET_PROGRAMS, max(tiles, 1)), batch // MIN_BATCH_PER_SPLIT))


# ----------------------------------------------------------------------------------------------------
# Shared reduction kernels (fixed configs: deterministic, one writer per output element)
# ----------------------------------------------------------------------------------------------------

REDUCE_BLOCK_N = 32
REDUCE_BLOCK_C = 64
SUM_ROWS_BLOCK = 512
INVERSE_BLOCK = 256


@triton.jit
def _sum_splits_kernel(
    PART,
    OUT,
    ROWSUM,
    S,
    N,
    C,
    stride_on,
    WRITE_OUT: tl.constexpr,
    WRITE_ROWSUM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """out[n, c] = sum_s part[s, n, c] (fixed order); rowsum[pid_n, c] = sum over the block's n."""
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    mask = (offs_n < N)[:, None] & c_ok[None, :]
    acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
    n64 = N.to(tl.int64)
    for s in range(0, S):
        rows = s * n64 + offs_n
        acc += tl.load(PART + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
    if WRITE_OUT:
        tl.store(
            OUT + offs_n.to(tl.int64)[:, None] * stride_on + cols[None, :],
            acc.to(OUT.dtype.element_ty),
            mask=mask,
        )
    if WRITE_ROWSUM:
        tl.store(ROWSUM + pid_n.to(tl.int64) * C + cols, tl.sum(acc, 0), mask=c_ok)


@triton.jit
def _sum_rows_kernel(PART, OUT, R, L, BLOCK_L: tl.constexpr):
    """out[l] = sum_r part[r, l] over an fp32 (R, L) buffer, in a fixed order."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    ok = offs < L
    acc = tl.zeros([BLOCK_L], dtype=tl.float32)
    l64 = L.to(tl.int64)
    for r in range(0, R):
        acc += tl.load(PART + r * l64 + offs, mask=ok, other=0.0)
    tl.store(OUT + offs, acc.to(OUT.dtype.element_ty), mask=ok)


@triton.jit
def _inverse_kernel(IDS, INV, M, K, N, stride_ib, stride_ik, BLOCK: tl.constexpr):
    """inv[b, ids[b, j]] = j for every id >= 0 (ids distinct per row); inv is pre-filled with -1."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = rows < M
    b = (rows // K).to(tl.int64)
    j = rows % K
    idx = tl.load(IDS + b * stride_ib + j * stride_ik, mask=ok, other=-1)
    hit = ok & (idx >= 0)
    tl.store(INV + b * N + tl.where(hit, idx, 0), j.to(tl.int32), mask=hit)


def reduce_splits(
    part: torch.Tensor, out_dtype: torch.dtype | None, want_rowsum: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Sum an fp32 (S, N, C) partial buffer over S -> (N, C) in ``out_dtype`` (None: not written), and
    optionally the fp32 per-block column sums (cdiv(N, REDUCE_BLOCK_N), C) of that sum."""
    S, N, C = part.shape
    out = part.new_empty((N, C), dtype=out_dtype) if out_dtype is not None else None
    nb = triton.cdiv(N, REDUCE_BLOCK_N)
    rowsum = part.new_empty((nb, C)) if want_rowsum else None
    if N * C == 0:
        if rowsum is not None:
            rowsum.zero_()
        return out, rowsum
    _sum_splits_kernel[(nb, triton.cdiv(C, REDUCE_BLOCK_C))](
        part, out if out is not None else part, rowsum if rowsum is not None else part,
        S, N, C, C, WRITE_OUT=out is not None, WRITE_ROWSUM=want_rowsum,
        BLOCK_N=REDUCE_BLOCK_N, BLOCK_C=REDUCE_BLOCK_C, num_warps=4, num_stages=1,
    )  # fmt: skip
    return out, rowsum


def sum_rows(part: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Sum an fp32 (R, L) buffer over its rows in a fixed order -> (L,) in ``out_dtype``."""
    R, L = part.shape
    out = part.new_empty((L,), dtype=out_dtype)
    if L == 0:
        return out
    if R == 0:
        return out.zero_()
    _sum_rows_kernel[(triton.cdiv(L, SUM_ROWS_BLOCK),)](
        part, out, R, L, BLOCK_L=SUM_ROWS_BLOCK, num_warps=4, num_stages=1
    )
    return out


def inverse_map(ids: torch.Tensor, n: int) -> torch.Tensor:
    """int32 (B, n): inv[b, ids[b, j]] = j, -1 where no slot of row b holds that index."""
    B, K = ids.shape
    inv = torch.full((B, n), -1, dtype=torch.int32, device=ids.device)
    if B * K:
        _inverse_kernel[(triton.cdiv(B * K, INVERSE_BLOCK),)](
            ids, inv, B * K, K, n, *ids.stride(), BLOCK=INVERSE_BLOCK, num_warps=4, num_stages=1
        )
    return inv


# ----------------------------------------------------------------------------------------------------
# gather_tokens kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _gather_fwd_kernel(
    X,
    IDS,
    POS,
    OUT,
    M,
    K,
    C,
    stride_xb,
    stride_xn,
    stride_ib,
    stride_ik,
    stride_pn,
    stride_ob,
    stride_ok,
    HAS_POS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """out[b, j] = x[b, ids[b, j]] (+ pos[ids[b, j]] in fp32, one rounding); rows flattened as b*K + j."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < M
    mask = row_ok[:, None] & (cols < C)[None, :]
    b = (rows // K).to(tl.int64)
    j = rows % K
    idx = tl.load(IDS + b * stride_ib + j * stride_ik, mask=row_ok, other=0)
    val = tl.load(X + (b * stride_xb + idx * stride_xn)[:, None] + cols[None, :], mask=mask, other=0.0)
    if HAS_POS:
        p = tl.load(POS + (idx * stride_pn)[:, None] + cols[None, :], mask=mask, other=0.0)
        val = val.to(tl.float32) + p.to(tl.float32)
    tl.store(
        OUT + (b * stride_ob + j * stride_ok)[:, None] + cols[None, :],
        val.to(OUT.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def _gather_bwd_kernel(
    DOUT,
    INV,
    DX,
    PART,
    B,
    N,
    C,
    batch_per_split,
    stride_db,
    stride_dk,
    stride_xb,
    stride_xn,
    STORE_DX: tl.constexpr,
    HAS_PART: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """For positions n of one block, over the samples of one batch split: g = dout[b, inv[b, n]] or 0;
    dx[b, n] = g (every row written); part[split, n] = sum_b g (fp32)."""
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    n_ok = offs_n < N
    c_ok = cols < C
    mask = n_ok[:, None] & c_ok[None, :]
    acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
    b_lo = pid_s.to(tl.int64) * batch_per_split  # int64 loop bounds: 64-bit batch offsets
    b_hi = tl.minimum(B, b_lo + batch_per_split)
    for b64 in range(b_lo, b_hi):
        j = tl.load(INV + b64 * N + offs_n, mask=n_ok, other=-1)
        hit = j >= 0
        g = tl.load(
            DOUT + b64 * stride_db + (tl.where(hit, j, 0).to(tl.int64) * stride_dk)[:, None] + cols[None, :],
            mask=hit[:, None] & c_ok[None, :],
            other=0.0,
        )
        if STORE_DX:
            tl.store(
                DX + b64 * stride_xb + (offs_n.to(tl.int64) * stride_xn)[:, None] + cols[None, :],
                g.to(DX.dtype.element_ty),
                mask=mask,
            )
        if HAS_PART:
            acc += g.to(tl.float32)
    if HAS_PART:
        rows = pid_s.to(tl.int64) * N + offs_n
        tl.store(PART + rows[:, None] * C + cols[None, :], acc, mask=mask)


# ----------------------------------------------------------------------------------------------------
# Configs: autotune sets, keep() filters, interpreter configs
# ----------------------------------------------------------------------------------------------------

CopyConf = tuple[int, int, int]
"""(BLOCK rows, BLOCK_C columns, num_warps) of the memory-bound copy kernels (num_stages 1)."""

COPY_CONFIGS: tuple[CopyConf, ...] = ((32, 64, 4), (16, 128, 4), (64, 64, 8), (32, 128, 8), (16, 32, 2))
"""Autotune set of gather_fwd / gather_bwd (and token_scatter's kernels)."""


def keep_copy(conf: CopyConf, C: int) -> bool:
    """keep(): column blocks no wider than C rounded up (>= 32); narrow configs only for narrow C."""
    rows, block_c, warps = conf
    width = max(32, triton.next_power_of_2(max(C, 1)))
    if block_c > width:
        return False
    return block_c >= 64 or width <= 32


INTERPRETER_CONFIG: dict[str, tuple[int, ...]] = {
    "gather_fwd": (16, 32, 4),
    "gather_bwd": (16, 32, 4),
}
"""The one config launched per kernel under ``TRITON_INTERPRET=1`` (small blocks: partial tiles)."""


def copy_triton_configs(rows_name: str) -> list[triton.Config]:
    return [
        triton.Config({rows_name: r, "BLOCK_C": c}, num_warps=w, num_stages=1) for r, c, w in COPY_CONFIGS
    ]


def copy_prune(rows_name: str):
    def prune(configs, named_args, **kwargs):
        C = named_args["C"]
        kept = [c for c in configs if keep_copy((c.kwargs[rows_name], c.kwargs["BLOCK_C"], c.num_warps), C)]
        return kept or configs[:1]

    return prune


_gather_fwd_tuned = triton.autotune(
    copy_triton_configs("BLOCK_M"),
    key=["C", "HAS_POS"],
    prune_configs_by={"early_config_prune": copy_prune("BLOCK_M")},
)(_gather_fwd_kernel)
_gather_bwd_tuned = triton.autotune(
    copy_triton_configs("BLOCK_N"),
    key=["C", "STORE_DX", "HAS_PART"],
    prune_configs_by={"early_config_prune": copy_prune("BLOCK_N")},
)(_gather_bwd_kernel)


def launch_copy(tuned, raw, rows_name: str, grid_fn, args: tuple, meta: dict, interp: CopyConf) -> None:
    """Launch a copy-style kernel: the autotuned one on a GPU, the fixed ``interp`` config (rows,
    BLOCK_C, num_warps) under the interpreter."""
    if interpreting():
        r, c, w = interp
        raw[grid_fn({rows_name: r, "BLOCK_C": c})](
            *args, **{rows_name: r}, BLOCK_C=c, num_warps=w, num_stages=1, **meta
        )
        return
    tuned[grid_fn](*args, **meta)


# ----------------------------------------------------------------------------------------------------
# gather_tokens host launchers
# ----------------------------------------------------------------------------------------------------


def _gather_forward(x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    B, N, C = x.shape
    K = ids_keep.shape[1]
    out_dtype = x.dtype if pos is None else torch.promote_types(x.dtype, pos.dtype)
    out = torch.empty((B, K, C), dtype=out_dtype, device=x.device)
    if out.numel() == 0:
        return out
    x = last_dim_contiguous(x)
    pos_t = last_dim_contiguous(pos) if pos is not None else x
    args = (
        x, ids_keep, pos_t, out, B * K, K, C, x.stride(0), x.stride(1), *ids_keep.stride(),
        pos_t.stride(0), out.stride(0), out.stride(1),
    )  # fmt: skip

    def grid(m):
        return (triton.cdiv(B * K, m["BLOCK_M"]), triton.cdiv(C, m["BLOCK_C"]))

    meta = {"HAS_POS": pos is not None}
    launch_copy(
        _gather_fwd_tuned, _gather_fwd_kernel, "BLOCK_M", grid, args, meta, INTERPRETER_CONFIG["gather_fwd"]
    )
    return out


def scattered_rows_sum(
    dout: torch.Tensor, inv: torch.Tensor, dx: torch.Tensor | None, want_sum: bool
) -> torch.Tensor | None:
    """Run the gather backward kernel: dx[b, n] = dout[b, inv[b, n]] (or 0) when ``dx`` is given, and
    return the fp32 (S, N, C) partials of sum_b dout[b, inv[b, n]] when ``want_sum``."""
    B, N = inv.shape
    C = dout.shape[2]
    splits = batch_splits(B, N, C) if want_sum else B
    per_split = triton.cdiv(B, splits)
    splits = triton.cdiv(B, per_split) if B else 0
    part = dout.new_empty((splits, N, C), dtype=torch.float32) if want_sum else None
    if B * N * C == 0:
        return part.zero_() if part is not None else None
    dout = last_dim_contiguous(dout)
    args = (
        dout, inv, dx if dx is not None else dout, part if part is not None else dout, B, N, C, per_split,
        dout.stride(0), dout.stride(1), *(dx.stride()[:2] if dx is not None else (0, 0)),
    )  # fmt: skip

    def grid(m):
        return (triton.cdiv(N, m["BLOCK_N"]), triton.cdiv(C, m["BLOCK_C"]), splits)

    meta = {"STORE_DX": dx is not None, "HAS_PART": want_sum}
    launch_copy(
        _gather_bwd_tuned, _gather_bwd_kernel, "BLOCK_N", grid, args, meta, INTERPRETER_CONFIG["gather_bwd"]
    )
    return part


def _gather_backward(
    dout: torch.Tensor,
    ids_keep: torch.Tensor,
    n: int,
    x_dtype: torch.dtype,
    need_x: bool,
    pos_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, K, C = dout.shape
    inv = inverse_map(ids_keep, n)
    dx = dout.new_empty((B, n, C), dtype=x_dtype) if need_x else None
    part = scattered_rows_sum(dout, inv, dx, pos_dtype is not None)
    dpos = reduce_splits(part, pos_dtype, False)[0] if part is not None else None
    # unneeded grads come back as distinct empty tensors (custom-op outputs may not alias each other)
    return (dx if dx is not None else dout.new_empty((0,))), (
        dpos if dpos is not None else dout.new_empty((0,))
    )


# ----------------------------------------------------------------------------------------------------
# gather_tokens: torch.library registration and entry
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("fusmae_fast::gather_tokens_fwd", mutates_args=())
def _gather_fwd_op(x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return _gather_forward(x, ids_keep, pos)


@_gather_fwd_op.register_fake
def _gather_fwd_fake(x, ids_keep, pos):
    dtype = x.dtype if pos is None else torch.promote_types(x.dtype, pos.dtype)
    return x.new_empty((x.shape[0], ids_keep.shape[1], x.shape[2]), dtype=dtype)


@torch.library.custom_op("fusmae_fast::gather_tokens_bwd", mutates_args=())
def _gather_bwd_op(
    dout: torch.Tensor,
    ids_keep: torch.Tensor,
    n: int,
    x_dtype: torch.dtype,
    need_x: bool,
    pos_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _gather_backward(dout, ids_keep, n, x_dtype, need_x, pos_dtype)


@_gather_bwd_op.register_fake
def _gather_bwd_fake(dout, ids_keep, n, x_dtype, need_x, pos_dtype):
    B, K, C = dout.shape
    dx = dout.new_empty((B, n, C), dtype=x_dtype) if need_x else dout.new_empty((0,))
    dpos = dout.new_empty((n, C), dtype=pos_dtype) if pos_dtype is not None else dout.new_empty((0,))
    return dx, dpos


def _gather_setup_context(ctx, inputs, output) -> None:
    x, ids_keep, pos = inputs
    ctx.save_for_backward(ids_keep)
    ctx.n = x.shape[1]
    ctx.x_dtype = x.dtype
    ctx.pos_dtype = pos.dtype if pos is not None else None


def _gather_autograd_backward(ctx, dout):
    (ids_keep,) = ctx.saved_tensors
    need_x, _, need_pos = ctx.needs_input_grad
    pos_dtype = ctx.pos_dtype if need_pos else None
    if not (need_x or need_pos):
        return None, None, None
    dx, dpos = _gather_bwd_op(dout, ids_keep, ctx.n, ctx.x_dtype, need_x, pos_dtype)
    return (dx if need_x else None), None, (dpos if need_pos else None)


_gather_fwd_op.register_autograd(_gather_autograd_backward, setup_context=_gather_setup_context)


def gather_tokens_triton(
    x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None = None
) -> torch.Tensor:
    """Triton path of gather_tokens (same semantics as ``gather_tokens_ref``; exact).

    Shapes are validated by ``fusmae_fast.ops``; here: float dtypes, and (eager mode, when a gradient
    will be needed) distinct indices per row, which the atomic-free backward relies on.
    """
    check_float("x", x)
    if pos is not None:
        check_float("pos", pos)
    if grad_wanted(x, pos) and value_checks_enabled():
        check_distinct("ids_keep", ids_keep)
    return torch.ops.fusmae_fast.gather_tokens_fwd(x, ids_keep, pos)


# ----------------------------------------------------------------------------------------------------
# masked_patch_embed kernels: im2col on the fly, GEMMs over the kept rows only
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
# masked_patch_embed configs
# ----------------------------------------------------------------------------------------------------

GemmConf = tuple[int, int, int, int, int]
"""(BLOCK_M rows, BLOCK_N embedding columns, BLOCK_R patch-pixel columns, num_warps, num_stages).
fwd: program = BLOCK_M rows x BLOCK_N columns, reduction over r. dimg: BLOCK_M rows x BLOCK_R pixels,
reduction over the embedding in BLOCK_N steps. dw: BLOCK_N x BLOCK_R of d weight, reduction over rows
in BLOCK_M steps."""

SPLIT_ROW_ALIGN = 128
"""d weight row splits start at multiples of this (>= every BLOCK_M of the set)."""
MIN_ROWS_PER_SPLIT = 256
"""Fewest rows one d weight split reduces over."""


def _always(C: int, R: int) -> bool:
    return True


def _wide(C: int, R: int) -> bool:  # both GEMM extents at least 128: big tiles are not mostly padding
    return C >= 128 and R >= 128


_GEMM_TABLE: dict[tuple[str, int], tuple[tuple[GemmConf, Callable[[int, int], bool]], ...]] = {
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
        ((64, 64, 64, 4, 2), _always),
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
}

GEMM_CONFIGS: dict[str, tuple[GemmConf, ...]] = {
    kernel: tuple(dict.fromkeys(c for (k, _), rows in _GEMM_TABLE.items() if k == kernel for c, _ in rows))
    for kernel in ("fwd", "dimg", "dw")
}
"""Every config of the masked_patch_embed autotune set per kernel."""


def keep_gemm(kernel: str, conf: GemmConf, C: int, R: int, esize: int) -> bool:
    """keep(): may the autotuner try ``conf`` for this kernel, embedding width C, patch size R and
    element size?"""
    group = 4 if esize >= 4 else 2
    return any(c == conf and pred(C, R) for c, pred in _GEMM_TABLE[(kernel, group)])


def kept_gemm_configs(kernel: str, C: int, R: int, esize: int) -> list[GemmConf]:
    return [c for c in GEMM_CONFIGS[kernel] if keep_gemm(kernel, c, C, R, esize)]


MPE_INTERPRETER_CONFIG: dict[str, GemmConf] = {
    "fwd": (64, 32, 128, 4, 1),
    "dimg": (64, 32, 128, 4, 1),
    "dw": (64, 32, 128, 4, 1),
}
"""The config launched under ``TRITON_INTERPRET=1``: large blocks (the interpreter's cost is per
operation, not per element); the tests also run small ones (partial blocks along every axis)."""


def _gemm_prune(kernel: str, tensor_arg: str):
    def prune(configs, named_args, **kwargs):
        esize = named_args[tensor_arg].element_size()
        R = named_args["C_IN"] * kwargs.get("PATCH", named_args.get("PATCH")) ** 2
        kept = [
            cfg
            for cfg in configs
            if keep_gemm(
                kernel,
                (
                    cfg.kwargs["BLOCK_M"],
                    cfg.kwargs["BLOCK_N"],
                    cfg.kwargs["BLOCK_R"],
                    cfg.num_warps,
                    cfg.num_stages,
                ),
                named_args["C"],
                R,
                esize,
            )
        ]
        return kept or configs[:1]

    return prune


def _gemm_triton_configs(kernel: str) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_R": r}, num_warps=w, num_stages=s)
        for m, n, r, w, s in GEMM_CONFIGS[kernel]
    ]


_mpe_fwd_tuned = triton.autotune(
    _gemm_triton_configs("fwd"),
    key=["C", "C_IN", "M_BUCKET", "PATCH", "DOT_PRECISION"],
    prune_configs_by={"early_config_prune": _gemm_prune("fwd", "IMG")},
)(_mpe_fwd_kernel)
_mpe_dimg_tuned = triton.autotune(
    _gemm_triton_configs("dimg"),
    key=["C", "C_IN", "M_BUCKET", "PATCH", "DOT_PRECISION"],
    prune_configs_by={"early_config_prune": _gemm_prune("dimg", "DOUT")},
)(_mpe_dimg_kernel)
_mpe_dw_tuned = triton.autotune(
    _gemm_triton_configs("dw"),
    key=["C", "C_IN", "rows_per_split", "PATCH", "DOT_PRECISION"],
    prune_configs_by={"early_config_prune": _gemm_prune("dw", "DOUT")},
)(_mpe_dw_kernel)


def _launch_gemm(kernel: str, tuned, raw, grid_fn, args: tuple, meta: dict) -> None:
    if interpreting():
        m, n, r, w, s = MPE_INTERPRETER_CONFIG[kernel]
        blocks = {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_R": r}
        raw[grid_fn(blocks)](*args, **blocks, num_warps=w, num_stages=s, **meta)
        return
    tuned[grid_fn](*args, **meta)


def _m_bucket(M: int) -> int:
    return min(1 << 16, triton.next_power_of_2(max(M, 16)))


def _precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    return "tf32" if (dtype == torch.float32 and allow_tf32) else "ieee"


def dw_splits(M: int, C: int, R: int) -> tuple[int, int]:
    """(splits, rows per split) of the d weight reduction over M rows; a function of the shapes only."""
    if M == 0:
        return 0, SPLIT_ROW_ALIGN
    tiles = triton.cdiv(C, 64) * triton.cdiv(R, 64)
    want = max(1, min(triton.cdiv(TARGET_PROGRAMS, tiles), triton.cdiv(M, MIN_ROWS_PER_SPLIT)))
    per = triton.cdiv(triton.cdiv(M, want), SPLIT_ROW_ALIGN) * SPLIT_ROW_ALIGN
    return triton.cdiv(M, per), per


# ----------------------------------------------------------------------------------------------------
# masked_patch_embed host launchers
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
    args = (
        img, weight, bias, pos, ids_keep, out, K, C, C_in, W // patch, _m_bucket(M), *img.stride(),
        *weight.stride(), bias.stride(0), *pos.stride(), *ids_keep.stride(), out.stride(0), out.stride(1),
    )  # fmt: skip

    def grid(m):
        return (B * triton.cdiv(K, m["BLOCK_M"]), triton.cdiv(C, m["BLOCK_N"]))

    meta = {"PATCH": patch, "DOT_PRECISION": _precision(img.dtype, allow_tf32)}
    _launch_gemm("fwd", _mpe_fwd_tuned, _mpe_fwd_kernel, grid, args, meta)
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
    meta = {"PATCH": patch, "DOT_PRECISION": _precision(img.dtype, allow_tf32)}
    dimg = dw = dbias = dpos = None
    if need_img:
        dimg = torch.zeros((B, C_in, H, W), dtype=img.dtype, device=img.device)  # masked patches stay 0
        if M * C:
            args = (
                dout, weight, ids_keep, dimg, K, C, C_in, W // patch, _m_bucket(M), dout.stride(0),
                dout.stride(1), *weight.stride(), *ids_keep.stride(), *dimg.stride(),
            )  # fmt: skip

            def grid_dimg(m):
                return (B * triton.cdiv(K, m["BLOCK_M"]), triton.cdiv(R, m["BLOCK_R"]))

            _launch_gemm("dimg", _mpe_dimg_tuned, _mpe_dimg_kernel, grid_dimg, args, meta)
    if need_weight:
        splits, per = dw_splits(M, C, R)
        part = torch.zeros((max(splits, 1), C, R), dtype=torch.float32, device=img.device)
        if M * C:
            args = (
                dout, img, ids_keep, part, M, K, C, C_in, W // patch, per, dout.stride(0), dout.stride(1),
                *img.stride(), *ids_keep.stride(),
            )  # fmt: skip

            def grid_dw(m):
                return (triton.cdiv(C, m["BLOCK_N"]), triton.cdiv(R, m["BLOCK_R"]), splits)

            _launch_gemm("dw", _mpe_dw_tuned, _mpe_dw_kernel, grid_dw, args, meta)
        dw = sum_rows(part.reshape(part.shape[0], C * R), weight.dtype).reshape(weight.shape)
    if bias_dtype is not None or pos_dtype is not None:
        inv = inverse_map(ids_keep, n)
        part = scattered_rows_sum(dout, inv, None, True)
        dpos, rowsum = reduce_splits(part, pos_dtype, bias_dtype is not None)
        if bias_dtype is not None:
            dbias = sum_rows(rowsum, bias_dtype)
    # unneeded grads come back as distinct empty tensors (custom-op outputs may not alias each other)
    return tuple(t if t is not None else dout.new_empty((0,)) for t in (dimg, dw, dbias, dpos))


# ----------------------------------------------------------------------------------------------------
# masked_patch_embed: torch.library registration and entry
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
) -> torch.Tensor:
    return _mpe_forward(img, weight, bias, pos, ids_keep, patch, allow_tf32)


@_mpe_fwd_op.register_fake
def _mpe_fwd_fake(img, weight, bias, pos, ids_keep, patch, allow_tf32):
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _mpe_backward(
        dout, img, weight, ids_keep, patch, n, need_img, need_weight, bias_dtype, pos_dtype, allow_tf32
    )


@_mpe_bwd_op.register_fake
def _mpe_bwd_fake(
    dout, img, weight, ids_keep, patch, n, need_img, need_weight, bias_dtype, pos_dtype, allow_tf32
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
    img, weight, bias, pos, ids_keep, patch, allow_tf32 = inputs
    ctx.save_for_backward(img, weight, ids_keep)
    ctx.patch = patch
    ctx.n = pos.shape[0]
    ctx.dtypes = (bias.dtype, pos.dtype)
    ctx.allow_tf32 = allow_tf32


def _mpe_autograd_backward(ctx, dout):
    img, weight, ids_keep = ctx.saved_tensors
    need_img, need_w, need_b, need_pos = ctx.needs_input_grad[:4]
    if not (need_img or need_w or need_b or need_pos):
        return None, None, None, None, None, None, None
    dimg, dw, dbias, dpos = _mpe_bwd_op(
        dout, img, weight, ids_keep, ctx.patch, ctx.n, need_img, need_w,
        ctx.dtypes[0] if need_b else None, ctx.dtypes[1] if need_pos else None, ctx.allow_tf32,
    )  # fmt: skip
    return (
        dimg if need_img else None,
        dw if need_w else None,
        dbias if need_b else None,
        dpos if need_pos else None,
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
    and (eager mode, when img, bias or pos needs a gradient) the kept indices of a row are distinct.
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
    if grad_wanted(img, bias, pos) and value_checks_enabled():
        check_distinct("ids_keep", ids_keep)
    return torch.ops.fusmae_fast.masked_patch_embed_fwd(
        img, weight, bias, pos, ids_keep, int(patch), allow_tf32
    )


# ----------------------------------------------------------------------------------------------------
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------


def make_spec(
    kernel: str, config: str, fn, sig: dict[str, str], constexprs: dict, warps: int, stages: int
) -> dict:
    """One compile_check spec; pointers are taken as 16-byte aligned (fresh torch allocations) and the
    row strides as multiples of 16 elements (C a multiple of 16, as in every preset)."""
    aligned = [
        n for n, t in sig.items() if t.startswith("*") or (n.startswith("stride_") and t != "constexpr")
    ]
    return compile_spec(
        kernel, config, fn, sig, constexprs, num_warps=warps, num_stages=stages, divisible_by_16=aligned
    )


COMPILE_WIDTHS: tuple[int, ...] = (32, 256, 768)
"""Token widths C whose kept copy configs are compiled: narrow (<= 32), the decoder (256) and the ViT-B
encoder (768) widths. The width only selects which configs keep() lets through (the kernels are
C-generic), so together these cover every config of the autotune set."""


def reduction_specs(prefix: str) -> list[dict]:
    """Specs of the shared reduction kernels (listed once, by token_gather)."""
    specs = []
    for tname in ("fp32", "fp16", "bf16"):
        sig = signature(
            _sum_splits_kernel,
            {"PART": "*fp32", "OUT": f"*{tname}", "ROWSUM": "*fp32"},
            ("WRITE_OUT", "WRITE_ROWSUM", "BLOCK_N", "BLOCK_C"),
        )
        for write_out, write_rowsum in ((True, False), (True, True), (False, True)):
            specs.append(
                make_spec(
                    f"{prefix}_sum_splits",
                    f"BN{REDUCE_BLOCK_N}-BC{REDUCE_BLOCK_C}-out{int(write_out)}-rowsum{int(write_rowsum)}-{tname}",
                    _sum_splits_kernel,
                    sig,
                    {"WRITE_OUT": write_out, "WRITE_ROWSUM": write_rowsum, "BLOCK_N": REDUCE_BLOCK_N,
                     "BLOCK_C": REDUCE_BLOCK_C},
                    4,
                    1,
                )
            )  # fmt: skip
        sig = signature(_sum_rows_kernel, {"PART": "*fp32", "OUT": f"*{tname}"}, ("BLOCK_L",))
        specs.append(
            make_spec(
                f"{prefix}_sum_rows", f"BL{SUM_ROWS_BLOCK}-{tname}", _sum_rows_kernel, sig,
                {"BLOCK_L": SUM_ROWS_BLOCK}, 4, 1,
            )
        )  # fmt: skip
    sig = signature(_inverse_kernel, {"IDS": "*i64", "INV": "*i32"}, ("BLOCK",))
    specs.append(
        make_spec(
            f"{prefix}_inverse", f"B{INVERSE_BLOCK}", _inverse_kernel, sig, {"BLOCK": INVERSE_BLOCK}, 4, 1
        )
    )
    return specs


def kept_copy_configs(C: int) -> list[CopyConf]:
    return [c for c in COPY_CONFIGS if keep_copy(c, C)]


def _gather_specs() -> list[dict]:
    specs = []
    for tname in _TT_DTYPE.values():
        confs = sorted({c for width in COMPILE_WIDTHS for c in kept_copy_configs(width)})
        for has_pos in (False, True):
            sig = signature(
                _gather_fwd_kernel,
                {"X": f"*{tname}", "IDS": "*i64", "POS": f"*{tname}", "OUT": f"*{tname}"},
                ("HAS_POS", "BLOCK_M", "BLOCK_C"),
            )
            for r, c, w in confs:
                specs.append(
                    make_spec(
                        "gather_fwd", f"BM{r}-BC{c}-w{w}-pos{int(has_pos)}-{tname}", _gather_fwd_kernel, sig,
                        {"HAS_POS": has_pos, "BLOCK_M": r, "BLOCK_C": c}, w, 1,
                    )
                )  # fmt: skip
        sig = signature(
            _gather_bwd_kernel,
            {"DOUT": f"*{tname}", "INV": "*i32", "DX": f"*{tname}", "PART": "*fp32"},
            ("STORE_DX", "HAS_PART", "BLOCK_N", "BLOCK_C"),
        )
        for store_dx, has_part in ((True, False), (True, True), (False, True)):
            for r, c, w in confs:
                specs.append(
                    make_spec(
                        "gather_bwd", f"BN{r}-BC{c}-w{w}-dx{int(store_dx)}-part{int(has_part)}-{tname}",
                        _gather_bwd_kernel, sig,
                        {"STORE_DX": store_dx, "HAS_PART": has_part, "BLOCK_N": r, "BLOCK_C": c}, w, 1,
                    )
                )  # fmt: skip
    return specs


COMPILE_PATCHES: tuple[int, ...] = (8, 16)
"""Patch sizes compiled for the masked_patch_embed kernels (PATCH is a compile-time constant): the
Fus-MAE/BigEarthNet patch (8) and ViT's 16."""


def _mpe_specs() -> list[dict]:
    specs = []
    kernels = {
        "fwd": (_mpe_fwd_kernel, {"IMG": "D", "W": "D", "BIAS": "D", "POS": "D", "IDS": "*i64", "OUT": "D"}),
        "dimg": (_mpe_dimg_kernel, {"DOUT": "D", "W": "D", "IDS": "*i64", "DIMG": "D"}),
        "dw": (_mpe_dw_kernel, {"DOUT": "D", "IMG": "D", "IDS": "*i64", "PART": "*fp32"}),
    }
    consts = ("PATCH", "BLOCK_M", "BLOCK_N", "BLOCK_R", "DOT_PRECISION")
    for dtype, tname in _TT_DTYPE.items():
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
                        specs.append(make_spec(f"mpe_{kname}", config, fn, sig, values, w, s))
    return specs


def compile_specs() -> list[dict]:
    """One spec per (kernel, config, dtype, variant) the launchers can run (for compile_check)."""
    return reduction_specs("gather") + _gather_specs() + _mpe_specs()
