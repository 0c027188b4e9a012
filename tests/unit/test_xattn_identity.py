"""The key identity of docs/design.md §2: Eq. 2 on the concatenated, modality-sorted sequence with the
anti-diagonal mask equals the literal form: two cross-attentions CA(x, y), CA(y, x), then torch.cat,
per sample."""

import math

import pytest
import torch
import torch.nn.functional as F

from fusmae_fast import ops
from fusmae_fast.model import XAttnBlock


@pytest.fixture(autouse=True)
def float64_default():
    """These identities are checked in float64; restore the default dtype for other modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def literal_attention(q, k, v, split):
    """Per sample: softmax(Qx Ky^T / sqrt d) Vy for x's queries, and the other way round, then cat."""
    outs = []
    for b in range(q.shape[0]):
        s = int(split[b])
        parts = []
        for qs, ks in ((slice(0, s), slice(s, None)), (slice(s, None), slice(0, s))):
            qq = q[b, qs].transpose(0, 1)
            kk, vv = k[b, ks].transpose(0, 1), v[b, ks].transpose(0, 1)
            if kk.shape[1] == 0:
                parts.append(torch.zeros_like(q[b, qs]))
                continue
            a = torch.softmax(qq @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            parts.append((a @ vv).transpose(0, 1))
        outs.append(torch.cat(parts, dim=0))
    return torch.stack(outs)


@pytest.mark.parametrize("b, length, h, d", [(1, 1, 1, 8), (3, 7, 2, 16), (4, 33, 3, 40)])
def test_op_equals_two_attentions_then_cat(b, length, h, d):
    g = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(b, length, h, d, generator=g, requires_grad=True) for _ in range(3))
    split = torch.randint(0, length + 1, (b,), generator=g)
    split[0] = 0 if length > 1 else 1  # include an all-one-modality row
    o = ops.cross_modal_attention(q, k, v, split)
    ref = literal_attention(q, k, v, split)
    torch.testing.assert_close(o, ref, atol=1e-12, rtol=1e-10)
    go = torch.randn_like(o)
    grads = torch.autograd.grad(o, (q, k, v), go)
    grads_ref = torch.autograd.grad(ref, (q, k, v), go)
    for a, r in zip(grads, grads_ref, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-10)


def test_op_equals_sdpa_with_boolean_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 20, 2, 8, generator=g) for _ in range(3))
    split = torch.tensor([5, 13])
    pos = torch.arange(20)
    first = pos[None] < split[:, None]
    allowed = first[:, :, None] != first[:, None, :]
    sdpa = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed[:, None]
    ).transpose(1, 2)
    torch.testing.assert_close(ops.cross_modal_attention(q, k, v, split), sdpa)


@pytest.mark.parametrize("per_direction", [False, True])
def test_xattn_block_equals_literal_eq2(per_direction):
    """XAttnEncoder: fus = x(+)y + CA(x,y)(+)CA(y,x) (pre-norm), out = fus + MLP(LN fus)."""
    torch.manual_seed(0)
    dim, heads, length = 16, 2, 11
    blk = XAttnBlock(dim, heads, 4.0, True, per_direction)
    z = torch.randn(4, length, dim)
    split = torch.tensor([0, 3, 6, 11])
    out = blk(z, split, "torch")

    ca = blk.xattn
    expected = []
    for b in range(z.shape[0]):
        s = int(split[b])
        zn = blk.norm1(z[b])
        x, y = zn[:s], zn[s:]

        def ca_literal(qside, kvside, qkv_q, qkv_kv, proj):
            if kvside.shape[0] == 0 or qside.shape[0] == 0:
                return torch.zeros(qside.shape[0], dim)
            q = qkv_q(qside)[:, :dim].reshape(-1, heads, dim // heads).transpose(0, 1)
            kv = qkv_kv(kvside)
            k = kv[:, dim : 2 * dim].reshape(-1, heads, dim // heads).transpose(0, 1)
            v = kv[:, 2 * dim :].reshape(-1, heads, dim // heads).transpose(0, 1)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), -1)
            return proj((a @ v).transpose(0, 1).reshape(-1, dim))

        qkv_a, proj_a = ca.qkv, ca.proj
        qkv_b, proj_b = (ca.qkv_b, ca.proj_b) if per_direction else (ca.qkv, ca.proj)
        fus = z[b] + torch.cat(
            [ca_literal(x, y, qkv_a, qkv_a, proj_a), ca_literal(y, x, qkv_b, qkv_b, proj_b)]
        )
        expected.append(fus + blk.mlp(blk.norm2(fus)))
    torch.testing.assert_close(out, torch.stack(expected), atol=1e-12, rtol=1e-10)


def test_missing_modality_block_is_identity_plus_mlp():
    torch.manual_seed(1)
    blk = XAttnBlock(16, 2, 4.0, True, False)
    z = torch.randn(2, 9, 16)
    for split in (torch.zeros(2, dtype=torch.long), torch.full((2,), 9)):
        torch.testing.assert_close(blk(z, split, "torch"), z + blk.mlp(blk.norm2(z)))
