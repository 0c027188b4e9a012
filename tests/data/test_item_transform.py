"""Raw sample -> item: band order, bilinear upsampling (= torch), fitting, normalisation, label dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusmae_fast.data.bands import S1_MEAN, S1_STD, S2_BANDS, S2_MEAN, S2_STD
from fusmae_fast.data.raw_sample import BEN_LAYOUT, SEN12MS_LAYOUT, RawSample, S2Layout
from fusmae_fast.data.transforms import ItemTransform, center_crop, resize_bilinear, upsample_bilinear


@pytest.mark.parametrize(("h", "n"), [(60, 120), (20, 120), (7, 13), (1, 4), (120, 120)])
def test_upsample_matches_torch_bilinear(h: int, n: int) -> None:
    x = np.random.default_rng(h).uniform(0, 3000, size=(3, h, h)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=(n, n), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(upsample_bilinear(x, n), ref.numpy(), rtol=1e-5, atol=1e-3)


def test_resize_down_matches_torch_antialiased() -> None:
    x = np.random.default_rng(0).normal(size=(2, 256, 256)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=(120, 120), mode="bilinear", antialias=True)[0]
    np.testing.assert_allclose(resize_bilinear(x, 120), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_center_crop() -> None:
    x = np.arange(2 * 6 * 6).reshape(2, 6, 6)
    np.testing.assert_array_equal(center_crop(x, 2), x[:, 2:4, 2:4])
    with pytest.raises(ValueError, match="cannot centre-crop"):
        center_crop(x, 7)


def _ben_raw(fill: str) -> RawSample:
    groups = []
    for names, size in BEN_LAYOUT.groups:
        if fill == "index":  # each band holds its position in S2_BANDS
            g = np.stack([np.full((size, size), S2_BANDS.index(b), np.uint16) for b in names])
        else:
            g = np.stack(
                [np.full((size, size), round(float(S2_MEAN[S2_BANDS.index(b)])), np.uint16) for b in names]
            )
        groups.append(g)
    s1 = np.broadcast_to(S1_MEAN[:, None, None], (2, 120, 120)).astype(np.float32)
    label = np.zeros(19, np.float32)
    label[[2, 9]] = 1
    return RawSample(s1=s1, s2=tuple(groups), label=label, name="S2A_MSIL2A_20170717T93020_1_2")


def test_band_order_and_raw_values() -> None:
    item = ItemTransform(normalize=False)(_ben_raw("index"), BEN_LAYOUT)
    assert item["s2"].shape == (12, 120, 120) and item["s2"].dtype == torch.float32
    for k in range(12):
        assert torch.all(item["s2"][k] == k), S2_BANDS[k]
    assert item["s1"].shape == (2, 120, 120) and item["s1"].dtype == torch.float32
    assert item["label"].dtype == torch.float32 and item["label"].nonzero().flatten().tolist() == [2, 9]
    assert item["name"] == "S2A_MSIL2A_20170717T93020_1_2"


def test_normalisation_uses_spec_statistics() -> None:
    item = ItemTransform()(_ben_raw("mean"), BEN_LAYOUT)
    rounding = np.abs(np.round(S2_MEAN) - S2_MEAN) / S2_STD
    for k in range(12):
        assert torch.allclose(item["s2"][k], torch.tensor(0.0), atol=float(rounding[k]) + 1e-5)
    assert torch.allclose(item["s1"], torch.zeros(()), atol=1e-6)
    raw = _ben_raw("mean")
    raw.s1 = raw.s1 + S1_STD[:, None, None]
    assert torch.allclose(ItemTransform()(raw, BEN_LAYOUT)["s1"], torch.ones(()), atol=1e-5)


def test_fit_to_image_size() -> None:
    x = np.random.default_rng(1).integers(0, 4000, size=(12, 256, 256)).astype(np.uint16)
    raw = RawSample(s1=np.zeros((2, 256, 256), np.float32), s2=(x,), label=np.array(3), name="p")
    crop = ItemTransform(image_size=120, fit="crop", normalize=False)(raw, SEN12MS_LAYOUT)
    np.testing.assert_array_equal(crop["s2"].numpy(), x[:, 68:188, 68:188].astype(np.float32))
    assert crop["label"].dtype == torch.int64 and crop["label"].shape == () and int(crop["label"]) == 3
    res = ItemTransform(image_size=96, fit="resize")(raw, SEN12MS_LAYOUT)
    assert res["s2"].shape == (12, 96, 96) and res["s1"].shape == (2, 96, 96)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="fit"):
        ItemTransform(fit="stretch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size"):
        ItemTransform(image_size=0)
    with pytest.raises(ValueError, match="once"):
        S2Layout(((("B01", "B02"), 20),))
    raw = _ben_raw("index")
    raw.s2 = (raw.s2[0][:, :60, :60], *raw.s2[1:])
    with pytest.raises(ValueError, match="should be"):
        ItemTransform()(raw, BEN_LAYOUT)
