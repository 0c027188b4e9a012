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

The Triton path (``gather_tokens_triton``)
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

import torch
import triton
import triton.language as tl


def patches_of(img: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C_in, H, W) -> (B, N, C_in*P*P), per patch in Conv2d weight order (c, p, q), raster patches."""
    b, c, hh, ww = img.shape
    h, w = hh // patch, ww // patch
    x = img.reshape(b, c, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, h * w, c * patch * patch)


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
    patches = patches_of(img, patch)  # a view/copy of the image, no FLOPs
    valid = ids_keep >= 0
    safe = ids_keep.clamp(min=0)
    kept = torch.gather(patches, 1, safe[..., None].expand(b, k, patches.shape[-1]))
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
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------


def signature(fn, ptrs: dict[str, str], consts: tuple[str, ...], i64: tuple[str, ...] = ()) -> dict[str, str]:
    """Triton signature of ``fn``: pointer types from ``ptrs``, constexprs, i64 ints, the rest i32."""
    sig = {}
    for name in fn.arg_names:
        if name in ptrs:
            sig[name] = ptrs[name]
        elif name in consts:
            sig[name] = "constexpr"
        elif name in i64:
            sig[name] = "i64"
        else:
            sig[name] = "i32"
    return sig


def make_spec(
    kernel: str, config: str, fn, sig: dict[str, str], constexprs: dict, warps: int, stages: int
) -> dict:
    """One compile_check spec; pointers are taken as 16-byte aligned (fresh torch allocations) and the
    row strides as multiples of 16 elements (C a multiple of 16, as in every preset)."""
    aligned = [
        n for n, t in sig.items() if t.startswith("*") or (n.startswith("stride_") and t != "constexpr")
    ]
    return {
        "kernel": kernel,
        "config": config,
        "fn": fn,
        "signature": sig,
        "constexprs": constexprs,
        "num_warps": warps,
        "num_stages": stages,
        "divisible_by_16": aligned,
    }


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


def compile_specs() -> list[dict]:
    """One spec per (kernel, config, dtype, variant) the launchers can run (for compile_check)."""
    return reduction_specs("gather") + _gather_specs()
