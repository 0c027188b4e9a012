"""FLOPs of a callable, counted by ``torch.utils.flop_counter`` with the CPU attention kernels included.

torch's counter has formulas for the CUDA SDPA kernels (flash, memory-efficient, cuDNN) but none for
the CPU flash kernel (``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward), which
every ``F.scaled_dot_product_attention`` call on a CPU runs: uncounted, a row whose attention runs in
SDPA would be credited with less work than one whose attention runs as explicit matmuls. This module
registers torch's own SDPA formulas for those two ops (once, at import) and counts with them.

    from fusmae_fast.bench.flop_count import count_flops
    flops = count_flops(step)     # matmul, convolution and attention FLOPs of one call of ``step``
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils import flop_counter

__all__ = ["CPU_ATTENTION_OPS", "count_flops"]

_aten = torch.ops.aten
CPU_ATTENTION_OPS = (
    _aten._scaled_dot_product_flash_attention_for_cpu,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward,
)
"""The CPU SDPA kernels given torch's SDPA formulas here (forward, backward)."""


def _cpu_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _register() -> None:
    """Give the CPU kernels a formula unless torch already has one (a later torch may)."""
    formulas = (_cpu_attention_flop, _cpu_attention_backward_flop)
    for op, formula in zip(CPU_ATTENTION_OPS, formulas, strict=True):
        if op not in flop_counter.flop_registry and op.default not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op)(formula)


_register()


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul, convolution and attention FLOPs of one call of ``fn`` (forward and backward if it runs
    both), CPU attention kernels included."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
