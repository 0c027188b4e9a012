"""Fus-MAE (paper §3, docs/design.md §2): patch embeddings, XAttnEncoder / XAttnDecoder blocks, ViT blocks,
one light decoder per modality, and the masked reconstruction loss.

Tensor layouts
    s1: (B, 2, H, W) and s2: (B, 12, H, W), float, normalised per band.
    Encoder tokens: (B, K, C), modality-sorted per sample (kept S1 tokens, then kept S2 tokens; the
    boundary is ``split[b]``, see ``masking.py``). The CLS token is appended last: (B, K + 1, C).
    Decoder tokens per modality: (B, N, C_dec) in raster order. Predictions: (B, N, P*P*C_i) in MAE's
    patchify order. Masks: (B, N) bool, True = masked (was hidden from the encoder).
Ops
    Patch embedding, cross-modal attention, the decoder scatter and the loss go through
    ``fusmae_fast.ops`` with ``kernels=config.kernels``; ``set_kernels`` flips all of them at once.
Missing modality (``encode(s1=None, s2=x)`` or ``encode(s1=x, s2=None)``)
    The absent modality's tokens are not fed at all (split = 0 or L). The cross-modal attention then has
    no key for any query; its output, projection included, is exactly 0, so the cross-modal block acts
    as identity plus its MLP, and the ViT blocks see only the present modality's tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusmae_fast import ops
from fusmae_fast.attention import attention
from fusmae_fast.checkpoint import encoder_state_dict, load_weights
from fusmae_fast.config import ModelConfig
from fusmae_fast.linear import linear
from fusmae_fast.masking import Masking, random_masking, single_modality
from fusmae_fast.patches import patchify, sincos_pos_embed_2d, unpatchify
from fusmae_fast.pretrained import read_pretrained, write_pretrained

LN_EPS = 1e-6


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(linear(x, self.fc1, gelu=True), self.fc2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = linear(x, self.qkv).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        o = attention(q, k, v)
        return linear(o.transpose(1, 2).reshape(b, n, c), self.proj)


class Block(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossModalAttention(nn.Module):
    """CA(x, y) (+) CA(y, x) of Eq. 2 over the concatenated, modality-sorted sequence.

    'shared' weights: one Q/K/V/O projection for both directions (Eq. 4 defines a single CA).
    'per_direction': direction S1->S2 (queries from S1, keys/values from S2) uses projections ``a``,
    direction S2->S1 uses ``b``; each token's Q is taken from its own direction and its K/V from the
    other one, so the attention core is unchanged. A token with no key of the other modality gets an
    output of exactly 0 (no projection bias either).
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool, per_direction: bool) -> None:
        super().__init__()
        self.heads = heads
        self.per_direction = per_direction
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if per_direction:
            self.qkv_b = nn.Linear(dim, 3 * dim, bias=qkv_bias)
            self.proj_b = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, split: torch.Tensor, kernels: str) -> torch.Tensor:
        b, n, c = x.shape
        shape = (b, n, 3, self.heads, c // self.heads)
        rows = torch.arange(n, device=x.device)[None, :]
        in_s1 = rows < split[:, None]  # (B, L)
        qkv = linear(x, self.qkv).reshape(shape)
        if self.per_direction:
            qkv_b = linear(x, self.qkv_b).reshape(shape)
            s1 = in_s1[:, :, None, None]
            q = torch.where(s1, qkv[:, :, 0], qkv_b[:, :, 0])
            k = torch.where(s1, qkv_b[:, :, 1], qkv[:, :, 1])
            v = torch.where(s1, qkv_b[:, :, 2], qkv[:, :, 2])
        else:
            q, k, v = qkv.unbind(dim=2)
        o = ops.cross_modal_attention(q, k, v, split, kernels=kernels).reshape(b, n, c)
        out = linear(o, self.proj)
        if self.per_direction:
            out = torch.where(in_s1[..., None], out, linear(o, self.proj_b))
        has_key = torch.where(in_s1, split[:, None] < n, split[:, None] > 0)
        return out * has_key[..., None].to(out.dtype)


class XAttnBlock(nn.Module):
    """XAttnEncoder (Eq. 2-3) and XAttnDecoder (Eq. 10-11): z + CA(LN z), then + MLP(LN .)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, per_direction: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.xattn = CrossModalAttention(dim, heads, qkv_bias, per_direction)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, z: torch.Tensor, split: torch.Tensor, kernels: str) -> torch.Tensor:
        fus = z + self.xattn(self.norm1(z), split, kernels)
        return fus + self.mlp(self.norm2(fus))


class ModalityDecoder(nn.Module):
    """MAE's light decoder for one modality: embed, scatter mask tokens, + pos, blocks, predict."""

    def __init__(self, cfg: ModelConfig, channels: int) -> None:
        super().__init__()
        d = cfg.decoder_embed_dim
        self.channels = channels
        self.embed = nn.Linear(cfg.embed_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(d, cfg.grid_size), persistent=False)
        self.blocks = nn.ModuleList(
            Block(d, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.decoder_depth)
        )
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.pred = nn.Linear(d, cfg.patch_size**2 * channels)

    def forward(
        self,
        latent: torch.Tensor,
        ids_restore: torch.Tensor,
        kernels: str,
        masked_rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, K, C) latent -> (B, N, P*P*channels) prediction.

        With ``masked_rows`` (``Masking.masked_rows``), the final projection runs on the masked patches
        only and visible rows of the result are 0: all the loss needs, for (1 - mask ratio) fewer
        projection FLOPs (the projection is the decoder's widest layer: decoder_dim x P*P*channels).
        """
        x = self.embed(latent)
        pos = self.pos_embed.to(x.dtype)
        x = ops.scatter_tokens(x, ids_restore, self.mask_token.to(x.dtype), pos, kernels=kernels)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        if masked_rows is None:
            return self.pred(x)
        ids_masked, ids_back = masked_rows
        rows = self.pred(ops.gather_tokens(x, ids_masked, kernels=kernels))
        zero = rows.new_zeros(rows.shape[-1])
        return ops.scatter_tokens(rows, ids_back, zero, kernels=kernels)


@dataclass
class FusMAEOutput:
    """What a pretraining forward returns."""

    loss: torch.Tensor
    """loss_s1 + loss_s2 (fp32 scalar)."""
    loss_s1: torch.Tensor
    """Masked-patch MSE of the S1 reconstruction."""
    loss_s2: torch.Tensor
    """Masked-patch MSE of the S2 reconstruction."""
    pred_s1: torch.Tensor
    """(B, N, P*P*C_1) S1 prediction in patchify order (normalised-target space when norm_pix_loss)."""
    pred_s2: torch.Tensor
    """(B, N, P*P*C_2) S2 prediction."""
    mask_s1: torch.Tensor
    """(B, N) bool, True = masked S1 patch."""
    mask_s2: torch.Tensor
    """(B, N) bool, True = masked S2 patch."""
    split: torch.Tensor
    """(B,) kept S1 tokens per sample."""


@dataclass
class EncoderFeatures:
    """Encoder output without masking, for downstream tasks."""

    cls: torch.Tensor
    """(B, C) the CLS token after the final norm."""
    tokens: torch.Tensor
    """(B, L, C) patch tokens after the final norm, modality-sorted: S1 first when present."""
    split: torch.Tensor
    """(B,) number of S1 tokens (N with both or S1 only, 0 with S2 only)."""

    def pooled(self) -> torch.Tensor:
        """(B, C) mean of the patch tokens."""
        return self.tokens.mean(dim=1)


def _non_finite(images: dict[str, torch.Tensor]) -> dict[str, int]:
    """The images that hold NaN or Inf values, with their count. One fast sum per image first (a NaN/Inf
    anywhere makes it non-finite), all read back at once: one host sync for the batch, however many
    modalities; only an image whose sum is not finite (a bad value, or an fp32 overflow of huge values)
    gets the exact elementwise count."""
    sums = [img.sum(dtype=torch.float32) for img in images.values()]
    if len({t.device for t in sums}) == 1:
        finite = torch.isfinite(torch.stack(sums)).tolist()
    else:
        finite = [bool(torch.isfinite(t)) for t in sums]
    counts = {
        name: int((~torch.isfinite(img)).sum())
        for (name, img), ok in zip(images.items(), finite, strict=True)
        if not ok
    }
    return {name: n for name, n in counts.items() if n}


class FusMAE(nn.Module):
    """The Fus-MAE model: ``model(s1, s2)`` pretrains, ``model.encode(s1, s2)`` extracts features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.embed_dim
        p = config.patch_size
        per_direction = config.xattn_weights == "per_direction"
        self.patch_embed_s1 = nn.Conv2d(config.s1_channels, c, kernel_size=p, stride=p)
        self.patch_embed_s2 = nn.Conv2d(config.s2_channels, c, kernel_size=p, stride=p)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(c, config.grid_size), persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        n_vit = config.depth - 1 if config.variant == "xae" else config.depth
        if config.variant == "xae":
            self.xattn_encoder = XAttnBlock(
                c, config.num_heads, config.mlp_ratio, config.qkv_bias, per_direction
            )
        self.blocks = nn.ModuleList(
            Block(c, config.num_heads, config.mlp_ratio, config.qkv_bias) for _ in range(n_vit)
        )
        self.norm = nn.LayerNorm(c, eps=LN_EPS)
        if config.variant == "xad":
            self.xattn_decoder = XAttnBlock(
                c, config.num_heads, config.mlp_ratio, config.qkv_bias, per_direction
            )
        self.decoder_s1 = ModalityDecoder(config, config.s1_channels)
        self.decoder_s2 = ModalityDecoder(config, config.s2_channels)
        self.reset_parameters()

    # ----------------------------------------------------------------------------------------- set-up
    def reset_parameters(self) -> None:
        """MAE's initialisation: xavier-uniform linears and patch projections, N(0, 0.02) tokens."""
        for conv in (self.patch_embed_s1, self.patch_embed_s2):
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        for dec in (self.decoder_s1, self.decoder_s2):
            nn.init.normal_(dec.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def kernels(self) -> str:
        return self.config.kernels

    def set_kernels(self, kernels: str) -> FusMAE:
        """Switch every op of this instance to ``'torch'`` or ``'triton'``; returns self."""
        self.config = self.config.replace(kernels=kernels)
        return self

    # ------------------------------------------------------------------------------------- checks
    def _check_image(self, name: str, img: torch.Tensor, channels: int) -> None:
        cfg = self.config
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(img).__name__}")
        if img.dim() != 4:
            raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(img.shape)}")
        if img.shape[1] != channels:
            raise ValueError(
                f"{name} must have {channels} channels, got {img.shape[1]} (shape {tuple(img.shape)})"
            )
        if img.shape[2] % cfg.patch_size or img.shape[3] % cfg.patch_size:
            raise ValueError(
                f"{name} size {img.shape[2]}x{img.shape[3]} is not divisible by "
                f"the patch size {cfg.patch_size}"
            )
        if tuple(img.shape[2:]) != (cfg.img_size, cfg.img_size):
            raise ValueError(
                f"{name} must be {cfg.img_size}x{cfg.img_size} (ModelConfig.img_size), got "
                f"{img.shape[2]}x{img.shape[3]}"
            )
        if not img.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {img.dtype}")
        weights = self.patch_embed_s1.weight.dtype
        if img.dtype != weights and not torch.is_autocast_enabled(img.device.type):
            raise TypeError(
                f"{name} is {img.dtype} but the model's weights are {weights}: pass {name}.to({weights}), "
                "or run under torch.autocast for a lower precision"
            )

    def _check_pair(self, s1: torch.Tensor | None, s2: torch.Tensor | None) -> int:
        if s1 is None and s2 is None:
            raise ValueError("give at least one modality (s1, s2 or both)")
        if s1 is not None:
            self._check_image("s1", s1, self.config.s1_channels)
        if s2 is not None:
            self._check_image("s2", s2, self.config.s2_channels)
        if s1 is not None and s2 is not None and s1.shape[0] != s2.shape[0]:
            raise ValueError(f"s1 and s2 batch sizes differ: {s1.shape[0]} vs {s2.shape[0]}")
        if self.config.validate_inputs and not torch.compiler.is_compiling():
            images = {name: img for name, img in (("s1", s1), ("s2", s2)) if img is not None}
            for name, bad in _non_finite(images).items():
                raise ValueError(
                    f"{name} holds {bad} NaN/Inf values; clean the data: repack it with fusmae-fast "
                    "convert --nan-policy, or pass nan_policy= to the dataset reader in Python"
                )
        return (s1 if s1 is not None else s2).shape[0]

    # ------------------------------------------------------------------------------------ pieces
    def embed(self, s1: torch.Tensor | None, s2: torch.Tensor | None, masking: Masking) -> torch.Tensor:
        """Project only the kept patches into the modality-sorted (B, K, C) token sequence (Eq. 1)."""
        k = self.kernels
        tokens = None
        for img, conv, modality in ((s1, self.patch_embed_s1, 1), (s2, self.patch_embed_s2, 2)):
            if img is None:
                continue
            ids = masking.ids_keep_modality(modality)
            # Custom (Triton) ops are not autocast: run the projection in the autocast dtype on both paths.
            dev = img.device.type
            dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else img.dtype
            weight, bias, pos = conv.weight.to(dt), conv.bias.to(dt), self.pos_embed.to(dt)
            part = ops.masked_patch_embed(
                img.to(dt), weight, bias, pos, ids, self.config.patch_size, kernels=k
            )
            tokens = part if tokens is None else tokens + part
        assert tokens is not None
        return tokens

    def forward_encoder(self, tokens: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
        """(B, K, C) tokens -> (B, K + 1, C) normalised features, CLS last."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        if self.config.variant == "xae":
            tokens = self.xattn_encoder(tokens, split, self.kernels)
        x = torch.cat([tokens, cls], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(
        self,
        s1: torch.Tensor,
        s2: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        seeds: torch.Tensor | None = None,
        masking: Masking | None = None,
        loss_only: bool = False,
    ) -> FusMAEOutput:
        """Mask, encode, decode both modalities and compute the loss.

        The masking is drawn from ``seeds`` (one int64 per sample) or ``generator``; a precomputed
        ``masking`` (same batch size) may be given instead. ``loss_only=True`` (pretraining's opt-in
        ``--masked-projection``) lets the
        decoders project only the masked patches when every sample masks the same number per modality
        (consistent masking): the loss and its gradients are unchanged, ``pred_s1``/``pred_s2`` are 0
        on visible patches. Independent masking (ragged counts) always projects every patch.
        """
        cfg = self.config
        if s1 is None or s2 is None:
            raise ValueError("pretraining needs both modalities; use encode() for a single modality")
        b = self._check_pair(s1, s2)
        if masking is None:
            masking = random_masking(
                b,
                cfg.num_patches,
                cfg.mask_ratio,
                cfg.masking,
                generator=generator,
                seeds=seeds,
                device=s1.device,
            )
        elif masking.ids_keep.shape[0] != b or masking.num_patches != cfg.num_patches:
            raise ValueError("the given masking does not match the batch size or the patch count")
        tokens = self.embed(s1, s2, masking)
        x = self.forward_encoder(tokens, masking.split)
        latent = x[:, : masking.num_kept]
        if cfg.variant == "xad":
            latent = self.xattn_decoder(latent, masking.split, self.kernels)
        rows1 = rows2 = None
        if loss_only and cfg.masking == "consistent" and masking.num_kept % 2 == 0:
            count = cfg.num_patches - masking.num_kept // 2
            rows1, rows2 = masking.masked_rows(1, count), masking.masked_rows(2, count)
        pred_s1 = self.decoder_s1(latent, masking.ids_restore_s1, self.kernels, rows1)
        pred_s2 = self.decoder_s2(latent, masking.ids_restore_s2, self.kernels, rows2)
        p = cfg.patch_size
        loss_s1 = ops.masked_mse(pred_s1, s1, masking.mask_s1, p, cfg.norm_pix_loss, kernels=self.kernels)
        loss_s2 = ops.masked_mse(pred_s2, s2, masking.mask_s2, p, cfg.norm_pix_loss, kernels=self.kernels)
        return FusMAEOutput(
            loss=loss_s1 + loss_s2,
            loss_s1=loss_s1,
            loss_s2=loss_s2,
            pred_s1=pred_s1,
            pred_s2=pred_s2,
            mask_s1=masking.mask_s1,
            mask_s2=masking.mask_s2,
            split=masking.split,
        )

    def encode(self, s1: torch.Tensor | None = None, s2: torch.Tensor | None = None) -> EncoderFeatures:
        """Encoder features of unmasked inputs; either modality may be None (see the module docstring)."""
        b = self._check_pair(s1, s2)
        n = self.config.num_patches
        device = (s1 if s1 is not None else s2).device
        if s1 is not None and s2 is not None:
            masking = random_masking(b, n, 0.0, "none", device=device)
        else:
            masking = single_modality(b, n, 1 if s1 is not None else 2, device=device)
        tokens = self.embed(s1, s2, masking)
        x = self.forward_encoder(tokens, masking.split)
        return EncoderFeatures(cls=x[:, -1], tokens=x[:, :-1], split=masking.split)

    def reconstruct(self, out: FusMAEOutput, s1: torch.Tensor, s2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images from predictions, in the input's units (undoing norm_pix with each target patch's stats).

        Returns s1/s2 reconstructions (B, C, H, W) and the same with visible patches pasted from the input.
        """
        cfg = self.config
        p = cfg.patch_size
        result = {}
        for name, img, pred, mask in (
            ("s1", s1, out.pred_s1, out.mask_s1),
            ("s2", s2, out.pred_s2, out.mask_s2),
        ):
            pred = pred.detach().float()
            target = patchify(img.float(), p)
            if cfg.norm_pix_loss:
                mean = target.mean(-1, keepdim=True)
                std = (target.var(-1, keepdim=True) + 1e-6).sqrt()
                pred = pred * std + mean
            pasted = torch.where(mask[..., None], pred, target)
            c, h, w = img.shape[1:]
            result[name] = unpatchify(pred, p, c, h, w)
            result[f"{name}_pasted"] = unpatchify(pasted, p, c, h, w)
        return result

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ----------------------------------------------------------------------------- pretrained folders
    def save_pretrained(self, folder: str | os.PathLike[str], *, encoder_only: bool = False) -> Path:
        """Write ``folder/config.json`` and ``folder/model.safetensors`` (see ``fusmae_fast.pretrained``):
        every weight, or with ``encoder_only`` the encoder's alone (what downstream tasks use)."""
        if encoder_only:
            return write_pretrained(folder, self.config, encoder_state_dict(self), "encoder")
        return write_pretrained(folder, self.config, self.state_dict(), "model")

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str],
        *,
        map_location: str | torch.device = "cpu",
        revision: str | None = None,
        **overrides: Any,
    ) -> FusMAE:
        """A FusMAE from a pretrained folder, or a Hub repository id when huggingface_hub is installed.

        A folder saved with ``encoder_only`` loads the encoder; the decoders are freshly initialised.
        ``overrides`` change config fields (e.g. ``kernels="triton"``).
        """
        found = read_pretrained(source, map_location, revision, **overrides)
        encoder_only = found.weights == "encoder"
        return load_weights(
            cls(found.config), found.state_dict, found.weights_file, encoder_only=encoder_only
        )


def build_model(preset: str = "tiny", **overrides: object) -> FusMAE:
    """Convenience: ``FusMAE(ModelConfig.from_name(preset, **overrides))``."""
    return FusMAE(ModelConfig.from_name(preset, **overrides))


__all__ = ["EncoderFeatures", "FusMAE", "FusMAEOutput", "build_model"]
