"""Eq. 2 of Fus-MAE fused: two-way cross-modal attention over a modality-sorted sequence.

What it computes
    q, k, v: (B, L, H, D), tokens modality-sorted per sample: positions ``t < split[b]`` belong to
    modality 1 (S1), the rest to modality 2 (S2). ``split``: int64 (B,), ``0 <= split[b] <= L``.
    o[b, t, h] = sum_u softmax_u(q[b,t,h] . k[b,u,h] / sqrt(D)) v[b,u,h] where u ranges only over
    tokens of the *other* modality of sample b: ``(t < split[b]) != (u < split[b])``.
    Concatenated, this is ``CA(x, y) (+) CA(y, x)`` of Eq. 2 without any torch.cat (docs/design.md §2).
    A query with no key of the other modality (split 0 or L) gets o = 0 and zero gradients.
    The XAttnDecoder block (Eq. 10) is the same two-way pattern and uses the same op.

dtypes: fp32, fp16, bf16 (and fp64 for the reference). The reference computes scores in the input
dtype, the softmax in fp32 (fp64 for fp64 inputs).
Limits of the reference: it materialises the (B, H, L, L) score tensor; it is the clear definition,
not the fast path. ``kernels='torch'`` runs the same op through SDPA
(``fusmae_fast.torch_ops.cross_modal_attention_torch``, tested equal to this reference).

The Triton path (``cross_modal_attention_triton``)
    Forward: one launch, grid ``(cdiv(L, BLOCK_M), B * H)``. A program owns a block of queries of one
    (sample, head); it loads ``split[b]`` in the kernel (no host sync, no padding, deterministic) and
    runs a flash-attention online softmax (fp32 accumulation, exp2 domain) over the *other* modality's
    keys only: a block wholly in modality 1 walks keys ``[s, L)``, one wholly in modality 2 walks
    ``[0, s)``; key blocks start at the modality boundary (not at a multiple of BLOCK_N), so all but
    the last key block are full and run without a score mask. A query block that straddles ``s``
    walks ``[s, L)`` for its modality-1 rows and then ``[0, s)`` for its modality-2 rows, masked per
    row. The output is written straight into (B, L, H, D); the log-sum-exp (base 2, +inf for rows
    without keys) is saved as (B, H, L) fp32 for the backward. No (L x L) tensor exists in memory.
    Backward: a preprocess launch Delta = rowsum(dO * O) (fp32, (B, H, L)); a dK/dV launch (program per
    key block: walks the other modality's query blocks) and a dQ launch (program per query block:
    walks the other modality's key blocks). Every output element has one writer and sums in a fixed
    order: no atomics, bitwise reproducible for a given config. The summation order follows the block
    sizes, so across processes or DDP ranks results are bitwise equal only with the config pinned
    (deterministic mode, ``triton_runtime.set_deterministic``); the autotuner picks by timing.
    Head dims: any D in 16..128 that is a multiple of 8 (e.g. 40): the head dim is padded to the next
    power of two *inside* the kernel with load masks, never in memory. Any L >= 1.
    Strides: the (B, L, H) strides of q, k, v and dO are passed explicitly (q, k, v may be views of a
    packed qkv projection); a tensor whose last dim is not contiguous is made contiguous once, on the
    host. o, dq, dk, dv are allocated contiguous. Every offset into q, k, v, o and their gradients is
    64-bit (batch, head and row terms), so a view whose row stride times L passes 2^31 elements (e.g.
    sequence-first storage) is addressed correctly.
    fp32 dots use ``input_precision="ieee"`` (parity with torch) unless ``allow_tf32=True``.
    Block sizes / warps / stages: a small autotune set (``_TABLE``: 1-5 configs per kernel, head dim
    and element size) valid on sm_80 / sm_86 (<= 99 KB shared memory per block, no register spills on
    sm_86 under Triton 3.9 or 3.6, some rows depending on the version; ``compile_check`` checks every
    kept config), filtered by its keep() rule and keyed on a bucketed L (next power of two, capped at
    1024), the head dim, the dot precision and the dtype. Under Triton's interpreter
    (``TRITON_INTERPRET=1``, CPU tests) one fixed config is launched (``INTERPRETER_CONFIG``). The
    head dim is a compile-time constant (one compiled kernel per D).
    The op is registered with ``torch.library`` (``fusmae_fast::cross_modal_attention_fwd`` /
    ``_bwd``, fake implementations and autograd), so ``torch.compile`` traces it without graph
    breaks. Double backward is not supported.

Work and traffic
    Only the 2 * n1 * n2 cross-modal score entries per head are computed (n1 = split, n2 = L - split),
    and q, k, v, o (and their gradients) are read or written once; ``fusmae_fast.cost_model`` counts
    these FLOPs and bytes for the benchmarks.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .compile_spec import launch_spec, signature
from .triton_runtime import (
    TL_DTYPE_NAME,
    TRITON_VERSION,
    ConfigFields,
    ConfigTable,
    autotune_bucket,
    autotuned,
    dot_precision,
    last_dim_contiguous,
    launch,
    launch_fixed,
    pow2_block,
)

# ----------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------

_LOG2E = 1.4426950408889634


@triton.jit
def _fwd_inner(
    acc,
    m_i,
    l_i,
    q,
    k_base,
    v_base,
    stride_kl,
    stride_vl,
    lo,
    hi,
    row_ok,
    qk_scale,
    offs_n,
    offs_d,
    d_ok,
    MASKED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Online softmax of one query block over keys [lo, hi). Unmasked blocks must be full."""
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        if MASKED:
            col_ok = cols < hi
            kt = tl.load(
                k_base + cols.to(tl.int64)[None, :] * stride_kl + offs_d[:, None],
                mask=col_ok[None, :] & d_ok[:, None],
                other=0.0,
            )
            vb = tl.load(
                v_base + cols.to(tl.int64)[:, None] * stride_vl + offs_d[None, :],
                mask=col_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
        else:
            kt = tl.load(
                k_base + cols.to(tl.int64)[None, :] * stride_kl + offs_d[:, None],
                mask=d_ok[:, None],
                other=0.0,
            )
            vb = tl.load(
                v_base + cols.to(tl.int64)[:, None] * stride_vl + offs_d[None, :],
                mask=d_ok[None, :],
                other=0.0,
            )
        qk = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale
        if MASKED:
            qk = tl.where(row_ok[:, None] & col_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # rows that have seen no key yet keep m = -inf; shift them by 0 so that exp2 gives 0, not NaN
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_safe)
        p = tl.math.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _walk_ranges(m0, s, L, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key (or query) ranges of the other modality for the block of rows [m0, m0 + BLOCK_M).

    Returns (lo_u, full_end, lo_a, lo_b, hi_b): unmasked full blocks over [lo_u, full_end); masked
    range A = [lo_a, L) for the block's modality-1 rows; masked range B = [lo_b, hi_b) for its
    modality-2 rows. A block on one side of s has an empty A or B; a straddling block has no
    unmasked part and walks all of A = [s, L) and B = [0, s).
    """
    m_end = tl.minimum(m0 + BLOCK_M, L)
    only1 = m_end <= s  # all rows are modality 1: other keys are [s, L)
    only2 = m0 >= s  # all rows are modality 2: other keys are [0, s)
    lo_u = tl.where(only1, s, 0)
    hi_u = tl.where(only1, L, tl.where(only2, s, 0))
    full_end = lo_u + ((hi_u - lo_u) // BLOCK_N) * BLOCK_N
    lo_a = tl.where(only1, full_end, tl.where(only2, L, s))
    lo_b = tl.where(only2, full_end, 0)
    hi_b = tl.where(only1, 0, s)
    return lo_u, full_end, lo_a, lo_b, hi_b


@triton.jit
def _xattn_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    SPLIT,
    stride_qb,
    stride_ql,
    stride_qh,
    stride_kb,
    stride_kl,
    stride_kh,
    stride_vb,
    stride_vl,
    stride_vh,
    stride_ob,
    stride_ol,
    stride_oh,
    L,
    H,
    L_BUCKET,
    qk_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    s = tl.load(SPLIT + b).to(tl.int32)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_in = offs_m < L
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m.to(tl.int64)[:, None] * stride_ql + offs_d[None, :],
        mask=row_in[:, None] & d_ok[None, :],
        other=0.0,
    )
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    first = offs_m < s
    lo_u, full_end, lo_a, lo_b, hi_b = _walk_ranges(m0, s, L, BLOCK_M, BLOCK_N)
    # full blocks of the other modality, no score mask
    acc, m_i, l_i = _fwd_inner(
        acc,
        m_i,
        l_i,
        q,
        k_base,
        v_base,
        stride_kl,
        stride_vl,
        lo_u,
        full_end,
        first,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        False,
        BLOCK_N,
        DOT_PRECISION,
    )
    # the block's modality-1 rows: masked walk over [lo_a, L)
    acc, m_i, l_i = _fwd_inner(
        acc,
        m_i,
        l_i,
        q,
        k_base,
        v_base,
        stride_kl,
        stride_vl,
        lo_a,
        L,
        first,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        True,
        BLOCK_N,
        DOT_PRECISION,
    )
    # the block's modality-2 rows: masked walk over [lo_b, hi_b)
    acc, m_i, l_i = _fwd_inner(
        acc,
        m_i,
        l_i,
        q,
        k_base,
        v_base,
        stride_kl,
        stride_vl,
        lo_b,
        hi_b,
        ~first,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        True,
        BLOCK_N,
        DOT_PRECISION,
    )
    has_key = l_i > 0.0
    o = acc / tl.where(has_key, l_i, 1.0)[:, None]
    tl.store(
        O + b * stride_ob + h * stride_oh + offs_m.to(tl.int64)[:, None] * stride_ol + offs_d[None, :],
        o.to(O.dtype.element_ty),
        mask=row_in[:, None] & d_ok[None, :],
    )
    # +inf for rows without keys: the backward's exp2(score - lse) is then exactly 0
    lse = tl.where(has_key, m_i + tl.math.log2(tl.where(has_key, l_i, 1.0)), float("inf"))
    tl.store(LSE + pid_bh.to(tl.int64) * L + offs_m, lse, mask=row_in)


@triton.jit
def _xattn_bwd_preprocess_kernel(
    O,
    DO,
    DELTA,
    stride_ob,
    stride_ol,
    stride_oh,
    stride_dob,
    stride_dol,
    stride_doh,
    L,
    H,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < L)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(
        O + b * stride_ob + h * stride_oh + offs_m.to(tl.int64)[:, None] * stride_ol + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + offs_m.to(tl.int64)[:, None] * stride_dol + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * L + offs_m, delta, mask=offs_m < L)


@triton.jit
def _dq_inner(
    dq,
    q,
    do,
    lse,
    delta,
    k_base,
    v_base,
    stride_kl,
    stride_vl,
    lo,
    hi,
    row_ok,
    qk_scale,
    offs_n,
    offs_d,
    d_ok,
    MASKED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        if MASKED:
            col_ok = cols < hi
            kv_mask = col_ok[:, None] & d_ok[None, :]
        else:
            kv_mask = d_ok[None, :]
        kb = tl.load(
            k_base + cols.to(tl.int64)[:, None] * stride_kl + offs_d[None, :], mask=kv_mask, other=0.0
        )
        vb = tl.load(
            v_base + cols.to(tl.int64)[:, None] * stride_vl + offs_d[None, :], mask=kv_mask, other=0.0
        )
        qk = tl.dot(q, tl.trans(kb), input_precision=DOT_PRECISION)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        if MASKED:
            p = tl.where(row_ok[:, None] & col_ok[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(vb), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kb.dtype), kb, input_precision=DOT_PRECISION)
    return dq


@triton.jit
def _xattn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
    LSE,
    DELTA,
    SPLIT,
    stride_qb,
    stride_ql,
    stride_qh,
    stride_kb,
    stride_kl,
    stride_kh,
    stride_vb,
    stride_vl,
    stride_vh,
    stride_dob,
    stride_dol,
    stride_doh,
    stride_dqb,
    stride_dql,
    stride_dqh,
    L,
    H,
    L_BUCKET,
    qk_scale,
    sm_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    s = tl.load(SPLIT + b).to(tl.int32)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_in = offs_m < L
    mask = row_in[:, None] & d_ok[None, :]
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m.to(tl.int64)[:, None] * stride_ql + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + offs_m.to(tl.int64)[:, None] * stride_dol + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    lse = tl.load(LSE + pid_bh.to(tl.int64) * L + offs_m, mask=row_in, other=float("inf"))
    delta = tl.load(DELTA + pid_bh.to(tl.int64) * L + offs_m, mask=row_in, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    first = offs_m < s
    lo_u, full_end, lo_a, lo_b, hi_b = _walk_ranges(m0, s, L, BLOCK_M, BLOCK_N)
    # full blocks of the other modality, no score mask
    dq = _dq_inner(
        dq,
        q,
        do,
        lse,
        delta,
        k_base,
        v_base,
        stride_kl,
        stride_vl,
        lo_u,
        full_end,
        first,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        False,
        BLOCK_N,
        DOT_PRECISION,
    )
    # the block's modality-1 rows: masked walk over [lo_a, L)
    dq = _dq_inner(
        dq,
        q,
        do,
        lse,
        delta,
        k_base,
        v_base,
        stride_kl,
        stride_vl,
        lo_a,
        L,
        first,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        True,
        BLOCK_N,
        DOT_PRECISION,
    )
    # the block's modality-2 rows: masked walk over [lo_b, hi_b)
    dq = _dq_inner(
        dq,
        q,
        do,
        lse,
        delta,
        k_base,
        v_base,
        stride_kl,
        stride_vl,
        lo_b,
        hi_b,
        ~first,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        True,
        BLOCK_N,
        DOT_PRECISION,
    )
    dq = dq * sm_scale
    tl.store(
        DQ + b * stride_dqb + h * stride_dqh + offs_m.to(tl.int64)[:, None] * stride_dql + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def _dkdv_inner(
    dk,
    dv,
    kb,
    vb,
    q_base,
    do_base,
    lse_base,
    delta_base,
    stride_ql,
    stride_dol,
    lo,
    hi,
    key_ok,
    qk_scale,
    offs_m,
    offs_d,
    d_ok,
    MASKED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Accumulate dK, dV of one key block over the query rows [lo, hi) (transposed formulation)."""
    for start in range(lo, hi, BLOCK_M):
        rows = start + offs_m
        if MASKED:
            row_ok = rows < hi
            qt_mask = row_ok[None, :] & d_ok[:, None]
            do_mask = row_ok[:, None] & d_ok[None, :]
            lse = tl.load(lse_base + rows, mask=row_ok, other=float("inf"))
            delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        else:
            qt_mask = d_ok[:, None]
            do_mask = d_ok[None, :]
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        qt = tl.load(
            q_base + rows.to(tl.int64)[None, :] * stride_ql + offs_d[:, None], mask=qt_mask, other=0.0
        )
        do = tl.load(
            do_base + rows.to(tl.int64)[:, None] * stride_dol + offs_d[None, :], mask=do_mask, other=0.0
        )
        qkt = tl.dot(kb, qt, input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
        pt = tl.math.exp2(qkt * qk_scale - lse[None, :])
        if MASKED:
            pt = tl.where(key_ok[:, None] & row_ok[None, :], pt, 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PRECISION)
        dpt = tl.dot(vb, tl.trans(do), input_precision=DOT_PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def _xattn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    LSE,
    DELTA,
    SPLIT,
    stride_qb,
    stride_ql,
    stride_qh,
    stride_kb,
    stride_kl,
    stride_kh,
    stride_vb,
    stride_vl,
    stride_vh,
    stride_dob,
    stride_dol,
    stride_doh,
    stride_dkb,
    stride_dkl,
    stride_dkh,
    stride_dvb,
    stride_dvl,
    stride_dvh,
    L,
    H,
    L_BUCKET,
    qk_scale,
    sm_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    s = tl.load(SPLIT + b).to(tl.int32)
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    key_in = offs_n < L
    mask = key_in[:, None] & d_ok[None, :]
    kb = tl.load(
        K + b * stride_kb + h * stride_kh + offs_n.to(tl.int64)[:, None] * stride_kl + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    vb = tl.load(
        V + b * stride_vb + h * stride_vh + offs_n.to(tl.int64)[:, None] * stride_vl + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    lse_base = LSE + pid_bh.to(tl.int64) * L
    delta_base = DELTA + pid_bh.to(tl.int64) * L
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    first = offs_n < s
    # the key block's modality-1 keys are attended by queries [s, L), its modality-2 keys by [0, s)
    lo_u, full_end, lo_a, lo_b, hi_b = _walk_ranges(n0, s, L, BLOCK_N, BLOCK_M)
    # full blocks of the other modality, no score mask
    dk, dv = _dkdv_inner(
        dk,
        dv,
        kb,
        vb,
        q_base,
        do_base,
        lse_base,
        delta_base,
        stride_ql,
        stride_dol,
        lo_u,
        full_end,
        first,
        qk_scale,
        offs_m,
        offs_d,
        d_ok,
        False,
        BLOCK_M,
        DOT_PRECISION,
    )
    # the block's modality-1 rows: masked walk over [lo_a, L)
    dk, dv = _dkdv_inner(
        dk,
        dv,
        kb,
        vb,
        q_base,
        do_base,
        lse_base,
        delta_base,
        stride_ql,
        stride_dol,
        lo_a,
        L,
        first,
        qk_scale,
        offs_m,
        offs_d,
        d_ok,
        True,
        BLOCK_M,
        DOT_PRECISION,
    )
    # the block's modality-2 rows: masked walk over [lo_b, hi_b)
    dk, dv = _dkdv_inner(
        dk,
        dv,
        kb,
        vb,
        q_base,
        do_base,
        lse_base,
        delta_base,
        stride_ql,
        stride_dol,
        lo_b,
        hi_b,
        ~first,
        qk_scale,
        offs_m,
        offs_d,
        d_ok,
        True,
        BLOCK_M,
        DOT_PRECISION,
    )
    dk = dk * sm_scale
    tl.store(
        DK + b * stride_dkb + h * stride_dkh + offs_n.to(tl.int64)[:, None] * stride_dkl + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=mask,
    )
    tl.store(
        DV + b * stride_dvb + h * stride_dvh + offs_n.to(tl.int64)[:, None] * stride_dvl + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=mask,
    )


# ----------------------------------------------------------------------------------------------------
# Configs: the autotune set and its keep() filters
# ----------------------------------------------------------------------------------------------------

PREPROCESS_BLOCK_M = 32

_FIELDS = ConfigFields(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"))
"""A config is (BLOCK_M, BLOCK_N, num_warps, num_stages). Forward and dq: BLOCK_M query rows per
program, BLOCK_N keys per step. dkdv: BLOCK_N keys per program, BLOCK_M query rows per step."""


def _any(d: int) -> bool:
    return True


def _aligned(d: int) -> bool:  # head dim a multiple of 16: aligned strides, vectorised loads
    return d % 16 == 0


def _aligned_le64(d: int) -> bool:
    return d % 16 == 0 and d <= 64


def _aligned_le32(d: int) -> bool:
    return d % 16 == 0 and d <= 32


def _not_aligned_80_112(d: int) -> bool:  # spills on sm_86 at the aligned head dims padded to 128
    return not (d % 16 == 0 and 64 < d < 128)


def _aligned_not_80_112(d: int) -> bool:
    return d % 16 == 0 and not 64 < d < 128


def _padded_40_56(d: int) -> bool:
    """Head dims that are not multiples of 16 and are padded to 64 (40, 56): at 8 warps on 32 x 32
    tiles ptxas spills on sm_86 (Triton 3.9), where head dim 24 and the aligned ones do not."""
    return d % 16 != 0 and 32 < d < 64


def _not_padded_40_56(d: int) -> bool:
    return not _padded_40_56(d)


def _le64_not_40_56(d: int) -> bool:
    return d <= 64 and not _padded_40_56(d)


def _gt64_or_40_56(d: int) -> bool:
    return d > 64 or _padded_40_56(d)


def _not_before_triton39(keep, head_dims: frozenset[int] | None = None):
    """``keep``, except under Triton < 3.9 (3.6 is the Triton of torch 2.11's CUDA images) at
    ``head_dims`` (None: at every head dim), where ptxas spills that config's registers on sm_86
    (compile_check, every spec)."""

    def kept(d: int) -> bool:
        return keep(d) and (TRITON_VERSION >= (3, 9) or (head_dims is not None and d not in head_dims))

    return kept


# The autotune set, per kernel and element size, each config with the head dims it is kept for. The
# predicates come from compile_check on sm_86 (no register spill, <= 99 KB shared memory): fp32 dots
# (input_precision="ieee") run on FMA units with register-resident operands and need small tiles;
# head dims that are not multiples of 16 load without vectorisation and need more registers.
_TABLE = ConfigTable(
    _FIELDS,
    {
        ("fwd", 2): (
            ((32, 32, 4, 2), _any),
            ((32, 32, 8, 2), _any),
            ((64, 32, 4, 2), _aligned),
            ((64, 64, 4, 2), _not_before_triton39(_aligned, frozenset({80, 96, 112, 128}))),
            ((128, 64, 8, 2), _aligned_le64),
        ),
        ("dq", 2): (
            ((32, 32, 8, 2), _any),
            ((32, 32, 4, 2), _aligned_not_80_112),
            ((64, 32, 4, 2), _aligned),
            ((128, 32, 8, 2), _aligned),
            ((64, 64, 4, 2), _not_before_triton39(_aligned_le64)),  # 3.6: spills at D = 64
        ),
        ("dkdv", 2): (
            ((32, 32, 8, 2), _not_padded_40_56),
            ((16, 32, 4, 2), _not_before_triton39(_any, frozenset({80, 96, 112}))),
            ((32, 32, 4, 2), _aligned),
            ((32, 64, 4, 2), _aligned_le64),
            ((32, 128, 8, 2), _aligned_le64),
        ),
        ("fwd", 4): (
            ((32, 32, 8, 2), _not_before_triton39(_not_padded_40_56, frozenset({24, 72, 88, 104, 120}))),
            ((16, 32, 4, 2), _not_aligned_80_112),
            ((32, 32, 4, 2), _not_before_triton39(_aligned_le64, frozenset({48}))),
        ),
        ("dq", 4): (
            ((16, 32, 4, 2), _not_before_triton39(_any, frozenset({40, 56}))),
            ((16, 32, 8, 2), _padded_40_56),
            ((32, 32, 8, 2), _aligned),
            ((32, 32, 4, 2), _aligned_le32),
        ),
        ("dkdv", 4): (
            # 3.6: spills at D = 32, and kept at D = 16 alone no swept shape would launch it
            ((32, 32, 4, 2), _not_before_triton39(_aligned_le32)),
            ((32, 32, 8, 2), _le64_not_40_56),
            ((16, 32, 8, 2), _gt64_or_40_56),
            ((16, 16, 4, 2), _not_before_triton39(_gt64_or_40_56, frozenset({72, 88, 104, 120}))),
        ),
    },
)


def kept_configs(kernel: str, head_dim: int, esize: int) -> list[tuple[int, ...]]:
    """The configs the autotuner may pick for ``kernel`` in {"fwd", "dq", "dkdv"} (the table's keep())."""
    return _TABLE.kept(kernel, esize, head_dim)


INTERPRETER_CONFIG: dict[str, tuple[int, int, int, int]] = {
    "fwd": (32, 16, 4, 1),
    "dq": (16, 32, 4, 1),
    "dkdv": (16, 32, 4, 1),
}
"""The one config launched under ``TRITON_INTERPRET=1`` (small blocks: many loop trips and straddles)."""


def _prune(kernel: str):
    """The autotuner's early-prune hook: keep() at the launch's head dim and element size of Q."""
    return _TABLE.prune(kernel, "Q", lambda args: (args["HEAD_DIM"],))


def _triton_configs(kernel: str) -> list[triton.Config]:
    return _TABLE.triton_configs(kernel)


_AUTOTUNE_KEY = ["L_BUCKET", "HEAD_DIM", "DOT_PRECISION"]
_fwd_tuned = autotuned(_xattn_fwd_kernel, _triton_configs("fwd"), _AUTOTUNE_KEY, _prune("fwd"))
_dq_tuned = autotuned(_xattn_bwd_dq_kernel, _triton_configs("dq"), _AUTOTUNE_KEY, _prune("dq"))
_dkdv_tuned = autotuned(_xattn_bwd_dkdv_kernel, _triton_configs("dkdv"), _AUTOTUNE_KEY, _prune("dkdv"))


def _launch(kernel: str, tuned, rows: int, grid_bh: int, args: tuple, meta: dict) -> None:
    """Launch one of the three tuned kernels over ``rows`` query (or, for dkdv, key) rows and the
    (sample, head) pairs: autotuned on a GPU, ``INTERPRETER_CONFIG[kernel]`` under the interpreter."""
    block = "BLOCK_N" if kernel == "dkdv" else "BLOCK_M"

    def grid(m):
        return (triton.cdiv(rows, m[block]), grid_bh)

    launch(tuned, grid, args, meta, _FIELDS, INTERPRETER_CONFIG[kernel])


# ----------------------------------------------------------------------------------------------------
# Host launchers
# ----------------------------------------------------------------------------------------------------


def _block_d(D: int) -> int:
    if D % 8 != 0 or not 16 <= D <= 128:
        raise ValueError(f"head dim D must be a multiple of 8 in [16, 128] for the Triton path, got {D}")
    return pow2_block(D)


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor, allow_tf32: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = (last_dim_contiguous(t) for t in (q, k, v))
    B, L, H, D = q.shape
    o = torch.empty((B, L, H, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, L), dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, lse
    block_d = _block_d(D)
    sm_scale = 1.0 / math.sqrt(D)
    split = split.contiguous()
    args = (
        q,
        k,
        v,
        o,
        lse,
        split,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *o.stride()[:3],
        L,
        H,
        autotune_bucket(L, 1024),
        sm_scale * _LOG2E,
    )
    meta = {"BLOCK_D": block_d, "HEAD_DIM": D, "DOT_PRECISION": dot_precision(q.dtype, allow_tf32)}
    _launch("fwd", _fwd_tuned, L, B * H, args, meta)
    return o, lse


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    split: torch.Tensor,
    allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, o, do = (last_dim_contiguous(t) for t in (q, k, v, o, do))
    B, L, H, D = q.shape
    dq = torch.empty((B, L, H, D), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    if dq.numel() == 0:
        return dq, dk, dv
    block_d = _block_d(D)
    sm_scale = 1.0 / math.sqrt(D)
    split = split.contiguous()
    lse = lse.contiguous()
    delta = torch.empty((B, H, L), dtype=torch.float32, device=q.device)
    launch_fixed(
        _xattn_bwd_preprocess_kernel,
        (triton.cdiv(L, PREPROCESS_BLOCK_M), B * H),
        o,
        do,
        delta,
        *o.stride()[:3],
        *do.stride()[:3],
        L,
        H,
        BLOCK_M=PREPROCESS_BLOCK_M,
        BLOCK_D=block_d,
        HEAD_DIM=D,
        num_warps=4,
        num_stages=1,
    )
    meta = {"BLOCK_D": block_d, "HEAD_DIM": D, "DOT_PRECISION": dot_precision(q.dtype, allow_tf32)}
    common = (L, H, autotune_bucket(L, 1024), sm_scale * _LOG2E, sm_scale)
    dq_args = (
        q,
        k,
        v,
        do,
        dq,
        lse,
        delta,
        split,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *do.stride()[:3],
        *dq.stride()[:3],
        *common,
    )
    _launch("dq", _dq_tuned, L, B * H, dq_args, meta)
    dkdv_args = (
        q,
        k,
        v,
        do,
        dk,
        dv,
        lse,
        delta,
        split,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *do.stride()[:3],
        *dk.stride()[:3],
        *dv.stride()[:3],
        *common,
    )
    _launch("dkdv", _dkdv_tuned, L, B * H, dkdv_args, meta)
    return dq, dk, dv


# ----------------------------------------------------------------------------------------------------
# torch.library registration: custom ops with fake implementations and autograd
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("fusmae_fast::cross_modal_attention_fwd", mutates_args=())
def _xattn_fwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor, allow_tf32: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(q, k, v, split, allow_tf32)


@_xattn_fwd_op.register_fake
def _xattn_fwd_fake(q, k, v, split, allow_tf32):
    B, L, H, D = q.shape
    return q.new_empty((B, L, H, D)), q.new_empty((B, H, L), dtype=torch.float32)


@torch.library.custom_op("fusmae_fast::cross_modal_attention_bwd", mutates_args=())
def _xattn_bwd_op(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    split: torch.Tensor,
    allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(do, q, k, v, o, lse, split, allow_tf32)


@_xattn_bwd_op.register_fake
def _xattn_bwd_fake(do, q, k, v, o, lse, split, allow_tf32):
    B, L, H, D = q.shape
    return q.new_empty((B, L, H, D)), q.new_empty((B, L, H, D)), q.new_empty((B, L, H, D))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, split, allow_tf32 = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, split)
    ctx.allow_tf32 = allow_tf32


def _autograd_backward(ctx, do, dlse):
    q, k, v, o, lse, split = ctx.saved_tensors
    if do is None:
        do = torch.zeros_like(o)
    dq, dk, dv = _xattn_bwd_op(do, q, k, v, o, lse, split, ctx.allow_tf32)
    return dq, dk, dv, None, None


_xattn_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def cross_modal_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor, *, allow_tf32: bool = False
) -> torch.Tensor:
    """Triton path of the fused Eq. 2 attention (same semantics as ``cross_modal_attention_ref``).

    One forward launch; autograd runs the Triton backward (preprocess, dK/dV, dQ launches). Inputs
    are validated by ``fusmae_fast.ops``. ``allow_tf32`` lets fp32 dots use TF32 on GPUs.
    """
    o, _ = torch.ops.fusmae_fast.cross_modal_attention_fwd(q, k, v, split, allow_tf32)
    return o


# ----------------------------------------------------------------------------------------------------
# Reference (pure torch; the tests' oracle)
# ----------------------------------------------------------------------------------------------------


def cross_modal_mask(split: torch.Tensor, length: int) -> torch.Tensor:
    """Boolean (B, L, L) mask: True where query t may attend key u (different modalities)."""
    pos = torch.arange(length, device=split.device)
    first = pos[None, :] < split[:, None]  # (B, L): token is modality 1
    return first[:, :, None] != first[:, None, :]


def cross_modal_attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor
) -> torch.Tensor:
    """Pure-torch reference of the fused Eq. 2 attention; differentiable by autograd.

    Shapes as in the module docstring; returns o with q's shape and dtype.
    """
    b, length, h, d = q.shape
    allowed = cross_modal_mask(split, length)[:, None]  # (B, 1, L, L)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
    acc = torch.promote_types(q.dtype, torch.float32)  # softmax in fp32 (fp64 for an fp64 reference)
    scores = torch.matmul(qh, kh.transpose(-1, -2)).to(acc) * (1.0 / math.sqrt(d))
    scores = scores.masked_fill(~allowed, torch.finfo(acc).min)
    has_key = allowed.any(-1, keepdim=True)  # (B, 1, L, 1)
    probs = torch.softmax(scores, dim=-1) * has_key
    out = torch.matmul(probs.to(q.dtype), vh)
    return out.transpose(1, 2)


# ----------------------------------------------------------------------------------------------------
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------

COMPILE_HEAD_DIMS: tuple[int, ...] = tuple(range(16, 129, 8))
"""Head dims compiled by compile_check: every head dim the Triton path accepts."""


_FP32_SCALARS = {"qk_scale": "fp32", "sm_scale": "fp32"}
"""Scalar kernel arguments that are fp32 (every other non-pointer, non-constexpr argument is i32)."""


COMPILE_LAYOUT: tuple[int, int, int] = (2, 450, 8)
"""(B, L, H) of the launch the specs are compiled as: q, k, v views of a packed (B, L, 3, H, D) qkv
projection (the model's layout), o, dO and the gradients contiguous (B, L, H, D); L = 450 (the
decoder's sequence, not a multiple of 16)."""


def compile_values(fn, head_dim: int) -> dict[str, int]:
    """The int arguments of a launch of ``fn`` at ``COMPILE_LAYOUT`` and ``head_dim``: its strides
    and sizes, which the JIT specialises (unit strides to 1, multiples of 16 marked)."""
    B, L, H = COMPILE_LAYOUT
    packed = torch.empty(B, L, 3, H, head_dim, device="meta")[:, :, 0].stride()[:3]
    dense = torch.empty(B, L, H, head_dim, device="meta").stride()[:3]
    values = {"L": L, "H": H, "L_BUCKET": autotune_bucket(L, 1024)}
    for t in ("q", "k", "v", "o", "do", "dq", "dk", "dv"):
        for axis, stride in zip("blh", packed if t in ("q", "k", "v") else dense, strict=True):
            values[f"stride_{t}{axis}"] = stride
    return {n: v for n, v in values.items() if n in fn.arg_names}


def compile_specs() -> list[dict]:
    """One spec per (kernel, config, dtype, head dim) the autotuner can launch (for compile_check),
    specialised as the JIT specialises a launch at ``COMPILE_LAYOUT``."""
    specs: list[dict] = []
    consts = ("BLOCK_M", "BLOCK_N", "BLOCK_D", "HEAD_DIM", "DOT_PRECISION")
    kernels = {
        "fwd": (_xattn_fwd_kernel, ("Q", "K", "V", "O"), ("LSE",)),
        "dq": (_xattn_bwd_dq_kernel, ("Q", "K", "V", "DO", "DQ"), ("LSE", "DELTA")),
        "dkdv": (_xattn_bwd_dkdv_kernel, ("Q", "K", "V", "DO", "DK", "DV"), ("LSE", "DELTA")),
    }
    for dtype, tname in TL_DTYPE_NAME.items():
        esize = torch.empty((), dtype=dtype).element_size()
        for head_dim in COMPILE_HEAD_DIMS:
            block_d = _block_d(head_dim)
            for kname, (fn, data_ptrs, f32_ptrs) in kernels.items():
                ptrs = {n: f"*{tname}" for n in data_ptrs} | {n: "*fp32" for n in f32_ptrs}
                ptrs["SPLIT"] = "*i64"
                sig = signature(fn, ptrs, consts, _FP32_SCALARS)
                values = compile_values(fn, head_dim)
                for bm, bn, warps, stages in kept_configs(kname, head_dim, esize):
                    meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": block_d, "HEAD_DIM": head_dim}
                    specs.append(
                        launch_spec(
                            f"xattn_{kname}",
                            f"BM{bm}-BN{bn}-D{head_dim}-w{warps}-s{stages}-{tname}",
                            fn,
                            sig,
                            meta | {"DOT_PRECISION": "ieee"},
                            values,
                            warps,
                            stages,
                        )
                    )
            ptrs = {"O": f"*{tname}", "DO": f"*{tname}", "DELTA": "*fp32"}
            pre_consts = ("BLOCK_M", "BLOCK_D", "HEAD_DIM")
            fn = _xattn_bwd_preprocess_kernel
            specs.append(
                launch_spec(
                    "xattn_bwd_preprocess",
                    f"BM{PREPROCESS_BLOCK_M}-D{head_dim}-w4-s1-{tname}",
                    fn,
                    signature(fn, ptrs, pre_consts, _FP32_SCALARS),
                    {"BLOCK_M": PREPROCESS_BLOCK_M, "BLOCK_D": block_d, "HEAD_DIM": head_dim},
                    compile_values(fn, head_dim),
                    4,
                    1,
                )
            )
    return specs
