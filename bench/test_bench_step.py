"""pytest-benchmark microbenchmark of one pretraining step (tiny preset, B=4): FusMAE vs plain.

Run: ``pytest bench --benchmark-only``. Same weights, masks and optimizer for both providers.
"""

import pytest
import torch

from fusmae_fast.bench.plain_model import plain_from
from fusmae_fast.masking import random_masking
from fusmae_fast.model import build_model
from fusmae_fast.optim import adamw

BATCH = 4


@pytest.mark.parametrize("provider", ["fusmae", "plain"])
def test_step_tiny(benchmark, provider):
    torch.manual_seed(0)
    model = build_model("tiny")
    if provider == "plain":
        model = plain_from(model)
    opt = adamw(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.randn(BATCH, 2, 120, 120, generator=g), torch.randn(BATCH, 12, 120, 120, generator=g)
    mask_gen = torch.Generator().manual_seed(2)
    cfg = model.config

    def step():
        masking = random_masking(BATCH, cfg.num_patches, cfg.mask_ratio, cfg.masking, generator=mask_gen)
        out = model(s1, s2, masking=masking)
        loss = out if provider == "plain" else out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    step()
    benchmark.group = "step tiny B=4 fp32"
    loss = benchmark(step)
    assert torch.isfinite(loss)
