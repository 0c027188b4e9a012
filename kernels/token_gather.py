"""Token gather: the tokens MAE keeps, x[b, ids_keep[b, j]] (+ pos), exact, with an atomic-free backward.

gather_tokens
    x (B, N, C); ids_keep (B, K) int64 in [0, N); pos (N, C), optional.
    out[b, j] = x[b, ids_keep[b, j]] (+ pos[ids_keep[b, j]]). Exact (a copy, plus one add when pos is
    given). The output dtype is torch.promote_types(x.dtype, pos.dtype).

The Triton path (``gather_tokens_triton``)
    Forward: one launch over (B*K row blocks, C blocks): each row loads its index, copies
    x[b, ids_keep[b, j]] and, with pos, adds pos[ids_keep[b, j]] in fp32 and rounds once to the output
    dtype (torch's type promotion of x and pos). Bit-exact with the reference: a copy, or one correctly
    rounded add.
    Backward: the indices of a row are distinct (checked when a gradient is needed: by the forward in
    eager mode, by the backward op under torch.compile), so
    dx needs no atomics. An inverse map inv[b, n] = j (or -1), int32 (B, N), is built by one small
    scatter launch (``reductions.inverse_map``); then one launch over (N blocks, C blocks, batch splits)
    walks the batch and, for each position n, reads dout[b, inv[b, n]] (or 0): it writes every row of
    dx (no memset) and accumulates d pos[n] = sum_b dout[b, inv[b, n]] in fp32 registers. Each batch
    split writes its partial sum to an fp32 (S, N, C) buffer that ``reductions.reduce_splits`` sums in
    a fixed order: deterministic, no atomics. S (batch splits) is chosen on the host from the shapes
    only (``reductions.batch_splits``), never from the autotuned block sizes, so the result does not
    depend on the config the autotuner picks. masked_patch_embed's d pos and d bias use the same
    backward kernel without dx (``scattered_rows_sum``).

dtypes: fp32, fp16, bf16 (bf16 tested on CUDA only: the interpreter has no bf16). Strides: the (B, N) /
(B, K) strides of every tensor are passed explicitly; a tensor whose last dim is not contiguous is made
contiguous once on the host. Offsets are 64-bit in the batch index. Under ``TRITON_INTERPRET=1`` one
fixed config per kernel is launched (``INTERPRETER_CONFIG``); on a GPU the copy autotune set of
``triton_runtime`` filtered by ``keep_copy()``. The op is registered with ``torch.library`` (fake
implementations and autograd), so ``torch.compile`` traces it without graph breaks. Double backward is
not supported.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .compile_spec import launch_spec, signature
from .reductions import batch_splits, inverse_map, reduce_splits
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
# Kernels
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
# Configs: the copy autotune set (triton_runtime), the interpreter's configs
# ----------------------------------------------------------------------------------------------------

INTERPRETER_CONFIG: dict[str, CopyConf] = {
    "gather_fwd": (16, 32, 4),
    "gather_bwd": (16, 32, 4),
}
"""The one config launched per kernel under ``TRITON_INTERPRET=1`` (small blocks: partial tiles)."""

_gather_fwd_tuned = autotuned_copy(_gather_fwd_kernel, "BLOCK_M", key=["C", "HAS_POS"])
_gather_bwd_tuned = autotuned_copy(_gather_bwd_kernel, "BLOCK_N", key=["C", "STORE_DX", "HAS_PART"])


# ----------------------------------------------------------------------------------------------------
# Host launchers
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
    strides = (*x.stride()[:2], *ids_keep.stride(), pos_t.stride(0), *out.stride()[:2])
    args = (x, ids_keep, pos_t, out, B * K, K, C, *strides)

    def grid(m):
        return (triton.cdiv(B * K, m["BLOCK_M"]), triton.cdiv(C, m["BLOCK_C"]))

    meta = {"HAS_POS": pos is not None}
    launch(_gather_fwd_tuned, grid, args, meta, copy_fields("BLOCK_M"), INTERPRETER_CONFIG["gather_fwd"])
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
    dx_t = dx if dx is not None else dout
    part_t = part if part is not None else dout
    strides = (*dout.stride()[:2], *(dx.stride()[:2] if dx is not None else (0, 0)))
    args = (dout, inv, dx_t, part_t, B, N, C, per_split, *strides)

    def grid(m):
        return (triton.cdiv(N, m["BLOCK_N"]), triton.cdiv(C, m["BLOCK_C"]), splits)

    meta = {"STORE_DX": dx is not None, "HAS_PART": want_sum}
    launch(_gather_bwd_tuned, grid, args, meta, copy_fields("BLOCK_N"), INTERPRETER_CONFIG["gather_bwd"])
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
    return or_empty(dout, dx, dpos)


# ----------------------------------------------------------------------------------------------------
# torch.library registration and entry
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("fusmae_fast::gather_tokens_fwd", mutates_args=())
def _gather_fwd_op(
    x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None, check_ids: bool
) -> torch.Tensor:
    """``check_ids``: the caller skipped the distinct-index check (traced); the backward op runs it."""
    return _gather_forward(x, ids_keep, pos)


@_gather_fwd_op.register_fake
def _gather_fwd_fake(x, ids_keep, pos, check_ids):
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
    check_ids: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if check_ids:  # the forward ran traced: its check was skipped
        check_distinct("ids_keep", ids_keep)
    return _gather_backward(dout, ids_keep, n, x_dtype, need_x, pos_dtype)


@_gather_bwd_op.register_fake
def _gather_bwd_fake(dout, ids_keep, n, x_dtype, need_x, pos_dtype, check_ids):
    B, K, C = dout.shape
    dx = dout.new_empty((B, n, C), dtype=x_dtype) if need_x else dout.new_empty((0,))
    dpos = dout.new_empty((n, C), dtype=pos_dtype) if pos_dtype is not None else dout.new_empty((0,))
    return dx, dpos


def _gather_setup_context(ctx, inputs, output) -> None:
    x, ids_keep, pos, check_ids = inputs
    ctx.save_for_backward(ids_keep)
    ctx.n = x.shape[1]
    ctx.x_dtype = x.dtype
    ctx.pos_dtype = pos.dtype if pos is not None else None
    ctx.check_ids = check_ids


def _gather_autograd_backward(ctx, dout):
    (ids_keep,) = ctx.saved_tensors
    need_x, _, need_pos = ctx.needs_input_grad[:3]
    pos_dtype = ctx.pos_dtype if need_pos else None
    if not (need_x or need_pos):
        return None, None, None, None
    dx, dpos = _gather_bwd_op(dout, ids_keep, ctx.n, ctx.x_dtype, need_x, pos_dtype, ctx.check_ids)
    return (dx if need_x else None), None, (dpos if need_pos else None), None


_gather_fwd_op.register_autograd(_gather_autograd_backward, setup_context=_gather_setup_context)


def gather_tokens_triton(
    x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None = None
) -> torch.Tensor:
    """Triton path of gather_tokens (same semantics as ``gather_tokens_ref``; exact).

    Shapes are validated by ``fusmae_fast.ops``; here: float dtypes, and (when a gradient will be
    needed) distinct indices per row, which the atomic-free backward relies on: here in eager mode, in
    the backward op where torch.compile traced this.
    """
    check_float("x", x)
    if pos is not None:
        check_float("pos", pos)
    check_ids = check_distinct_or_defer("ids_keep", ids_keep, grad_wanted(x, pos))
    return torch.ops.fusmae_fast.gather_tokens_fwd(x, ids_keep, pos, check_ids)


# ----------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------


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
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------


COMPILE_SHAPE: tuple[int, int, int, int] = (64, 225, 56, 768)
"""(B, N, K, C) of the launch the specs are compiled as: ViT-B tokens of 120 x 120 / P8 images, a
quarter kept, contiguous tensors (ids_keep's unit inner stride is the constant 1)."""


def compile_values(kernel: str, store_dx: bool = True) -> dict[str, int]:
    """The int arguments (sizes and strides) of a launch at ``COMPILE_SHAPE``."""
    B, N, K, C = COMPILE_SHAPE
    if kernel == "gather_fwd":
        sizes = {"M": B * K, "K": K, "C": C}
        return sizes | dict(
            zip(
                ("stride_xb", "stride_xn", "stride_ib", "stride_ik", "stride_pn", "stride_ob", "stride_ok"),
                (N * C, C, K, 1, C, K * C, C),
                strict=True,
            )
        )
    per_split = triton.cdiv(B, batch_splits(B, N, C))
    dx = (N * C, C) if store_dx else (0, 0)
    return {"B": B, "N": N, "C": C, "batch_per_split": per_split, "stride_db": K * C, "stride_dk": C} | dict(
        zip(("stride_xb", "stride_xn"), dx, strict=True)
    )


def compile_specs() -> list[dict]:
    """One spec per (kernel, config, dtype, variant) the launchers can run, specialised as the JIT
    specialises a launch at ``COMPILE_SHAPE``."""
    specs = []
    confs = compiled_copy_configs()
    for tname in TL_DTYPE_NAME.values():
        for has_pos in (False, True):
            sig = signature(
                _gather_fwd_kernel,
                {"X": f"*{tname}", "IDS": "*i64", "POS": f"*{tname}", "OUT": f"*{tname}"},
                ("HAS_POS", "BLOCK_M", "BLOCK_C"),
            )
            for r, c, w in confs:
                config = f"BM{r}-BC{c}-w{w}-pos{int(has_pos)}-{tname}"
                values = {"HAS_POS": has_pos, "BLOCK_M": r, "BLOCK_C": c}
                specs.append(
                    launch_spec(
                        "gather_fwd",
                        config,
                        _gather_fwd_kernel,
                        sig,
                        values,
                        compile_values("gather_fwd"),
                        w,
                        1,
                    )
                )
        sig = signature(
            _gather_bwd_kernel,
            {"DOUT": f"*{tname}", "INV": "*i32", "DX": f"*{tname}", "PART": "*fp32"},
            ("STORE_DX", "HAS_PART", "BLOCK_N", "BLOCK_C"),
        )
        for store_dx, has_part in ((True, False), (True, True), (False, True)):
            for r, c, w in confs:
                config = f"BN{r}-BC{c}-w{w}-dx{int(store_dx)}-part{int(has_part)}-{tname}"
                values = {"STORE_DX": store_dx, "HAS_PART": has_part, "BLOCK_N": r, "BLOCK_C": c}
                ints = compile_values("gather_bwd", store_dx)
                specs.append(launch_spec("gather_bwd", config, _gather_bwd_kernel, sig, values, ints, w, 1))
    return specs
