"""The model's patch layout: MAE's patchify order, its inverse, and the sin-cos position embedding."""

import torch

from fusmae_fast.patches import patchify, sincos_pos_embed_2d, unpatchify


def test_patchify_order_and_roundtrip():
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    x = patchify(img, 4)
    # patch (row 0, col 1), first element: pixel (0, 4), channel 0; then channel 1 (nhwpqc)
    assert x[0, 1, 0] == img[0, 0, 0, 4] and x[0, 1, 1] == img[0, 1, 0, 4] and x[0, 1, 3] == img[0, 0, 0, 5]
    assert torch.equal(unpatchify(x, 4, 3, 8, 8), img)


def test_pos_embed_matches_mae_layout():
    pe = sincos_pos_embed_2d(8, 3)
    assert pe.shape == (9, 8)
    # position 0: sin(0)=0 for sin halves, cos(0)=1 for cos halves
    assert torch.equal(pe[0], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    # raster order: index 1 is (row 0, col 1): the first half (x / width) changes, the second does not
    assert pe[1, 0] != 0 and pe[1, 4] == 0
