import pytest
import torch

from fusmae_fast.masking import random_masking, single_modality


def _check_invariants(m, b, n):
    k = m.num_kept
    assert m.ids_keep.shape == (b, k) and m.ids_restore.shape == (b, 2 * n) and m.mask.shape == (b, 2 * n)
    # kept indices: distinct, ascending (hence modality-sorted), in range
    assert torch.all(m.ids_keep[:, 1:] > m.ids_keep[:, :-1])
    assert int(m.ids_keep.min()) >= 0 and int(m.ids_keep.max()) < 2 * n
    # mask agrees with ids_keep and counts
    assert torch.equal((~m.mask).sum(1), torch.full((b,), k))
    assert not m.mask.gather(1, m.ids_keep).any()
    # split = number of S1 tokens; tokens [0, split) are S1
    assert torch.equal(m.split, (m.ids_keep < n).sum(1))
    assert torch.equal(m.split, (~m.mask_s1).sum(1))
    # ids_restore is a permutation whose first K slots restore the kept tokens
    assert torch.equal(torch.sort(m.ids_restore, 1).values, torch.arange(2 * n).expand(b, -1))
    pos = torch.arange(2 * n).expand(b, -1)
    kept_rows = m.ids_restore[~m.mask].reshape(b, k)
    assert torch.equal(kept_rows, torch.arange(k).expand(b, -1))
    shuffled = torch.empty_like(m.ids_restore).scatter_(1, m.ids_restore, pos)
    assert torch.equal(shuffled[:, :k], m.ids_keep)
    # masked positions restore to rows >= K (scatter_tokens' mask-token convention)
    assert bool((m.ids_restore[m.mask] >= k).all())


@pytest.mark.parametrize("strategy", ["independent", "consistent"])
@pytest.mark.parametrize("b, n, ratio", [(1, 225, 0.75), (5, 16, 0.5), (3, 9, 0.9), (4, 1, 0.0)])
def test_invariants(strategy, b, n, ratio):
    g = torch.Generator().manual_seed(1)
    if strategy == "consistent" and int(n * (1 - ratio)) < 1:
        with pytest.raises(ValueError, match="keeps no patch"):
            random_masking(b, n, ratio, strategy, generator=g)
        return
    m = random_masking(b, n, ratio, strategy, generator=g)
    _check_invariants(m, b, n)


def test_consistent_keeps_same_positions():
    m = random_masking(6, 225, 0.75, "consistent", generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.mask_s1, m.mask_s2)
    assert torch.equal(m.split, torch.full((6,), 56))
    assert m.num_kept == 112


def test_independent_reaches_every_split():
    # N = 4 patches per modality, ratio 0.5 keeps K = 4 of 8: every split 0..4 must occur.
    g = torch.Generator().manual_seed(0)
    m = random_masking(2000, 4, 0.5, "independent", generator=g)
    assert set(m.split.tolist()) == {0, 1, 2, 3, 4}
    # and the marginal is hypergeometric: P(split=2) = C(4,2)^2 / C(8,4) = 36/70
    frac = float((m.split == 2).float().mean())
    assert abs(frac - 36 / 70) < 0.05


def test_seeded_and_different_per_seed():
    a = random_masking(4, 225, 0.75, "independent", generator=torch.Generator().manual_seed(3))
    b = random_masking(4, 225, 0.75, "independent", generator=torch.Generator().manual_seed(3))
    c = random_masking(4, 225, 0.75, "independent", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.ids_keep, b.ids_keep)
    assert not torch.equal(a.ids_keep, c.ids_keep)


def test_modality_ids_rebuild_sequence():
    n = 16
    m = random_masking(8, n, 0.6, "independent", generator=torch.Generator().manual_seed(2))
    i1, i2 = m.ids_keep_modality(1), m.ids_keep_modality(2)
    assert torch.equal((i1 >= 0).sum(1), m.split)
    assert torch.equal(torch.where(i1 >= 0, i1, i2 + n), m.ids_keep)
    assert bool(((i1 >= 0) ^ (i2 >= 0)).all())


def test_none_and_single_modality():
    m = random_masking(2, 9, 0.0, "none")
    assert m.num_kept == 18 and torch.equal(m.split, torch.tensor([9, 9])) and not m.mask.any()
    s2 = single_modality(2, 9, 2)
    assert torch.equal(s2.split, torch.zeros(2, dtype=torch.long)) and s2.mask_s1.all()
    s1 = single_modality(2, 9, 1)
    assert torch.equal(s1.split, torch.full((2,), 9)) and s1.mask_s2.all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        random_masking(2, 9, 0.5, "random")
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(2, 9, 1.0, "independent")
    with pytest.raises(ValueError, match="keeps no"):
        random_masking(2, 4, 0.9, "consistent")


def test_per_sample_seeds_make_masks_batch_independent():
    seeds = torch.tensor([11, 12, 13, 14])
    whole = random_masking(4, 225, 0.75, "independent", seeds=seeds)
    first = random_masking(2, 225, 0.75, "independent", seeds=seeds[:2])
    last = random_masking(2, 225, 0.75, "independent", seeds=seeds[2:])
    assert torch.equal(whole.ids_keep, torch.cat([first.ids_keep, last.ids_keep]))
    assert not torch.equal(whole.ids_keep[0], whole.ids_keep[1])
    with pytest.raises(ValueError, match="seeds"):
        random_masking(3, 225, 0.75, "independent", seeds=seeds)
