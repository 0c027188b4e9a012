"""The torch path of Eq. 2 equals the explicit reference in each of its forms, incl. rows without keys."""

import pytest
import torch

from fusmae_fast import attention as attention_module
from fusmae_fast import form_timing, torch_ops
from fusmae_fast.kernels.cross_modal_attention import cross_modal_attention_ref
from fusmae_fast.torch_ops import cross_modal_attention_torch


@pytest.fixture(params=["explicit", "sdpa"])
def core(request, monkeypatch):
    """Force the attention core (``explicit_is_faster``, timing off) to one form, whatever the operands."""
    monkeypatch.setattr(form_timing, "_ENABLED", [False])
    choice = request.param == "explicit"
    for module in (attention_module, torch_ops):
        monkeypatch.setattr(module, "explicit_is_faster", lambda q, k, **kw: choice)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("L", "splits"),
    # a sample lacking a modality (fix-up path), ragged splits (masked call), one split (two calls),
    # one split at L/2 (the batched both-directions call of the explicit core)
    [
        (1, [0, 1]),
        (7, [0, 3, 7]),
        (50, [25, 1, 49, 0]),
        (50, [25, 1, 49]),
        (50, [20, 20, 20]),
        (50, [25, 25]),
        (113, [56]),
        (112, [56]),
    ],
)
def test_torch_path_equals_reference(core, dtype, L, splits):
    g = torch.Generator().manual_seed(L)
    b, h, d = len(splits), 3, 40
    q, k, v, do = (torch.randn(b, L, h, d, generator=g, dtype=dtype) for _ in range(4))
    split = torch.tensor(splits, dtype=torch.int64)
    outs = []
    for fn in (cross_modal_attention_ref, cross_modal_attention_torch):
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


def test_batched_directions_form_is_taken(monkeypatch):
    """Consistent masking at L/2 with the explicit core runs one attention call, not two."""
    monkeypatch.setattr(form_timing, "_ENABLED", [False])
    calls = []
    real = torch_ops.explicit_attention
    monkeypatch.setattr(torch_ops, "explicit_is_faster", lambda q, k, **kw: True)
    monkeypatch.setattr(torch_ops, "explicit_attention", lambda *a: calls.append(a[0].shape) or real(*a))
    q = torch.randn(2, 10, 2, 8)
    cross_modal_attention_torch(q, q, q, torch.tensor([5, 5]))
    assert calls == [torch.Size([2, 2, 2, 5, 8])]
