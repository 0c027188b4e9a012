"""The deterministic reductions the token kernels share: fixed-order sums of fp32 partials, no atomics.

A backward that sums over the batch (d pos of gather_tokens, scatter_tokens and masked_patch_embed,
d mask_token, d bias) or over rows (d weight of masked_patch_embed) writes one fp32 partial per split
and one of these launches adds the partials in a fixed order, so the result does not depend on the
schedule or on the config the autotuner picks:

``reduce_splits``
    part (S, N, C) fp32 -> out[n, c] = sum_s part[s, n, c] in the requested dtype, and optionally
    the fp32 per-block column sums rowsum[nb, c] = sum_{n in block nb} out[n, c].
``sum_rows``
    part (R, L) fp32 -> out[l] = sum_r part[r, l].
``inverse_map``
    ids (B, K) int64 -> inv (B, n) int32 with inv[b, ids[b, j]] = j, -1 where no slot holds n (ids
    distinct per row; -1 slots ignored): turns a gather's backward into a per-position walk.
``batch_splits``
    how many batch splits a reduction over the batch uses: a function of the shapes only (enough
    programs to fill an sm_86 GPU, at least ``MIN_BATCH_PER_SPLIT`` samples per split).

Every kernel here runs one fixed config (one writer per output element); the interpreter runs the
same. ``compile_specs()`` lists them for compile_check (as ``gather_*`` kernels, the names its report
has always used for them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .compile_spec import launch_spec, signature
from .triton_runtime import TL_DTYPE_NAME, launch_fixed

SM_COUNT = 82
"""Streaming multiprocessors of the target GPU (RTX 3090, sm_86); sizes the batch/row splits."""
TARGET_PROGRAMS = 4 * SM_COUNT
"""Programs a reduction launch aims for (about four per SM)."""
MIN_BATCH_PER_SPLIT = 8
"""Fewest samples one batch split of a reduction over the batch walks."""
NOMINAL_TILE = (32, 64)
"""(rows, columns) tile used to size the splits (independent of the autotuned block sizes)."""

REDUCE_BLOCK_N = 32
REDUCE_BLOCK_C = 64
SUM_ROWS_BLOCK = 512
INVERSE_BLOCK = 256

# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------


def batch_splits(batch: int, rows: int, cols: int) -> int:
    """Batch splits of a (rows, cols)-tiled reduction over the batch: a function of the shapes only."""
    tiles = triton.cdiv(rows, NOMINAL_TILE[0]) * triton.cdiv(cols, NOMINAL_TILE[1])
    return max(1, min(triton.cdiv(TARGET_PROGRAMS, max(tiles, 1)), batch // MIN_BATCH_PER_SPLIT))


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
    launch_fixed(
        _sum_splits_kernel,
        (nb, triton.cdiv(C, REDUCE_BLOCK_C)),
        part,
        out if out is not None else part,
        rowsum if rowsum is not None else part,
        S,
        N,
        C,
        C,
        WRITE_OUT=out is not None,
        WRITE_ROWSUM=want_rowsum,
        BLOCK_N=REDUCE_BLOCK_N,
        BLOCK_C=REDUCE_BLOCK_C,
        num_warps=4,
        num_stages=1,
    )
    return out, rowsum


def sum_rows(part: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Sum an fp32 (R, L) buffer over its rows in a fixed order -> (L,) in ``out_dtype``."""
    R, L = part.shape
    out = part.new_empty((L,), dtype=out_dtype)
    if L == 0:
        return out
    if R == 0:
        return out.zero_()
    grid = (triton.cdiv(L, SUM_ROWS_BLOCK),)
    launch_fixed(_sum_rows_kernel, grid, part, out, R, L, BLOCK_L=SUM_ROWS_BLOCK, num_warps=4, num_stages=1)
    return out


def inverse_map(ids: torch.Tensor, n: int) -> torch.Tensor:
    """int32 (B, n): inv[b, ids[b, j]] = j, -1 where no slot of row b holds that index."""
    B, K = ids.shape
    inv = torch.full((B, n), -1, dtype=torch.int32, device=ids.device)
    if B * K:
        grid = (triton.cdiv(B * K, INVERSE_BLOCK),)
        meta = {"BLOCK": INVERSE_BLOCK, "num_warps": 4, "num_stages": 1}
        launch_fixed(_inverse_kernel, grid, ids, inv, B * K, K, n, *ids.stride(), **meta)
    return inv


# ----------------------------------------------------------------------------------------------------
# Compile specs for compile_check
# ----------------------------------------------------------------------------------------------------


COMPILE_SHAPE: tuple[int, int, int, int] = (4, 225, 768, 56)
"""(S, N, C, K) of the launches the specs are compiled as: 4 batch splits of a (225, 768) d pos,
ids of 56 kept tokens (unit inner stride: the constant 1)."""


def compile_values(kernel: str) -> dict[str, int]:
    """The int arguments (sizes and strides) of a launch at ``COMPILE_SHAPE``."""
    S, N, C, K = COMPILE_SHAPE
    if kernel == "sum_splits":
        return {"S": S, "N": N, "C": C, "stride_on": C}
    if kernel == "sum_rows":
        return {"R": S, "L": N * C}
    return {"M": 64 * K, "K": K, "N": N, "stride_ib": K, "stride_ik": 1}


def compile_specs() -> list[dict]:
    """One spec per (kernel, output dtype, variant) the launchers run, specialised as the JIT
    specialises a launch at ``COMPILE_SHAPE``."""
    specs = []
    for tname in TL_DTYPE_NAME.values():
        sig = signature(
            _sum_splits_kernel,
            {"PART": "*fp32", "OUT": f"*{tname}", "ROWSUM": "*fp32"},
            ("WRITE_OUT", "WRITE_ROWSUM", "BLOCK_N", "BLOCK_C"),
        )
        for write_out, write_rowsum in ((True, False), (True, True), (False, True)):
            config = f"BN{REDUCE_BLOCK_N}-BC{REDUCE_BLOCK_C}-out{int(write_out)}-rowsum{int(write_rowsum)}"
            values = {
                "WRITE_OUT": write_out,
                "WRITE_ROWSUM": write_rowsum,
                "BLOCK_N": REDUCE_BLOCK_N,
                "BLOCK_C": REDUCE_BLOCK_C,
            }
            specs.append(
                launch_spec(
                    "gather_sum_splits",
                    f"{config}-{tname}",
                    _sum_splits_kernel,
                    sig,
                    values,
                    compile_values("sum_splits"),
                    4,
                    1,
                )
            )
        sig = signature(_sum_rows_kernel, {"PART": "*fp32", "OUT": f"*{tname}"}, ("BLOCK_L",))
        values = {"BLOCK_L": SUM_ROWS_BLOCK}
        specs.append(
            launch_spec(
                "gather_sum_rows",
                f"BL{SUM_ROWS_BLOCK}-{tname}",
                _sum_rows_kernel,
                sig,
                values,
                compile_values("sum_rows"),
                4,
                1,
            )
        )
    sig = signature(_inverse_kernel, {"IDS": "*i64", "INV": "*i32"}, ("BLOCK",))
    values = {"BLOCK": INVERSE_BLOCK}
    ints = compile_values("inverse")
    specs.append(launch_spec("gather_inverse", f"B{INVERSE_BLOCK}", _inverse_kernel, sig, values, ints, 4, 1))
    return specs
