"""The torch path's SDPA form of Eq. 2 equals the explicit reference, incl. rows without keys."""

import pytest
import torch

from fusmae_fast.kernels.cross_modal_attention import cross_modal_attention_ref
from fusmae_fast.torch_ops import cross_modal_attention_sdpa


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("L", "splits"),
    # a sample lacking a modality (fix-up path), ragged splits (masked call), one split (two calls)
    [(1, [0, 1]), (7, [0, 3, 7]), (50, [25, 1, 49, 0]), (50, [25, 1, 49]), (50, [20, 20, 20]), (113, [56])],
)
def test_sdpa_form_equals_reference(dtype, L, splits):
    g = torch.Generator().manual_seed(L)
    b, h, d = len(splits), 3, 40
    q, k, v, do = (torch.randn(b, L, h, d, generator=g, dtype=dtype) for _ in range(4))
    split = torch.tensor(splits, dtype=torch.int64)
    outs = []
    for fn in (cross_modal_attention_ref, cross_modal_attention_sdpa):
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        o = fn(qq, kk, vv, split)
        grads = torch.autograd.grad(o, (qq, kk, vv), do)
        outs.append((o.detach(), *grads))
    tol = {torch.float64: 1e-10, torch.float32: 2e-5}[dtype]
    for name, a, r in zip(("o", "dq", "dk", "dv"), outs[1], outs[0], strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, r, atol=tol, rtol=tol, msg=name)
    no_key = (split == 0) | (split == L)
    for t in outs[1]:  # rows of samples without a key of the other modality: exact zeros
        assert (t[no_key] == 0).all()
