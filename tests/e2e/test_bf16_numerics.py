"""bf16 pretraining stays on the fp32 course: 50 steps of the built-in sample, same seed, masks and data
order; at every logged step the bf16 loss is within BF16_LOSS_RTOL of the fp32 loss (measured when this
bound was set: at most 2.3e-4 relative, over a loss falling from 2.48 to 1.72)."""

import json
import os

import pytest

from fusmae_fast.device import cpu_has_native
from fusmae_fast.pretrain import PretrainConfig, run_pretraining

STEPS = 50
BF16_LOSS_RTOL = 2e-3
"""Per-step bound on |loss_bf16 - loss_fp32| / loss_fp32 over the first STEPS steps."""


def _losses(tmp_path, precision):
    out = tmp_path / precision
    cfg = PretrainConfig(
        output_dir=str(out),
        epochs=100,
        max_steps=STEPS,
        batch_size=8,
        num_workers=0,
        warmup_epochs=0,
        blr=3e-2,  # a learning rate at which the loss moves within 50 steps
        recon_samples=0,
        log_every=1,
        precision=precision,
        progress=False,
        device="cpu",
    )
    run_pretraining(cfg)
    with open(os.path.join(out, "log.jsonl")) as fh:
        return {r["step"]: r["loss"] for r in map(json.loads, fh) if "loss" in r}


@pytest.mark.skipif(
    not cpu_has_native("bf16"),
    reason="this CPU has no native bf16 (AVX512-BF16 / AMX): bf16 autocast would be emulated",
)
def test_bf16_losses_follow_fp32(tmp_path):
    fp32, bf16 = _losses(tmp_path, "fp32"), _losses(tmp_path, "bf16")
    assert len(fp32) == STEPS and fp32.keys() == bf16.keys()
    assert fp32[max(fp32)] < 0.8 * fp32[min(fp32)], "the loss must move, or the comparison says nothing"
    worst = max(abs(bf16[s] - fp32[s]) / fp32[s] for s in fp32)
    assert worst <= BF16_LOSS_RTOL, f"bf16 left the fp32 course: worst relative loss gap {worst:.2e}"
