"""Model-level parity: one training step of the tiny preset with kernels='torch' and kernels='triton'
from the same weights and masks gives the same losses and the same gradient for every parameter
(fp32; on a CPU the Triton kernels run in the interpreter)."""

import copy

import pytest
import torch

from fusmae_fast import build_model


@pytest.mark.parametrize("variant", ["xae", "xad"])
@pytest.mark.parametrize("masking", ["consistent", "independent"])
def test_training_step_torch_vs_triton(variant, masking, device):
    torch.manual_seed(0)
    ref = build_model("tiny", variant=variant, masking=masking).to(device)
    tri = copy.deepcopy(ref).set_kernels("triton")
    g = torch.Generator().manual_seed(1)
    s1 = torch.randn(2, 2, 120, 120, generator=g).to(device)
    s2 = torch.randn(2, 12, 120, 120, generator=g).to(device)
    seeds = torch.tensor([3, 4], device=device)
    out_ref = ref(s1, s2, seeds=seeds)
    out_tri = tri(s1, s2, seeds=seeds)
    assert torch.equal(out_ref.mask_s1, out_tri.mask_s1) and torch.equal(out_ref.split, out_tri.split)
    for name in ("loss", "loss_s1", "loss_s2"):
        torch.testing.assert_close(getattr(out_tri, name), getattr(out_ref, name), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out_tri.pred_s2, out_ref.pred_s2, atol=1e-5, rtol=1e-5)
    out_ref.loss.backward()
    out_tri.loss.backward()
    ref_params = dict(ref.named_parameters())
    for name, p in tri.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)
