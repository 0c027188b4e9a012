import pytest
import torch

from fusmae_fast import ops
from fusmae_fast.masking import random_masking, single_modality
from fusmae_fast.model import FusMAE, build_model
from fusmae_fast.patches import patchify


def _images(b=2, size=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, size, size, generator=g), torch.randn(b, 12, size, size, generator=g)


@pytest.mark.parametrize("variant", ["xae", "xad"])
@pytest.mark.parametrize("masking", ["independent", "consistent"])
@pytest.mark.parametrize("xattn_weights", ["shared", "per_direction"])
def test_forward_backward_finite(variant, masking, xattn_weights):
    torch.manual_seed(0)
    model = build_model("tiny", variant=variant, masking=masking, xattn_weights=xattn_weights)
    s1, s2 = _images()
    out = model(s1, s2, generator=torch.Generator().manual_seed(0))
    n, p = model.config.num_patches, model.config.patch_size
    assert out.pred_s1.shape == (2, n, p * p * 2) and out.pred_s2.shape == (2, n, p * p * 12)
    assert out.mask_s1.shape == (2, n) and out.mask_s1.dtype == torch.bool
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    torch.testing.assert_close(out.loss, out.loss_s1 + out.loss_s2)
    out.loss.backward()
    for name, prm in model.named_parameters():
        assert prm.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(prm.grad).all(), name
    if masking == "consistent":
        assert torch.equal(out.mask_s1, out.mask_s2)


def test_loss_counts_only_masked_patches():
    torch.manual_seed(0)
    model = build_model("tiny")
    s1, s2 = _images()
    out = model(s1, s2, generator=torch.Generator().manual_seed(1))
    out.pred_s1.retain_grad()
    out.pred_s2.retain_grad()
    out.loss.backward()
    for pred, mask in ((out.pred_s1, out.mask_s1), (out.pred_s2, out.mask_s2)):
        assert torch.count_nonzero(pred.grad[~mask]) == 0
        assert torch.count_nonzero(pred.grad[mask].abs().sum(-1)) == int(mask.sum())


