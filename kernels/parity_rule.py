"""The tolerance rule of the parity checks (tests/parity, and the gpu_check bench), without pytest.

fp32 results must satisfy |got - ref64| <= atol + rtol |ref64| for every element (fixed atol, rtol);
fp16 / bf16 results follow the flash-attention rule, max error vs the fp64 reference <= factor x the
max error of the torch path run on the same low-precision inputs + LOW_ATOL (factor 2 for outputs, 3
for gradients). ``ErrorReport.check`` asserts the rule (an AssertionError with its message) and
records the largest errors per key.

Only torch is imported.
"""

from __future__ import annotations

import torch

FP32_ATOL = 1e-5
FP32_RTOL = 1e-5
LOW_ATOL = 1e-4
LOSS_ATOL = 1e-6
"""atol of the masked loss's value itself in fp32 (a mean of O(1) squares: tighter than FP32_ATOL)."""


def max_abs_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float64 on the CPU (0 for empty tensors)."""
    return (a.double().cpu() - b.double().cpu()).abs().max().item() if a.numel() else 0.0


class ErrorReport:
    """The largest error seen per key, and the tolerance rule (``check``)."""

    def __init__(self, title: str, width: int = 34) -> None:
        self.title, self.width = title, width
        self.max_err: dict[str, float] = {}

    def record(self, key: str, err: float) -> None:
        self.max_err[key] = max(self.max_err.get(key, 0.0), err)

    def check(
        self,
        name: str,
        got: torch.Tensor,
        ref64: torch.Tensor,
        low: torch.Tensor | None,
        dtype: torch.dtype,
        tag: str,
        *,
        factor: float,
        atol: float = FP32_ATOL,
    ) -> None:
        """Record the Triton error and assert the rule for ``dtype``; ``low`` (the torch path on the same
        low-precision inputs) is needed, and its error recorded, only when dtype is not float32."""
        dname = str(dtype)[6:]
        err = max_abs_error(got, ref64)
        self.record(f"{dname} triton {name}", err)
        if dtype == torch.float32:
            bound = atol + FP32_RTOL * ref64.double().abs().cpu()
            bad = (got.double().cpu() - ref64.double().cpu()).abs() > bound
            assert not bad.any(), f"{tag} {name}: max err {err:.3e} ({int(bad.sum())} elements out of bound)"
            return
        assert low is not None, "the low-precision rule needs the torch path's result"
        err_low = max_abs_error(low, ref64)
        self.record(f"{dname} torch {name}", err_low)
        assert err <= factor * err_low + LOW_ATOL, (
            f"{tag} {name}: triton err {err:.3e} > {factor} x torch {dname} err {err_low:.3e} + {LOW_ATOL}"
        )

    def lines(self) -> list[str]:
        """The table of largest errors: the title, then one line per key."""
        return [
            self.title,
            *(f"  {key:<{self.width}s} {self.max_err[key]:.3e}" for key in sorted(self.max_err)),
        ]
