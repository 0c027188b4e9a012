"""The torch path's masked MSE (``masked_mse_torch``: in-place passes, hand-written backward) equals
the float64 reference ``masked_mse_ref``: loss and d pred, over image sizes, channel counts, norm_pix,
mask ratios 0 / 0.75 / 1 in one batch, float mask weights, strided masks, batch 1, P = 1 with one
channel, low-precision predictions (autocast), repeated backward, and the fallbacks (image gradient).

fp32: |torch - fp64| <= 1e-5 + 1e-5 |ref| with the upstream gradient chosen so that d pred is O(1)
(loss: 1e-6 + 1e-5 |ref|). bf16 / fp16 predictions: the flash-attention rule, error <= 2 x the error
of the reference run on the same low-precision inputs + 1e-4 (3 x for d pred).
"""

from __future__ import annotations

import pytest
import torch

from fusmae_fast import ops
from fusmae_fast.kernels.masked_loss import masked_mse_ref
from fusmae_fast.torch_ops import masked_mse_torch


def _case(b, c, size, patch, seed, ratios=(0.0, 0.75, 1.0)):
    g = torch.Generator().manual_seed(seed)
    n = (size // patch) ** 2
    img = torch.randn(b, c, size, size, generator=g, dtype=torch.float64) * 3.0 + 1.0
    pred = torch.randn(b, n, patch * patch * c, generator=g, dtype=torch.float64)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        mask[i, torch.randperm(n, generator=g)[: int(round(n * ratios[i % len(ratios)]))]] = True
    return pred, img, mask


def _loss_and_grad(fn, pred, img, mask, patch, norm_pix, upstream):
    pred = pred.detach().clone().requires_grad_(True)
    loss = fn(pred, img, mask, patch, norm_pix)
    (dpred,) = torch.autograd.grad(loss, pred, torch.tensor(upstream, dtype=loss.dtype))
    return loss.detach(), dpred


def _upstream(pred, mask):
    return pred.shape[-1] * max(float(mask.double().sum()), 1.0) / 2.0  # makes d pred = w (pred - t)


FP32_CASES = [
    (size, patch, channels, norm_pix, batch)
    for size, patch in [(8, 4), (120, 8), (64, 16), (6, 1)]
    for channels in (1, 2, 12)
    for norm_pix in (True, False)
    for batch in (1, 3)
    if not (norm_pix and patch * patch * channels < 2)  # an error, tested in test_errors_and_dispatch
]


@pytest.mark.parametrize("size,patch,channels,norm_pix,batch", FP32_CASES)
def test_fp32_matches_float64_reference(size, patch, channels, norm_pix, batch):
    pred, img, mask = _case(batch, channels, size, patch, seed=size * 100 + channels + batch)
    up = _upstream(pred, mask)
    ref_loss, ref_d = _loss_and_grad(masked_mse_ref, pred, img, mask, patch, norm_pix, up)
    loss, d = _loss_and_grad(masked_mse_torch, pred.float(), img.float(), mask, patch, norm_pix, up)
    assert loss.dtype == torch.float32 and loss.shape == () and d.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(d.double(), ref_d, atol=1e-5, rtol=1e-5)
    assert not d[~mask].any(), "d pred must be exactly 0 on visible patches"


def test_float64_inputs_stay_float64_and_match_exactly_enough():
    pred, img, mask = _case(2, 12, 16, 8, seed=1)
    up = _upstream(pred, mask)
    ref = _loss_and_grad(masked_mse_ref, pred, img, mask, 8, True, up)
    got = _loss_and_grad(masked_mse_torch, pred, img, mask, 8, True, up)
    assert got[0].dtype == torch.float64
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_float_weights_and_strided_mask():
    pred, img, _ = _case(2, 2, 16, 4, seed=2)
    wide = torch.rand(2, 2 * 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    wide[:, ::3] = 0.0
    mask = wide[:, 16:]  # a strided slice, as the model's per-modality masks
    assert not mask.is_contiguous()
    up = _upstream(pred, mask)
    ref = _loss_and_grad(masked_mse_ref, pred, img, mask, 4, True, up)
    got = _loss_and_grad(masked_mse_torch, pred.float(), img.float(), mask.float(), 4, True, up)
    torch.testing.assert_close(got[0].double(), ref[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[1].double(), ref[1], atol=1e-5, rtol=1e-5)


def test_non_contiguous_image():
    pred, img, mask = _case(2, 3, 16, 4, seed=10)
    wide = torch.cat([img, img], dim=1).float()[:, 1:4]  # a channel slice: not contiguous
    assert not wide.is_contiguous()
    up = _upstream(pred, mask)
    ref = _loss_and_grad(masked_mse_ref, pred, wide.double(), mask, 4, True, up)
    got = _loss_and_grad(masked_mse_torch, pred.float(), wide, mask, 4, True, up)
    torch.testing.assert_close(got[0].double(), ref[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[1].double(), ref[1], atol=1e-5, rtol=1e-5)


def test_nothing_masked_gives_zero_loss_and_zero_grad():
    pred, img, _ = _case(2, 2, 16, 4, seed=4)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    loss, d = _loss_and_grad(masked_mse_torch, pred.float(), img.float(), mask, 4, True, 1.0)
    assert float(loss) == 0.0 and not d.any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_prediction_flash_attention_rule(dtype):
    pred, img, mask = _case(3, 12, 24, 8, seed=5)
    up = _upstream(pred, mask)
    low_pred = pred.to(dtype)
    ref = _loss_and_grad(masked_mse_ref, low_pred.double(), img, mask, 8, True, up)
    torch_low = _loss_and_grad(masked_mse_ref, low_pred, img.float(), mask, 8, True, up)
    got = _loss_and_grad(masked_mse_torch, low_pred, img.float(), mask, 8, True, up)
    assert got[0].dtype == torch.float32 and got[1].dtype == dtype
    for i, factor in ((0, 2.0), (1, 3.0)):
        err = (got[i].double() - ref[i]).abs().max().item()
        base = (torch_low[i].double() - ref[i]).abs().max().item()
        assert err <= factor * base + 1e-4, (i, err, base)


def test_repeated_backward_is_stable():
    pred, img, mask = _case(2, 2, 16, 4, seed=6)
    p = pred.float().requires_grad_(True)
    loss = masked_mse_torch(p, img.float(), mask, 4, True)
    (g1,) = torch.autograd.grad(loss, p, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, p)
    assert torch.equal(g1, g2)


def test_image_gradient_falls_back_to_the_reference():
    pred, img, mask = _case(2, 2, 16, 4, seed=7)
    outs = []
    for fn in (masked_mse_ref, masked_mse_torch):
        x = img.clone().requires_grad_(True)
        loss = fn(pred, x, mask, 4, True)
        (dimg,) = torch.autograd.grad(loss, x)
        outs.append((loss.detach(), dimg))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_errors_and_dispatch():
    pred, img, mask = _case(1, 1, 4, 1, seed=8)
    with pytest.raises(ValueError, match="norm_pix needs at least 2"):
        masked_mse_torch(pred, img, mask, 1, True)
    pred, img, mask = _case(2, 2, 16, 4, seed=9)
    torch.testing.assert_close(
        ops.masked_mse(pred.float(), img.float(), mask, 4, True, kernels="torch"),
        masked_mse_ref(pred, img, mask, 4, True).float(),
        atol=1e-6,
        rtol=1e-5,
    )