def test_masked_mse_ignores_visible_patches_and_normalises():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, 8, 8, generator=g)
    pred = torch.randn(2, 4, 48, generator=g)
    mask = torch.tensor([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    base = ops.masked_mse(pred, img, mask, 4, True)
    changed = pred.clone()
    changed[~mask] += 5.0
    torch.testing.assert_close(ops.masked_mse(changed, img, mask, 4, True), base)
    # literal formula
    target = patchify(img, 4)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    expected = ((pred - target) ** 2).mean(-1)[mask].mean()
    torch.testing.assert_close(base, expected)
    # float mask equals bool mask; no masked patch gives 0
    torch.testing.assert_close(ops.masked_mse(pred, img, mask.float(), 4, True), base)
    assert ops.masked_mse(pred, img, torch.zeros_like(mask), 4, False).item() == 0.0


def test_patch_embed_equals_conv_on_kept_patches():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 16, 8, 8)
    img = torch.randn(2, 12, 32, 32)
    pos = torch.randn(16, 16)
    ids = torch.tensor([[0, 5, 15, -1], [-1, -1, 3, 2]])
    out = ops.masked_patch_embed(img, conv.weight, conv.bias, pos, ids, 8)
    full = conv(img).flatten(2).transpose(1, 2) + pos
    for b in range(2):
        for j in range(4):
            i = int(ids[b, j])
            if i < 0:
                assert torch.count_nonzero(out[b, j]) == 0
            else:
                torch.testing.assert_close(out[b, j], full[b, i], atol=1e-5, rtol=1e-5)


def test_scatter_tokens_mae_convention():
    latent = torch.randn(1, 2, 4)
    mask_token = torch.randn(4)
    ids_restore = torch.tensor([[3, 0, 2, 1]])  # K = 2: positions 1 and 3 take latent rows 0 and 1
    out = ops.scatter_tokens(latent, ids_restore, mask_token)
    assert torch.equal(out[0, 1], latent[0, 0]) and torch.equal(out[0, 3], latent[0, 1])
    assert torch.equal(out[0, 0], mask_token) and torch.equal(out[0, 2], mask_token)


def test_model_sequence_is_modality_sorted():
    """The embedded sequence equals per-modality Conv2d tokens gathered in [S1 kept, S2 kept] order."""
    torch.manual_seed(0)
    model = build_model("tiny", masking="independent")
    s1, s2 = _images(b=3)
    m = random_masking(3, 225, 0.75, "independent", generator=torch.Generator().manual_seed(5))
    tokens = model.embed(s1, s2, m)
    f1 = model.patch_embed_s1(s1).flatten(2).transpose(1, 2) + model.pos_embed
    f2 = model.patch_embed_s2(s2).flatten(2).transpose(1, 2) + model.pos_embed
    full = torch.cat([f1, f2], dim=1)
    expected = torch.gather(full, 1, m.ids_keep[..., None].expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["xae", "xad"])
def test_encode_with_missing_modality(variant):
    torch.manual_seed(0)
    model = build_model("tiny", variant=variant).eval()
    s1, s2 = _images()
    both = model.encode(s1, s2)
    assert both.tokens.shape == (2, 450, 64) and both.cls.shape == (2, 64)
    assert torch.equal(both.split, torch.tensor([225, 225]))
    only2 = model.encode(s2=s2)
    only1 = model.encode(s1=s1)
    assert only2.tokens.shape == (2, 225, 64) and torch.equal(only2.split, torch.zeros(2, dtype=torch.long))
    assert torch.equal(only1.split, torch.full((2,), 225))
    for f in (both, only1, only2):
        assert torch.isfinite(f.cls).all() and torch.isfinite(f.tokens).all()
        assert f.pooled().shape == (2, 64)
    if variant == "xae":
        # S2 only: the cross-modal block is identity + MLP, i.e. the same as running with no CA at all
        blk = model.xattn_encoder
        tokens = model.embed(None, s2, single_modality(2, 225, 2))
        expected = tokens + blk.mlp(blk.norm2(tokens))
        torch.testing.assert_close(blk(tokens, only2.split, "torch"), expected)


def test_encode_ignores_masking_randomness():
    model = build_model("tiny").eval()
    s1, s2 = _images()
    a = model.encode(s1, s2)
    b = model.encode(s1, s2)
    assert torch.equal(a.cls, b.cls)


def test_seeded_forward_is_deterministic_and_reconstruct_shapes():
    model = build_model("tiny")
    s1, s2 = _images()
    a = model(s1, s2, generator=torch.Generator().manual_seed(7))
    b = model(s1, s2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.loss, b.loss)
    rec = model.reconstruct(a, s1, s2)
    assert rec["s1"].shape == s1.shape and rec["s2_pasted"].shape == s2.shape
    # visible patches are pasted from the input exactly
    vis = ~a.mask_s2
    assert torch.allclose(patchify(rec["s2_pasted"], 8)[vis], patchify(s2, 8)[vis])


@pytest.mark.parametrize(
    "s1_shape, s2_shape, message",
    [
        ((2, 3, 120, 120), (2, 12, 120, 120), "s1 must have 2 channels"),
        ((2, 2, 120, 120), (2, 13, 120, 120), "s2 must have 12 channels"),
        ((2, 2, 121, 121), (2, 12, 120, 120), "not divisible by"),
        ((2, 2, 112, 112), (2, 12, 112, 112), "ModelConfig.img_size"),
        ((2, 2, 120), (2, 12, 120, 120), r"\(B, C, H, W\)"),
        ((3, 2, 120, 120), (2, 12, 120, 120), "batch sizes differ"),
    ],
)
def test_bad_input_shapes(s1_shape, s2_shape, message):
    model = build_model("tiny")
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(s1_shape), torch.zeros(s2_shape))


