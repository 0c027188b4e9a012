"""The benchmark baseline (bench/plain_model.py) is the same model as FusMAE: same weights, same loss.

bench/step.py reports FusMAE's step against this textbook implementation; the ratio only means
something if both compute the same function, which these tests check (loss and every gradient, for
every variant x masking x weight sharing, and with an empty modality).
"""

import pytest
import torch

from fusmae_fast import patches
from fusmae_fast.bench.plain_model import PlainFusMAE, patchify, plain_from
from fusmae_fast.masking import Masking, random_masking
from fusmae_fast.model import build_model


def _images(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, 120, 120, generator=g), torch.randn(b, 12, 120, 120, generator=g)


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (biases are zero-initialised, which would hide a missing bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn(prm.shape, generator=g))


def _compare(model, plain, s1, s2, masking) -> None:
    out = model(s1, s2, masking=masking)
    loss_plain = plain(s1, s2, masking=masking)
    torch.testing.assert_close(loss_plain, out.loss, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    loss_plain.backward()
    grads = dict(plain.named_parameters())
    for name, prm in model.named_parameters():
        other = grads[name].grad
        assert (prm.grad is None) == (other is None), name
        if prm.grad is not None:
            torch.testing.assert_close(other, prm.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("variant", ["xae", "xad"])
@pytest.mark.parametrize("masking", ["consistent", "independent"])
@pytest.mark.parametrize("xattn_weights", ["shared", "per_direction"])
def test_plain_equals_fusmae(variant, masking, xattn_weights):
    torch.manual_seed(0)
    model = build_model("tiny", variant=variant, masking=masking, xattn_weights=xattn_weights)
    _perturb(model)
    plain = plain_from(model)
    assert isinstance(plain, PlainFusMAE)
    assert plain.state_dict().keys() == model.state_dict().keys()
    s1, s2 = _images(3)
    cfg = model.config
    gen = torch.Generator().manual_seed(5)
    m = random_masking(3, cfg.num_patches, cfg.mask_ratio, masking, generator=gen)
    if masking == "independent":
        assert len(set(m.split.tolist())) > 1, "want ragged splits to exercise the grouping path"
    _compare(model, plain, s1, s2, m)


def _masking_from_keep(ids_keep: torch.Tensor, n: int) -> Masking:
    """A Masking for given kept combined indices (ascending), with MAE's ids_restore convention."""
    b, k = ids_keep.shape
    mask = torch.ones(b, 2 * n, dtype=torch.bool)
    mask.scatter_(1, ids_keep, False)
    masked = torch.nonzero(mask)[:, 1].reshape(b, 2 * n - k)
    ids_restore = torch.argsort(torch.cat([ids_keep, masked], dim=1), dim=1)
    split = (ids_keep < n).sum(dim=1)
    return Masking(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask, split=split, num_patches=n)


@pytest.mark.parametrize("xattn_weights", ["shared", "per_direction"])
def test_plain_equals_fusmae_with_an_empty_modality(xattn_weights):
    """Sample 0 keeps only S2 tokens (split 0), sample 1 only S1 (split K), sample 2 both."""
    torch.manual_seed(0)
    model = build_model("tiny", masking="independent", xattn_weights=xattn_weights)
    _perturb(model, seed=1)
    plain = plain_from(model)
    n = model.config.num_patches
    k = model.config.num_kept()
    g = torch.Generator().manual_seed(3)
    rows = [
        torch.sort(torch.randperm(n, generator=g)[:k] + n).values,
        torch.sort(torch.randperm(n, generator=g)[:k]).values,
        torch.sort(torch.randperm(2 * n, generator=g)[:k]).values,
    ]
    masking = _masking_from_keep(torch.stack(rows), n)
    assert masking.split.tolist()[:2] == [0, k]
    s1, s2 = _images(3, seed=2)
    _compare(model, plain, s1, s2, masking)


def test_plain_patchify_is_maes():
    img = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(patchify(img, 8), patches.patchify(img, 8), rtol=0, atol=0)
