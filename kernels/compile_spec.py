"""The spec dicts ``compile_check`` compiles (one per kernel, config and dtype), built one way by every
kernel module's ``compile_specs()``.

Kept apart from ``compile_check`` (the checking tool, which drives Triton's compiler, ptxas and
cuobjdump): a kernel module imports only this small builder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def jit_int_spec(value: int) -> tuple[str, bool]:
    """How Triton's JIT specialises a non-constexpr int argument of this value at a launch: 1 becomes
    the constant 1 (``("constexpr", False)``), other values an ``i32`` (``i64`` beyond int32)
    marked 16-divisible when a multiple of 16 (0 included). Tested against Triton's own
    specialisation of real launch arguments (tests/parity/test_compile_check.py)."""
    if value == 1:
        return "constexpr", False
    return ("i32" if -(2**31) <= value < 2**31 else "i64"), value % 16 == 0


def launch_spec(
    kernel: str,
    config: str,
    fn: Any,
    sig: dict[str, str],
    constexprs: dict[str, Any],
    values: Mapping[str, int],
    warps: int,
    stages: int,
    unaligned: Sequence[str] = (),
) -> dict[str, Any]:
    """One spec compiled as the JIT compiles a launch whose int arguments have ``values`` (strides and
    sizes of a representative launch, e.g. ``torch.empty(shape).stride()``): a value 1 (a unit
    stride) becomes the constant 1, multiples of 16 are marked 16-divisible (``jit_int_spec``); every
    pointer but ``unaligned`` is taken as 16-byte aligned (fresh torch allocations). Int arguments
    not in ``values`` stay unmarked ``i32`` (sizes that need not be multiples of 16)."""
    sig, consts = dict(sig), dict(constexprs)
    divisible = [n for n, t in sig.items() if t.startswith("*") and n not in unaligned]
    for name, value in values.items():
        if sig[name] not in ("i32", "i64"):
            raise ValueError(f"{kernel}: {name} is not an int argument ({sig[name]})")
        kind, div16 = jit_int_spec(int(value))
        if kind == "constexpr":
            sig[name], consts[name] = "constexpr", 1
        else:
            sig[name] = kind
            if div16:
                divisible.append(name)
    return compile_spec(
        kernel, config, fn, sig, consts, num_warps=warps, num_stages=stages, divisible_by_16=divisible
    )
