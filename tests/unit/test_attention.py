"""fusmae_fast.attention: the explicit form equals SDPA (values and gradients), keeps the low-precision
rule against an fp64 evaluation, and is chosen where the module says."""

import pytest
import torch
import torch.nn.functional as F

from fusmae_fast import form_timing
from fusmae_fast.attention import (
    EXPLICIT_FP32_FWD_MAX_KEYS,
    EXPLICIT_FP32_MAX_KEYS,
    EXPLICIT_MAX_KEYS,
    EXPLICIT_MAX_SCORE_BYTES,
    SOFTMAX_FP32_BELOW_KEYS,
    _softmax,
    attention,
    explicit_attention,
    explicit_is_faster,
    softmax_via_fp32,
)
from fusmae_fast.kernels.parity_rule import LOW_ATOL, max_abs_error


def _run(fn, q, k, v, do, mask=None):
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    o = fn(*leaves, mask)
    return (o.detach(), *torch.autograd.grad(o, leaves, do))


def _textbook(q, k, v, mask=None):
    """Attention as written by hand, differentiated by autograd: the low-precision rule's baseline."""
    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v


def _sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("masked", [None, "full", "over heads"])
@pytest.mark.parametrize(
    "shape",  # (batch dims..., Lq, Lk, D): batch 1, head_dim 40, Lq != Lk (fewer keys than D: the scores
    # are scaled, not q), lengths off powers of two
    [(1, 1, 1, 1, 8), (2, 3, 7, 5, 40), (1, 2, 113, 113, 64), (3, 2, 2, 9, 11, 32)],
)
def test_explicit_equals_sdpa_fp64(shape, masked):
    g = torch.Generator().manual_seed(len(shape) * 7 + shape[-1])
    *batch, lq, lk, d = shape
    q, do = (torch.randn(*batch, lq, d, generator=g, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(*batch, lk, d, generator=g, dtype=torch.float64) for _ in range(2))
    mask = None
    if masked:  # "over heads": one mask per sample broadcast over the head dim, as the model passes it
        mask_batch = batch if masked == "full" else [*batch[:-1], 1]
        mask = torch.rand(*mask_batch, lq, lk, generator=g) > 0.4
        mask[..., 0] = True  # every query row keeps a key
    want = _run(_sdpa, q, k, v, do, mask)
    got = _run(explicit_attention, q, k, v, do, mask)
    for name, a, r in zip(("o", "dq", "dk", "dv"), got, want, strict=True):
        torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-12, msg=name)


def test_explicit_broadcast_keys_fp64():
    """Keys and values shared across the heads (broadcast leading dims): values and gradients equal
    SDPA's, the gradients summed over the broadcast dim at the inputs' own shape."""
    g = torch.Generator().manual_seed(3)
    q, do = (torch.randn(2, 3, 17, 40, generator=g, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(2, 1, 9, 40, generator=g, dtype=torch.float64) for _ in range(2))
    want = _run(_sdpa, q, k, v, do)
    got = _run(explicit_attention, q, k, v, do)
    assert got[2].shape == k.shape and got[3].shape == v.shape
    for name, a, r in zip(("o", "dq", "dk", "dv"), got, want, strict=True):
        torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-12, msg=name)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("kv_heads", [3, 1])  # 1: keys and values broadcast over the heads
def test_explicit_without_a_gradient_is_the_forward_of_the_graph_form(masked, kv_heads):
    """Where no gradient will be taken the explicit form runs without an autograd node: the same output,
    bit for bit, as with a graph (the same products in the same order), and nothing kept for a
    backward; in fp64 it equals SDPA."""
    g = torch.Generator().manual_seed(11 + kv_heads)
    q = torch.randn(2, 3, 17, 40, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, kv_heads, 9, 40, generator=g, dtype=torch.float64) for _ in range(2))
    mask = None
    if masked:
        mask = torch.rand(2, 1, 17, 9, generator=g) > 0.4
        mask[..., 0] = True
    with_graph = explicit_attention(q.requires_grad_(True), k, v, mask)
    assert with_graph.grad_fn is not None
    q.requires_grad_(False)
    with torch.no_grad():
        no_grad = explicit_attention(q, k, v, mask)
    no_input_needs_grad = explicit_attention(q, k, v, mask)
    for out in (no_grad, no_input_needs_grad):
        assert out.grad_fn is None and out.shape == with_graph.shape
        assert torch.equal(out, with_graph.detach())
    torch.testing.assert_close(no_grad, _sdpa(q, k, v, mask), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 3, 113, 64), (2, 2, 225, 32), (1, 1, 37, 40), (2, 3, 56, 64)])
def test_explicit_low_precision_rule(dtype, shape):
    """Error vs fp64 <= 2x (outputs) / 3x (gradients) the textbook form's on the same inputs + LOW_ATOL."""
    g = torch.Generator().manual_seed(shape[-1])
    q, k, v, do = (2 * torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(4))
    ref = _run(_textbook, q, k, v, do)
    low_inputs = [t.to(dtype) for t in (q, k, v, do)]
    low = _run(_textbook, *low_inputs)
    got = _run(explicit_attention, *low_inputs)
    for i, name in enumerate(("o", "dq", "dk", "dv")):
        assert got[i].dtype == dtype
        factor = 2.0 if i == 0 else 3.0
        bound = factor * max_abs_error(low[i], ref[i]) + LOW_ATOL
        assert max_abs_error(got[i], ref[i]) <= bound, name


