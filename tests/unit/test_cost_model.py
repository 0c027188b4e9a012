"""The cost models the benchmarks divide by count what the op computes."""

import math

import torch

from fusmae_fast.cost_model import cross_modal_attention_flops
from fusmae_fast.kernels.cross_modal_attention import cross_modal_mask


def test_flops_helper():
    """Forward FLOPs = 4 D H per allowed (query, key) pair; the pairs are the mask's True entries."""
    split = torch.tensor([0, 3, 112, 225])
    L, H, D = 225, 6, 64
    pairs = int(cross_modal_mask(split, L).sum())
    assert cross_modal_attention_flops(split, L, H, D) == pairs * 4 * D * H
    assert cross_modal_attention_flops([112], L, H, D) == 8 * 112 * 113 * D * H
    assert cross_modal_attention_flops(split, L, H, D, backward=True) == pairs * 10 * D * H
    assert math.isclose(cross_modal_attention_flops([0], 10, 1, 16), 0)
