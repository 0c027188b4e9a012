"""Decoder input in one pass: scatter kept latents to their positions, mask tokens elsewhere, + pos.

scatter_tokens
    latent (B, K, C): the kept tokens; ids_restore (B, N) int64: for each position n, the row of
    ``latent`` it takes if ``ids_restore[b, n] < K``, else the ``mask_token`` (C,). MAE's convention
    (ids_restore = argsort(ids_shuffle)) satisfies this; so does the per-modality map of Fus-MAE's
    ragged layout, where every masked position holds K. Values < K are distinct within a row.
    out[b, n] = latent[b, ids_restore[b, n]] or mask_token, then + pos[n] (pos (N, C), optional).
    Exact in every dtype (a copy, plus one add when pos is given).

The Triton path (``scatter_tokens_triton``)
    Forward: one launch over (B*N row blocks, C blocks). Each output row loads its ids_restore entry
    and copies latent[b, ids_restore[b, n]], or the mask token (cast to latent's dtype, as the
    reference does); with pos, pos[n] is added in fp32 and rounded once to the output dtype
    (torch.promote_types(latent.dtype, pos.dtype)): bit-exact with the reference, no torch.cat, no
    (B, N, C) mask-token tensor, no separate add pass.
    Backward: one launch over (N blocks, C blocks, batch splits) reads dout once: rows that took a
    latent are stored to d latent[b, ids_restore[b, n]] (plain stores: those values are distinct in a
    row; checked when latent needs a gradient: by the forward in eager mode, by the backward op under
    torch.compile), d latent rows no position took stay 0
    (one memset); d pos[n] = sum_b dout[b, n] and the masked-position sums for d mask_token are
    accumulated in fp32 registers and written per batch split to fp32 (S, N, C) buffers, then summed
    in a fixed order by the shared reduction kernels (``reductions.reduce_splits``, ``sum_rows``):
    deterministic, no atomics. d latent is exact (a copy); d pos and d mask_token are fp32 sums.
    S is chosen from the shapes only (``reductions.batch_splits``).

dtypes: fp32, fp16, bf16 (bf16 tested on CUDA only); mask_token and pos may have other float dtypes
than latent (torch's promotion rules, as the reference). Strides passed explicitly; a tensor whose
last dim is not contiguous is made contiguous once on the host. Registered with ``torch.library``
(fake implementations, autograd), so ``torch.compile`` traces it without graph breaks.

Work and traffic (B, N, K, C; e bytes per element)
    Triton forward: read B*K*C latents (only the kept rows), B*N ids, N*C pos; write B*N*C.
    Textbook MAE (cat mask tokens, gather with ids_restore, add pos): writes the (B, N, C) cat, reads
    it in the gather, writes the gathered tensor, reads it and pos for the add, writes the result:
    about 3 extra (B, N, C) passes (see bench/fusion_savings.py for the exact counts).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .compile_spec import launch_spec, signature
from .reductions import batch_splits, reduce_splits, sum_rows
from .triton_runtime import (
    TL_DTYPE_NAME,
    CopyConf,
    autotuned_copy,
    check_distinct,
    check_distinct_or_defer,
    check_float,
    compiled_copy_configs,
    copy_fields,
    grad_wanted,
    last_dim_contiguous,
    launch,
    or_empty,
)

# ----------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _scatter_fwd_kernel(
    LAT,
    IDR,
    MASK,
    POS,
    OUT,
    M,
    N,
    K,
    C,
    stride_lb,
    stride_lk,
    stride_rb,
    stride_rn,
    stride_mc,
    stride_pn,
    stride_ob,
    stride_on,
    HAS_POS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """out[b, n] = latent[b, r] if r = ids_restore[b, n] < K else mask_token; + pos[n] (fp32, one
    rounding)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < M
    c_ok = cols < C
    mask = row_ok[:, None] & c_ok[None, :]
    b = (rows // N).to(tl.int64)
    n = rows % N
    r = tl.load(IDR + b * stride_rb + n * stride_rn, mask=row_ok, other=K)
    kept = r < K
    lat = tl.load(
        LAT + (b * stride_lb + tl.where(kept, r, 0) * stride_lk)[:, None] + cols[None, :],
        mask=kept[:, None] & mask,
        other=0.0,
    )
    tok = tl.load(MASK + cols * stride_mc, mask=c_ok, other=0.0).to(LAT.dtype.element_ty)
    val = tl.where(kept[:, None], lat, tok[None, :])
    if HAS_POS:
        p = tl.load(POS + (n * stride_pn)[:, None] + cols[None, :], mask=mask, other=0.0)
        val = val.to(tl.float32) + p.to(tl.float32)
    tl.store(
        OUT + (b * stride_ob + n * stride_on)[:, None] + cols[None, :],
        val.to(OUT.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def _scatter_bwd_kernel(
    DOUT,
    IDR,
    DLAT,
    PPOS,
    PMASK,
    B,
    N,
    K,
    C,
    batch_per_split,
    stride_db,
    stride_dn,
    stride_rb,
    stride_rn,
    stride_lb,
    stride_lk,
    STORE_DLAT: tl.constexpr,
    POS_PART: tl.constexpr,
    MASK_PART: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Over the samples of one batch split, for positions n of one block: d latent[b, r] = dout[b, n]
    where r < K; partial d pos[n] = sum_b dout[b, n]; partial masked sum = sum_b [r >= K] dout[b, n]."""
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    n_ok = offs_n < N
    c_ok = cols < C
    mask = n_ok[:, None] & c_ok[None, :]
    acc_pos = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
    acc_mask = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
    b_lo = pid_s.to(tl.int64) * batch_per_split  # int64 loop bounds: 64-bit batch offsets
    b_hi = tl.minimum(B, b_lo + batch_per_split)
    for b in range(b_lo, b_hi):
        g = tl.load(
            DOUT + b * stride_db + (offs_n * stride_dn)[:, None] + cols[None, :], mask=mask, other=0.0
        )
        r = tl.load(IDR + b * stride_rb + offs_n * stride_rn, mask=n_ok, other=K)
        kept = r < K
        if STORE_DLAT:
            tl.store(
                DLAT + b * stride_lb + (tl.where(kept, r, 0) * stride_lk)[:, None] + cols[None, :],
                g.to(DLAT.dtype.element_ty),
                mask=kept[:, None] & mask,
            )
        if POS_PART:
            acc_pos += g.to(tl.float32)
        if MASK_PART:
            acc_mask += tl.where(kept[:, None], 0.0, g.to(tl.float32))
    rows = pid_s.to(tl.int64) * N + offs_n
    if POS_PART:
        tl.store(PPOS + rows[:, None] * C + cols[None, :], acc_pos, mask=mask)
    if MASK_PART:
        tl.store(PMASK + rows[:, None] * C + cols[None, :], acc_mask, mask=mask)


# ----------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------

INTERPRETER_CONFIG: dict[str, CopyConf] = {
    "scatter_fwd": (16, 32, 4),
    "scatter_bwd": (16, 32, 4),
}
"""The one config launched per kernel under ``TRITON_INTERPRET=1``."""

_scatter_fwd_tuned = autotuned_copy(_scatter_fwd_kernel, "BLOCK_M", key=["C", "HAS_POS"])
_scatter_bwd_tuned = autotuned_copy(
    _scatter_bwd_kernel, "BLOCK_N", key=["C", "STORE_DLAT", "POS_PART", "MASK_PART"]
)


# ----------------------------------------------------------------------------------------------------
# Host launchers
# ----------------------------------------------------------------------------------------------------


def _out_dtype(latent_dtype: torch.dtype, pos: torch.Tensor | None) -> torch.dtype:
    return latent_dtype if pos is None else torch.promote_types(latent_dtype, pos.dtype)


def _forward(
    latent: torch.Tensor, ids_restore: torch.Tensor, mask_token: torch.Tensor, pos: torch.Tensor | None
) -> torch.Tensor:
    B, K, C = latent.shape
    N = ids_restore.shape[1]
    out = torch.empty((B, N, C), dtype=_out_dtype(latent.dtype, pos), device=latent.device)
    if out.numel() == 0:
        return out
    latent = last_dim_contiguous(latent)
    pos_t = last_dim_contiguous(pos) if pos is not None else out
    strides = (*latent.stride()[:2], *ids_restore.stride(), mask_token.stride(0), pos_t.stride(0))
    args = (latent, ids_restore, mask_token, pos_t, out, B * N, N, K, C, *strides, *out.stride()[:2])

    def grid(m):
        return (triton.cdiv(B * N, m["BLOCK_M"]), triton.cdiv(C, m["BLOCK_C"]))

    meta = {"HAS_POS": pos is not None}
    launch(_scatter_fwd_tuned, grid, args, meta, copy_fields("BLOCK_M"), INTERPRETER_CONFIG["scatter_fwd"])
    return out


def _backward(
    dout: torch.Tensor,
    ids_restore: torch.Tensor,
    K: int,
    latent_dtype: torch.dtype | None,
    mask_dtype: torch.dtype | None,
    pos_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grads for latent / mask_token / pos; a None dtype means not needed (an empty tensor is returned)."""
    B, N, C = dout.shape
    dlat = torch.zeros((B, K, C), dtype=latent_dtype, device=dout.device) if latent_dtype else None
    reduce = pos_dtype is not None or mask_dtype is not None
    splits = batch_splits(B, N, C) if reduce else B
    per_split = triton.cdiv(B, splits) if B else 1
    splits = triton.cdiv(B, per_split)
    ppos = dout.new_zeros((splits, N, C), dtype=torch.float32) if pos_dtype else None
    pmask = dout.new_zeros((splits, N, C), dtype=torch.float32) if mask_dtype else None
    if B * N * C and (dlat is not None or reduce):
        dout = last_dim_contiguous(dout)
        outs = tuple(t if t is not None else dout for t in (dlat, ppos, pmask))
        strides = (
            *dout.stride()[:2],
            *ids_restore.stride(),
            *(dlat.stride()[:2] if dlat is not None else (0, 0)),
        )
        args = (dout, ids_restore, *outs, B, N, K, C, per_split, *strides)

        def grid(m):
            return (triton.cdiv(N, m["BLOCK_N"]), triton.cdiv(C, m["BLOCK_C"]), splits)

        meta = {"STORE_DLAT": dlat is not None, "POS_PART": ppos is not None, "MASK_PART": pmask is not None}
        launch(
            _scatter_bwd_tuned, grid, args, meta, copy_fields("BLOCK_N"), INTERPRETER_CONFIG["scatter_bwd"]
        )
    dpos = reduce_splits(ppos, pos_dtype, False)[0] if ppos is not None else None
    dmask = None
    if pmask is not None:
        rowsum = reduce_splits(pmask, None, True)[1]
        dmask = sum_rows(rowsum, mask_dtype)
    return or_empty(dout, dlat, dmask, dpos)


# ----------------------------------------------------------------------------------------------------
# torch.library registration and entry
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("fusmae_fast::scatter_tokens_fwd", mutates_args=())
def _scatter_fwd_op(
    latent: torch.Tensor,
    ids_restore: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor | None,
    check_ids: bool,
) -> torch.Tensor:
    """``check_ids``: the caller skipped the distinct-index check (traced); the backward op runs it."""
    return _forward(latent, ids_restore, mask_token, pos)


@_scatter_fwd_op.register_fake
def _scatter_fwd_fake(latent, ids_restore, mask_token, pos, check_ids):
    B, _, C = latent.shape
    return latent.new_empty((B, ids_restore.shape[1], C), dtype=_out_dtype(latent.dtype, pos))


@torch.library.custom_op("fusmae_fast::scatter_tokens_bwd", mutates_args=())
def _scatter_bwd_op(
    dout: torch.Tensor,
    ids_restore: torch.Tensor,
    K: int,
    latent_dtype: torch.dtype | None,
    mask_dtype: torch.dtype | None,
    pos_dtype: torch.dtype | None,
    check_ids: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if check_ids and latent_dtype is not None:  # the forward ran traced: its check was skipped
        check_distinct("ids_restore", ids_restore, below=K)
    return _backward(dout, ids_restore, K, latent_dtype, mask_dtype, pos_dtype)


@_scatter_bwd_op.register_fake
def _scatter_bwd_fake(dout, ids_restore, K, latent_dtype, mask_dtype, pos_dtype, check_ids):
    B, N, C = dout.shape
    dlat = dout.new_empty((B, K, C), dtype=latent_dtype) if latent_dtype else dout.new_empty((0,))
    dmask = dout.new_empty((C,), dtype=mask_dtype) if mask_dtype else dout.new_empty((0,))
    dpos = dout.new_empty((N, C), dtype=pos_dtype) if pos_dtype else dout.new_empty((0,))
    return dlat, dmask, dpos


def _setup_context(ctx, inputs, output) -> None:
    latent, ids_restore, mask_token, pos, check_ids = inputs
    ctx.save_for_backward(ids_restore)
    ctx.K = latent.shape[1]
    ctx.dtypes = (latent.dtype, mask_token.dtype, pos.dtype if pos is not None else None)
    ctx.check_ids = check_ids


def _autograd_backward(ctx, dout):
    (ids_restore,) = ctx.saved_tensors
    need_lat, _, need_mask, need_pos = ctx.needs_input_grad[:4]
    wanted = [
        d if need else None for d, need in zip(ctx.dtypes, (need_lat, need_mask, need_pos), strict=True)
    ]
    if all(d is None for d in wanted):
        return None, None, None, None, None
    dlat, dmask, dpos = _scatter_bwd_op(dout, ids_restore, ctx.K, *wanted, ctx.check_ids)
    return (
        (dlat if need_lat else None),
        None,
        (dmask if need_mask else None),
        (dpos if need_pos else None),
        None,
    )


_scatter_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def scatter_tokens_triton(
    latent: torch.Tensor,
    ids_restore: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton path of scatter_tokens (same semantics as ``scatter_tokens_ref``; exact).

    Shapes are validated by ``fusmae_fast.ops``; here: float dtypes, and (when latent needs a gradient)
    that the values < K of each ids_restore row are distinct (the atomic-free backward stores d latent
    rows without accumulation): here in eager mode, in the backward op where torch.compile traced this.
    """
    check_float("latent", latent)
    check_float("mask_token", mask_token)
    if pos is not None:
        check_float("pos", pos)
    check_ids = check_distinct_or_defer(
        "ids_restore", ids_restore, grad_wanted(latent), below=latent.shape[1]
    )
    return torch.ops.fusmae_fast.scatter_tokens_fwd(latent, ids_restore, mask_token, pos, check_ids)


# ----------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------


def scatter_tokens_ref(
    latent: torch.Tensor,
    ids_restore: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure-torch reference of scatter_tokens; differentiable in latent, mask_token and pos."""
    b, k, c = latent.shape
    n = ids_restore.shape[1]
    is_kept = (ids_restore < k)[..., None]
    if k == 0:
        out = mask_token.to(latent.dtype).expand(b, n, c)
    else:
        src = torch.gather(latent, 1, ids_restore.clamp(max=k - 1)[..., None].expand(b, n, c))
        out = torch.where(is_kept, src, mask_token.to(latent.dtype))
    if pos is not None:
        out = out + pos
    return out


# ----------------------------------------------------------------------------------------------------
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------


COMPILE_SHAPE: tuple[int, int, int, int] = (64, 225, 56, 256)
"""(B, N, K, C) of the launch the specs are compiled as: the decoder's tokens of 120 x 120 / P8 images,
a quarter kept, contiguous tensors (unit strides of ids_restore and mask_token are the constant 1)."""


def compile_values(kernel: str, store_dlat: bool = True) -> dict[str, int]:
    """The int arguments (sizes and strides) of a launch at ``COMPILE_SHAPE``."""
    B, N, K, C = COMPILE_SHAPE
    if kernel == "scatter_fwd":
        names = ("stride_lb", "stride_lk", "stride_rb", "stride_rn", "stride_mc", "stride_pn", "stride_ob")
        strides = dict(zip(names, (K * C, C, N, 1, 1, C, N * C), strict=True))
        return {"M": B * N, "N": N, "K": K, "C": C, **strides, "stride_on": C}
    per_split = triton.cdiv(B, batch_splits(B, N, C))
    lat = (K * C, C) if store_dlat else (0, 0)
    values = {
        "B": B,
        "N": N,
        "K": K,
        "C": C,
        "batch_per_split": per_split,
        "stride_db": N * C,
        "stride_dn": C,
    }
    return values | {"stride_rb": N, "stride_rn": 1, "stride_lb": lat[0], "stride_lk": lat[1]}


def compile_specs() -> list[dict]:
    """One spec per (kernel, config, dtype, variant) the launchers can run (the reductions it uses are
    listed by ``reductions``)."""
    specs = []
    confs = compiled_copy_configs()
    for tname in TL_DTYPE_NAME.values():
        ptrs = {"LAT": f"*{tname}", "IDR": "*i64", "MASK": "*fp32", "POS": f"*{tname}", "OUT": f"*{tname}"}
        sig = signature(_scatter_fwd_kernel, ptrs, ("HAS_POS", "BLOCK_M", "BLOCK_C"))
        for has_pos in (False, True):
            for r, c, w in confs:
                specs.append(
                    launch_spec(
                        "scatter_fwd",
                        f"BM{r}-BC{c}-w{w}-pos{int(has_pos)}-{tname}",
                        _scatter_fwd_kernel,
                        sig,
                        {"HAS_POS": has_pos, "BLOCK_M": r, "BLOCK_C": c},
                        compile_values("scatter_fwd"),
                        w,
                        1,
                    )
                )
        ptrs = {"DOUT": f"*{tname}", "IDR": "*i64", "DLAT": f"*{tname}", "PPOS": "*fp32", "PMASK": "*fp32"}
        sig = signature(
            _scatter_bwd_kernel, ptrs, ("STORE_DLAT", "POS_PART", "MASK_PART", "BLOCK_N", "BLOCK_C")
        )
        for flags in ((True, True, True), (True, False, True), (True, False, False), (False, True, True)):
            for r, c, w in confs:
                specs.append(
                    launch_spec(
                        "scatter_bwd",
                        f"BN{r}-BC{c}-w{w}-flags{''.join(str(int(f)) for f in flags)}-{tname}",
                        _scatter_bwd_kernel,
                        sig,
                        dict(zip(("STORE_DLAT", "POS_PART", "MASK_PART"), flags, strict=True))
                        | {"BLOCK_N": r, "BLOCK_C": c},
                        compile_values("scatter_bwd", flags[0]),
                        w,
                        1,
                    )
                )
    return specs
