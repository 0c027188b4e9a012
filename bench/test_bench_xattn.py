"""pytest-benchmark microbenchmarks of the CPU-runnable Eq. 2 providers (small shapes, seconds).

Run: ``pytest bench --benchmark-only`` (see bench/README.md for saving and comparing baselines).
Shapes: B=4, L=112 (Fus-MAE's kept tokens), H=4, D=32, consistent (split 56) and independent splits.
"""

import pytest
import torch

from fusmae_fast.bench import xattn_providers as xp
from fusmae_fast.masking import random_masking

CPU_PROVIDERS = ["torch-reference", "sdpa-mask", "two-calls+cat", "flex"]
B, L, H, D = 4, 112, 4, 32


def _inputs(masking: str, grad: bool):
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(B, L, H, D, generator=g) for _ in range(4))
    split = random_masking(B, 225, 0.75, masking, generator=torch.Generator().manual_seed(1)).split
    if grad:
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    return q, k, v, do, split


@pytest.mark.parametrize("masking", ["consistent", "independent"])
@pytest.mark.parametrize("provider", CPU_PROVIDERS)
def test_xattn_forward(benchmark, provider, masking):
    fn = xp.FUNCTIONS[provider]
    q, k, v, _, split = _inputs(masking, grad=False)
    ref = xp.torch_reference(q, k, v, split)

    def run():
        with torch.no_grad():
            return fn(q, k, v, split)

    out = run()  # warm-up (flex compiles here) and a correctness check
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    benchmark.group = f"xattn fwd {masking}"
    benchmark(run)


@pytest.mark.parametrize("masking", ["consistent", "independent"])
@pytest.mark.parametrize("provider", [p for p in CPU_PROVIDERS if p != "flex"])
def test_xattn_forward_backward(benchmark, provider, masking):
    fn = xp.FUNCTIONS[provider]
    q, k, v, do, split = _inputs(masking, grad=True)

    def run():
        o = fn(q, k, v, split)
        return torch.autograd.grad(o, (q, k, v), do)

    grads = run()
    ref = torch.autograd.grad(xp.torch_reference(q, k, v, split), (q, k, v), do)
    for a, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
    benchmark.group = f"xattn fwd+bwd {masking}"
    benchmark(run)