def test_softmax_of_short_16_bit_rows_goes_through_fp32():
    """Rows of bf16/fp16 scores shorter than SOFTMAX_FP32_BELOW_KEYS and off a multiple of 32 take their
    softmax in fp32, rounded once: the 16-bit kernel's own result to within one rounding."""
    assert softmax_via_fp32(56, torch.bfloat16) and softmax_via_fp32(40, torch.float16)
    assert softmax_via_fp32(SOFTMAX_FP32_BELOW_KEYS - 1, torch.bfloat16)
    assert not softmax_via_fp32(SOFTMAX_FP32_BELOW_KEYS, torch.bfloat16)
    assert not softmax_via_fp32(64, torch.bfloat16) and not softmax_via_fp32(113, torch.bfloat16)
    assert not softmax_via_fp32(56, torch.float32)
    g = torch.Generator().manual_seed(5)
    for keys in (56, 64, 113):
        s = (3 * torch.randn(4, 7, keys, generator=g)).to(torch.bfloat16)
        got = _softmax(s)
        assert got.dtype == torch.bfloat16
        if softmax_via_fp32(keys, s.dtype):
            assert torch.equal(got, torch.softmax(s.float(), -1).to(torch.bfloat16))
        ulp = torch.finfo(torch.bfloat16).eps * got.float().abs().clamp_min(2**-126)
        assert ((got.float() - torch.softmax(s, -1).float()).abs() <= ulp).all()


def test_explicit_under_autocast_runs_in_the_autocast_dtype():
    q = torch.randn(2, 2, 9, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o = explicit_attention(q, q, q)
    assert o.dtype == torch.bfloat16
    o.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.float32 and torch.isfinite(q.grad).all()


def test_choice_of_form():
    def t(dtype, keys, d=64, device="cpu", grad=True):
        return torch.empty(1, 1, keys, d, dtype=dtype, device=device, requires_grad=grad)

    assert explicit_is_faster(t(torch.bfloat16, 113), t(torch.bfloat16, 113))
    assert explicit_is_faster(t(torch.float16, 225, 32), t(torch.float16, 225, 32))
    assert not explicit_is_faster(t(torch.bfloat16, 8), t(torch.bfloat16, EXPLICIT_MAX_KEYS + 1))
    assert not explicit_is_faster(t(torch.float32, 225, 32), t(torch.float32, 225, 32))
    assert not explicit_is_faster(t(torch.float32, 56), t(torch.float32, 56))  # fp32: paired calls only
    assert explicit_is_faster(t(torch.float32, 56), t(torch.float32, 56), paired=True)
    big = EXPLICIT_FP32_MAX_KEYS + 1
    assert explicit_is_faster(t(torch.float32, 56), t(torch.float32, EXPLICIT_FP32_MAX_KEYS), paired=True)
    assert not explicit_is_faster(t(torch.float32, big), t(torch.float32, big), paired=True)
    # fp32 with a mask: explicit when a gradient will be taken, at any head dim, up to the same length
    assert explicit_is_faster(t(torch.float32, 112, 32), t(torch.float32, 112, 32), masked=True)
    assert explicit_is_faster(t(torch.float32, 8), t(torch.float32, EXPLICIT_FP32_MAX_KEYS), masked=True)
    assert not explicit_is_faster(t(torch.float32, 8), t(torch.float32, big), masked=True)
    no_grad = t(torch.float32, 112, grad=False)
    assert not explicit_is_faster(no_grad, no_grad, masked=True)
    # fp32 forward alone (no gradient wanted, or none possible): explicit only for short key sequences
    fwd = EXPLICIT_FP32_FWD_MAX_KEYS
    assert explicit_is_faster(
        t(torch.float32, 56, grad=False), t(torch.float32, fwd, grad=False), paired=True
    )
    assert not explicit_is_faster(
        t(torch.float32, 56, grad=False), t(torch.float32, fwd + 1, grad=False), paired=True
    )
    with torch.no_grad():
        assert explicit_is_faster(t(torch.float32, 56), t(torch.float32, 56), paired=True)
        assert not explicit_is_faster(t(torch.float32, 128), t(torch.float32, 128), paired=True)
        assert not explicit_is_faster(t(torch.float32, 112), t(torch.float32, 112), masked=True)
        assert explicit_is_faster(t(torch.bfloat16, 56), t(torch.bfloat16, 56))  # bf16: both ways
    assert not explicit_is_faster(t(torch.float32, 56, 32), t(torch.float32, 56, 32), paired=True)
    assert not explicit_is_faster(t(torch.float64, 56), t(torch.float64, 56))
    assert not explicit_is_faster(t(torch.bfloat16, 56, device="meta"), t(torch.bfloat16, 56, device="meta"))


def test_choice_of_form_respects_the_score_memory_cap():
    """Probabilities over EXPLICIT_MAX_SCORE_BYTES go to SDPA whatever the dtype (expanded views: no
    memory)."""
    keys = 1024  # within EXPLICIT_MAX_KEYS
    heads = EXPLICIT_MAX_SCORE_BYTES // (keys * keys * 2)  # bf16 probabilities of exactly the cap

    def t(batch):
        return torch.zeros(64, dtype=torch.bfloat16, requires_grad=True).expand(batch, heads, keys, 64)

    assert explicit_is_faster(t(1), t(1))
    assert not explicit_is_faster(t(2), t(2))


def test_attention_dispatches_to_both_forms(monkeypatch):
    """By the rules (gradient-free calls are timed otherwise: test_form_timing.py)."""
    monkeypatch.setattr(form_timing, "_ENABLED", [False])
    q = torch.randn(1, 2, 5, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(attention(q, q, q), explicit_attention(q, q, q), atol=0, rtol=0)
    q64 = torch.randn(1, 2, 30, 64)
    torch.testing.assert_close(attention(q64, q64, q64), _sdpa(q64, q64, q64), atol=0, rtol=0)
