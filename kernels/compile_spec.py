"""The spec dicts ``compile_check`` compiles (one per kernel, config and dtype), built one way by every
kernel module's ``compile_specs()``.

Kept apart from ``compile_check`` (the checking tool, which drives Triton's compiler, ptxas and
cuobjdump): a kernel module imports only this small builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def signature(
    fn: Any, ptrs: dict[str, str], consts: Sequence[str], scalars: dict[str, str] | None = None
) -> dict[str, str]:
    """Triton signature of ``fn``'s arguments: pointer types from ``ptrs``, ``constexpr`` for ``consts``,
    other scalar types from ``scalars`` (e.g. ``{"sm_scale": "fp32"}``), every other argument i32."""
    scalars = scalars or {}
    return {
        n: ptrs[n] if n in ptrs else "constexpr" if n in consts else scalars.get(n, "i32")
        for n in fn.arg_names
    }


def compile_spec(
    kernel: str,
    config: str,
    fn: Any,
    sig: dict[str, str],
    constexprs: dict[str, Any],
    *,
    num_warps: int,
    num_stages: int,
    divisible_by_16: list[str],
) -> dict[str, Any]:
    """One spec in ``compile_check``'s format; ``divisible_by_16`` names the arguments Triton would
    specialize as 16-divisible at a typical launch (aligned pointers, strides that are multiples of 16)."""
    return {
        "kernel": kernel,
        "config": config,
        "fn": fn,
        "signature": sig,
        "constexprs": constexprs,
        "num_warps": num_warps,
        "num_stages": num_stages,
        "divisible_by_16": divisible_by_16,
    }


def aligned_args(sig: dict[str, str], *, strides: bool = False, exclude: Sequence[str] = ()) -> list[str]:
    """The arguments Triton would specialize as 16-divisible at a typical launch, in signature order:
    every pointer but ``exclude`` (fresh torch allocations are 16-byte aligned) and, with ``strides``,
    every non-constexpr ``stride_*`` argument (row strides that are multiples of 16 elements)."""
    return [
        n
        for n, t in sig.items()
        if (t.startswith("*") and n not in exclude)
        or (strides and n.startswith("stride_") and t != "constexpr")
    ]


def aligned_rows_spec(
    kernel: str,
    config: str,
    fn: Any,
    sig: dict[str, str],
    constexprs: dict[str, Any],
    warps: int,
    stages: int,
) -> dict[str, Any]:
    """One spec of a kernel over rows of tokens: pointers taken as 16-byte aligned (fresh torch
    allocations) and the row strides as multiples of 16 elements (C a multiple of 16, as in every
    preset)."""
    return compile_spec(
        kernel,
        config,
        fn,
        sig,
        constexprs,
        num_warps=warps,
        num_stages=stages,
        divisible_by_16=aligned_args(sig, strides=True),
    )
