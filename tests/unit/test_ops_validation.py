"""The op API rejects bad input with one clear error, the same for both backends."""

import pytest
import torch

from fusmae_fast import ops


def _qkv(b=2, length=5, h=2, d=8, dtype=torch.float32):
    return [torch.randn(b, length, h, d, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_cross_modal_attention_validation(kernels):
    q, k, v = _qkv()
    split = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"\(B, L, H, D\)"):
        ops.cross_modal_attention(q[0], k, v, split, kernels=kernels)
    with pytest.raises(ValueError, match="split"):
        ops.cross_modal_attention(q, k, v, torch.tensor([1, 6]), kernels=kernels)
    with pytest.raises(ValueError, match="split"):
        ops.cross_modal_attention(q, k, v, torch.tensor([1, 2, 3]), kernels=kernels)
    with pytest.raises(ValueError, match="split"):
        ops.cross_modal_attention(q, k, v, split.int(), kernels=kernels)
    with pytest.raises(TypeError, match="share a dtype"):
        ops.cross_modal_attention(q, k.half(), v, split, kernels=kernels)
    with pytest.raises(TypeError, match="float32"):
        ops.cross_modal_attention(*(t.long() for t in (q, k, v)), split, kernels=kernels)


def test_float64_only_on_torch_path():
    q, k, v = _qkv(dtype=torch.float64)
    split = torch.tensor([1, 2])
    assert ops.cross_modal_attention(q, k, v, split).dtype == torch.float64
    with pytest.raises(TypeError, match="float64 with kernels='torch'"):
        ops.cross_modal_attention(q, k, v, split, kernels="triton")


def test_unknown_backend():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="kernels must be one of"):
        ops.cross_modal_attention(q, k, v, torch.tensor([1, 2]), kernels="cuda")


def test_patch_embed_validation():
    img = torch.randn(2, 12, 16, 16)
    w, b, pos = torch.randn(8, 12, 4, 4), torch.randn(8), torch.randn(16, 8)
    ids = torch.tensor([[0, 1], [2, -1]])
    assert ops.masked_patch_embed(img, w, b, pos, ids, 4).shape == (2, 2, 8)
    with pytest.raises(ValueError, match="channel count"):
        ops.masked_patch_embed(img[:, :2], w, b, pos, ids, 4)
    with pytest.raises(ValueError, match="not divisible"):
        ops.masked_patch_embed(torch.randn(2, 12, 18, 18), w, b, pos, ids, 4)
    with pytest.raises(ValueError, match=r"ids_keep values must lie in \[-1, 16\)"):
        ops.masked_patch_embed(img, w, b, pos, torch.tensor([[0, 16], [0, 0]]), 4)
    with pytest.raises(TypeError, match="int64"):
        ops.masked_patch_embed(img, w, b, pos, ids.int(), 4)
    with pytest.raises(ValueError, match="pos"):
        ops.masked_patch_embed(img, w, b, pos[:3], ids, 4)


def test_gather_scatter_loss_validation():
    x = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match=r"ids_keep values must lie in \[0, 6\)"):
        ops.gather_tokens(x, torch.tensor([[0, -1], [0, 1]]))
    with pytest.raises(ValueError, match="pos"):
        ops.gather_tokens(x, torch.tensor([[0, 1], [0, 1]]), torch.randn(5, 4))
    with pytest.raises(ValueError, match="mask_token"):
        ops.scatter_tokens(x, torch.tensor([[0, 1], [2, 3]]), torch.randn(3))
    with pytest.raises(ValueError, match=r"ids_restore values"):
        ops.scatter_tokens(x, torch.tensor([[0, -1], [2, 3]]), torch.randn(4))
    img = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="pred must be"):
        ops.masked_mse(torch.randn(2, 4, 47), img, torch.ones(2, 4), 4, True)
    with pytest.raises(ValueError, match="mask must be"):
        ops.masked_mse(torch.randn(2, 4, 48), img, torch.ones(2, 5), 4, True)
