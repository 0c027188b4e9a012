import pytest

from fusmae_fast.config import PRESETS, ModelConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_roundtrip(name):
    cfg = ModelConfig.from_name(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.num_patches == 225
    assert cfg.num_kept() == 112


def test_preset_values_follow_spec():
    tiny, small, base = (ModelConfig.from_name(n) for n in ("tiny", "small", "base"))
    tiny_sizes = (tiny.embed_dim, tiny.depth, tiny.num_heads, tiny.decoder_embed_dim, tiny.decoder_depth)
    assert tiny_sizes == (64, 2, 2, 32, 1)
    assert (small.embed_dim, small.depth, small.num_heads) == (384, 12, 6)
    assert (base.embed_dim, base.depth, base.num_heads) == (768, 12, 12)
    for cfg in (small, base):
        assert (cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads) == (256, 2, 8)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(img_size=121), "divisible by patch_size"),
        (dict(embed_dim=65), "divisible by num_heads"),
        (dict(decoder_embed_dim=33), "divisible by"),
        (dict(mask_ratio=0.0), "mask_ratio"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(mask_ratio=0.999), "keeps no token"),
        (dict(variant="xyz"), "variant"),
        (dict(masking="random"), "masking"),
        (dict(kernels="cuda"), "kernels"),
        (dict(xattn_weights="both"), "xattn_weights"),
        (dict(depth=0), "depth"),
        (dict(patch_size=2.5), "patch_size"),
    ],
)
def test_bad_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_name("tiny", **overrides)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.from_name("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_name("tiny", embed_dimension=3)
