"""Configuration dataclasses: the model (with named presets). Training and evaluation configs live
beside their loops (``fusmae_fast.pretrain``, ``fusmae_fast.evaluate``) and follow the same pattern.

Every field has a docstring; ``__post_init__`` validates so that a bad configuration fails at
construction with a message naming the field, not deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

VARIANTS = ("xae", "xad")
MASKINGS = ("independent", "consistent")
KERNELS = ("torch", "triton")
"""The op paths (``kernels=`` of ``fusmae_fast.ops``, the config field and the ``--kernels`` flags)."""
XATTN_WEIGHTS = ("shared", "per_direction")


@dataclass
class ModelConfig:
    """Fus-MAE architecture (paper §3, docs/design.md §2)."""

    img_size: int = 120
    """Height and width of both modalities' images in pixels (BigEarthNet: 120)."""
    patch_size: int = 8
    """Patch size P; the image is cut into (img_size / P)^2 patches per modality."""
    s1_channels: int = 2
    """Sentinel-1 channels (VV, VH in dB)."""
    s2_channels: int = 12
    """Sentinel-2 channels (B01..B08, B8A, B09, B11, B12; no B10)."""
    embed_dim: int = 768
    """Encoder token width."""
    depth: int = 12
    """Encoder blocks in all. XAE: the first is the XAttnEncoder block, then depth-1 ViT blocks.
    XAD: depth ViT blocks (the XAttnDecoder block sits before the decoders and is not counted)."""
    num_heads: int = 12
    """Attention heads of the encoder (self- and cross-attention)."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of the token width (ViT: 4)."""
    decoder_embed_dim: int = 256
    """Width of each modality's light decoder (MultiMAE: 256)."""
    decoder_depth: int = 2
    """ViT blocks per modality decoder."""
    decoder_num_heads: int = 8
    """Attention heads of the decoders."""
    variant: str = "xae"
    """'xae': cross-attention in the first encoder block (Eq. 2-6); 'xad': XAttnDecoder before the
    decoders (Eq. 10-11)."""
    masking: str = "consistent"
    """'consistent': the same patch positions are kept in both modalities; 'independent': the kept
    tokens are drawn uniformly over all 2N tokens (ragged split per sample)."""
    mask_ratio: float = 0.75
    """Fraction of the 2N patches that are masked during pretraining, in (0, 1)."""
    norm_pix_loss: bool = True
    """Normalise each target patch to zero mean, unit variance before the MSE (MAE's best setting)."""
    xattn_weights: str = "shared"
    """'shared': one CA layer serves both directions (Eq. 4); 'per_direction': each direction has its
    own Q/K/V/O projections (picked per token by modality)."""
    qkv_bias: bool = True
    """Bias in the Q/K/V projections (ViT/MAE default)."""
    kernels: str = "torch"
    """Op backend: 'torch' (reference, runs anywhere) or 'triton' (CUDA, or the CPU interpreter)."""
    validate_inputs: bool = True
    """Check the images' finiteness on every forward (one extra pass over them and, on a GPU, one host
    sync per forward for all modalities together); turn off only when the data pipeline already
    guarantees it. Shapes and dtypes are checked either way."""

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")

        for name in (
            "img_size",
            "patch_size",
            "s1_channels",
            "s2_channels",
            "embed_dim",
            "depth",
            "num_heads",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
        ):
            positive(name)
        if self.img_size % self.patch_size:
            raise ValueError(
                f"ModelConfig.img_size ({self.img_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"ModelConfig.embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(
                f"ModelConfig.decoder_embed_dim ({self.decoder_embed_dim}) must be divisible by "
                f"decoder_num_heads ({self.decoder_num_heads})"
            )
        if not 0.0 < float(self.mask_ratio) < 1.0:
            raise ValueError(f"ModelConfig.mask_ratio must lie in (0, 1), got {self.mask_ratio!r}")
        if self.num_kept() < 1:
            raise ValueError(
                f"ModelConfig.mask_ratio {self.mask_ratio} keeps no token of {2 * self.num_patches}"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"ModelConfig.mlp_ratio must be positive, got {self.mlp_ratio!r}")
        for name, choices in (
            ("variant", VARIANTS),
            ("masking", MASKINGS),
            ("kernels", KERNELS),
            ("xattn_weights", XATTN_WEIGHTS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"ModelConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches per modality, N."""
        return self.grid_size**2

    def num_kept(self, mask_ratio: float | None = None) -> int:
        """Tokens kept in all (both modalities) at this ratio: K."""
        r = self.mask_ratio if mask_ratio is None else mask_ratio
        n = self.num_patches
        if self.masking == "consistent":
            return 2 * int(n * (1.0 - r))
        return int(2 * n * (1.0 - r))

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset ('tiny', 'small', 'base') with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        embed_dim=64,
        depth=2,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    ),
    "small": dict(
        embed_dim=384,
        depth=12,
        num_heads=6,
        decoder_embed_dim=256,
        decoder_depth=2,
        decoder_num_heads=8,
    ),
    "base": dict(
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=256,
        decoder_depth=2,
        decoder_num_heads=8,
    ),
}
"""Field overrides of each named preset (``ModelConfig.from_name``)."""