def test_bad_input_values_and_types():
    model = build_model("tiny")
    s1, s2 = _images()
    s2[0, 3, 10, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        model(s1, s2)
    s1b, s2b = _images()
    s1b[1, 0, 0, 0] = -float("inf")
    with pytest.raises(ValueError, match="s1 holds 1 NaN/Inf"):
        model(s1b, s2b)
    # huge finite values overflow the fast fp32 sum check; the exact check must then let them through
    s1c, s2c = _images()
    s2c[:, :, :2, :2] = 3.0e38
    assert torch.isfinite(model(s1c, s2c, generator=torch.Generator().manual_seed(0)).loss_s1)
    with pytest.raises(TypeError, match="floating-point"):
        model(s1.long(), _images()[1])
    with pytest.raises(ValueError, match="at least one modality"):
        model.encode()
    with pytest.raises(ValueError, match="both modalities"):
        model(None, s2)


def test_finiteness_of_both_modalities_is_one_host_read(monkeypatch):
    """The NaN/Inf check of s1 and s2 reads one flag tensor back (one host sync a forward on a GPU), not
    one per modality; the model's other checks read no tensor values."""
    model = build_model("tiny")
    s1, s2 = _images()
    reads = []
    for method in ("__bool__", "item", "tolist", "__int__", "__float__"):
        real = getattr(torch.Tensor, method)

        def counted(self, *args, _real=real, _name=method, **kwargs):
            reads.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    assert model._check_pair(s1, s2) == s1.shape[0]
    assert reads == ["tolist"]


def test_set_kernels_flips_every_op():
    model = build_model("tiny")
    assert model.kernels == "torch"
    assert model.set_kernels("triton") is model and model.config.kernels == "triton"
    with pytest.raises(ValueError, match="kernels"):
        model.set_kernels("cuda")


def test_parameter_counts_of_presets():
    tiny = FusMAE(build_model("tiny").config)
    assert tiny.num_parameters() == sum(p.numel() for p in tiny.parameters())
    # base encoder: 12 blocks of ViT-B (7,087,872 each, LN included) + patch projections + CLS + norm
    base = build_model("base")
    vit_block = 4 * 768 * 768 + 4 * 768 + 2 * 768 * 3072 + 3072 + 768 + 4 * 768
    enc = sum(p.numel() for n, p in base.named_parameters() if not n.startswith("decoder"))
    patch = (2 + 12) * 64 * 768 + 2 * 768
    assert enc == 12 * vit_block + patch + 768 + 2 * 768


@pytest.mark.parametrize("variant", ["xae", "xad"])
def test_loss_only_projects_masked_rows_with_the_same_loss_and_grads(variant):
    """loss_only=True: the decoders project only masked patches (consistent masking); the loss and
    every gradient equal the full projection's, and visible prediction rows are exactly 0."""
    torch.manual_seed(0)
    model = build_model("tiny", variant=variant, masking="consistent").double()
    s1 = torch.randn(3, 2, 120, 120, dtype=torch.float64)
    s2 = torch.randn(3, 12, 120, 120, dtype=torch.float64)
    seeds = torch.tensor([4, 5, 6])
    results = []
    for loss_only in (False, True):
        model.zero_grad()
        out = model(s1, s2, seeds=seeds, loss_only=loss_only)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (full, g_full), (part, g_part) = results
    torch.testing.assert_close(part.loss, full.loss, rtol=1e-12, atol=1e-12)
    assert g_full.keys() == g_part.keys()
    for name in g_full:
        torch.testing.assert_close(g_part[name], g_full[name], rtol=1e-10, atol=1e-12, msg=name)
    pairs = ((part.pred_s1, full.pred_s1, part.mask_s1), (part.pred_s2, full.pred_s2, part.mask_s2))
    for pred_p, pred_f, mask in pairs:
        assert (pred_p[~mask] == 0).all()
        torch.testing.assert_close(pred_p[mask], pred_f[mask], rtol=1e-12, atol=1e-12)


def test_masked_rows_maps_back():
    from fusmae_fast.masking import random_masking

    m = random_masking(4, 9, 0.6, "consistent", seeds=torch.arange(4))
    count = 9 - m.num_kept // 2
    ids_masked, ids_back = m.masked_rows(2, count)
    for b in range(4):
        assert ids_masked[b].tolist() == torch.nonzero(m.mask_s2[b])[:, 0].tolist()
        assert (ids_back[b][~m.mask_s2[b]] == count).all()
        assert ids_back[b][ids_masked[b]].tolist() == list(range(count))
