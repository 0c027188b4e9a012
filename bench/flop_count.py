"""FLOPs of a callable, counted by ``torch.utils.flop_counter`` with the CPU attention kernels included.

torch's counter has formulas for the CUDA SDPA kernels (flash, memory-efficient, cuDNN) but none for
the CPU flash kernel (``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward), which
every ``F.scaled_dot_product_attention`` call on a CPU runs: uncounted, a row whose attention runs in
SDPA would be credited with less work than one whose attention runs as explicit matmuls. Nor has it one
for oneDNN's linear with post-operations (``mkldnn._linear_pointwise``), which ``fusmae_fast.linear``
runs for every bf16 linear of a gradient-free CPU call: uncounted, a bf16 ``encode`` row was credited
with its attention products alone. This module registers torch's own SDPA formulas for the two
attention ops and the product's 2 M N K for the linear (once, at import) and counts with them.

    from fusmae_fast.bench.flop_count import count_flops
    flops = count_flops(step)     # matmul, convolution and attention FLOPs of one call of ``step``
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils import flop_counter

__all__ = ["CPU_ATTENTION_OPS", "FUSED_LINEAR_OPS", "count_flops"]

_aten = torch.ops.aten
CPU_ATTENTION_OPS = (
    _aten._scaled_dot_product_flash_attention_for_cpu,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward,
)
"""The CPU SDPA kernels given torch's SDPA formulas here (forward, backward)."""
FUSED_LINEAR_OPS = (
    (torch.ops.mkldnn._linear_pointwise,) if hasattr(torch.ops.mkldnn, "_linear_pointwise") else ()
)
"""oneDNN's linear with post-operations, X (..., K) times W (N, K)^T, given the product's FLOPs here;
empty where this torch has no such op."""


def _cpu_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _linear_flop(x_shape, second_shape, third_shape=None, *args, out_shape=None, **kwargs) -> int:
    """2 M N K of X (..., K) @ W (N, K)^T; the bias and post-operations are not matrix work. W is the
    second operand in the ``default`` overload (X, W, bias (N,) or None, ...) and the third in the
    ``binary`` one (X, other, W, bias, ...), the only overload whose third operand is 2-D."""
    w_shape = third_shape if third_shape is not None and len(third_shape) == 2 else second_shape
    return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def _register() -> None:
    """Give the CPU kernels a formula unless torch already has one (a later torch may)."""
    formulas = [*zip(CPU_ATTENTION_OPS, (_cpu_attention_flop, _cpu_attention_backward_flop), strict=True)]
    formulas += [(op, _linear_flop) for op in FUSED_LINEAR_OPS]
    for op, formula in formulas:
        if op not in flop_counter.flop_registry and op.default not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op)(formula)


_register()


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul, convolution and attention FLOPs of one call of ``fn`` (forward and backward if it runs
    both), CPU attention kernels included."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
