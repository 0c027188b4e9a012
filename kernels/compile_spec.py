"""The spec dicts ``compile_check`` compiles (one per kernel, config and dtype), built one way by every
kernel module's ``compile_specs()``.

Kept apart from ``compile_check``, which removes ``TRITON_INTERPRET`` from the environment when it is
imported: the kernel modules (imported under the interpreter by the tests) cannot import it.
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
