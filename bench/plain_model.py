"""The textbook baseline for ``bench/step.py``: Fus-MAE computed the way a straightforward port would.

``PlainFusMAE`` has exactly FusMAE's parameters (same names and shapes: ``load_state_dict`` of a
FusMAE state dict works, strict) and, for the same masking, the same loss. Only the way it computes
differs; it is what our fusions are measured against:

- patch embedding: the Conv2d projects *all* N patches of each modality, then the kept tokens are
  picked with ``torch.gather`` (MAE's ``random_masking`` after a full ``patch_embed``);
- cross-modal block (Eq. 2): ``CA(x, y)`` and ``CA(y, x)`` as two separate attention calls on the split
  halves, then ``torch.cat`` - per group of samples with the same split (independent masking gives
  ragged splits, so samples are grouped and re-assembled);
- decoders: MAE's ``torch.cat([x, mask_tokens])`` + ``torch.gather(ids_restore)`` unshuffle, then the
  decoder blocks on all N tokens of the modality and the prediction head on all N tokens;
- loss: MAE's ``forward_loss``: a full ``patchify`` of the image, per-patch normalisation, the squared
  error on every patch, then the mask applied.

The ViT blocks (pre-norm self-attention with SDPA, MLP: ``Block`` and ``Mlp``) are imported from
``fusmae_fast.model``: both models run the very same blocks, so a step's ``ours / plain`` ratio
measures only the parts above, and ``bench/step_parts.py`` can bound it (Amdahl). Everything else is
written here, so that later changes to ``fusmae_fast.model`` never change the baseline silently (a
renamed parameter makes ``load_state_dict`` fail loudly instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusmae_fast.config import ModelConfig
from fusmae_fast.masking import Masking, random_masking
from fusmae_fast.model import LN_EPS, Block, Mlp  # the same textbook ViT blocks
from fusmae_fast.patches import sincos_pos_embed_2d


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)  # (B, heads, n, d)


class PlainCrossAttention(nn.Module):
    """CA(x, y) (+) CA(y, x) the literal way: two attention calls on the halves, then torch.cat.

    'shared': one set of Q/K/V/O serves both directions. 'per_direction': direction S1->S2 (queries
    from x = S1, keys/values from y = S2) uses ``qkv``/``proj``, direction S2->S1 uses ``qkv_b``/``proj_b``.
    A modality with no partner tokens (split 0 or L) gets a zero cross-attention term.
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

    def _ca(self, x: torch.Tensor, y: torch.Tensor, qkv: nn.Linear, proj: nn.Linear) -> torch.Tensor:
        """CA(x, y) = proj(softmax(Q_x K_y^T / sqrt(d)) V_y); zero when x or y is empty."""
        if y.shape[1] == 0 or x.shape[1] == 0:
            return torch.zeros_like(x)
        c = x.shape[-1]
        q = F.linear(x, qkv.weight[:c], None if qkv.bias is None else qkv.bias[:c])
        kv = F.linear(y, qkv.weight[c:], None if qkv.bias is None else qkv.bias[c:])
        k, v = kv.split(c, dim=-1)
        o = F.scaled_dot_product_attention(
            _heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads)
        )
        return proj(o.transpose(1, 2).reshape(x.shape))

    def forward(self, z: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
        qkv_b = self.qkv_b if self.per_direction else self.qkv
        proj_b = self.proj_b if self.per_direction else self.proj
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(split.tolist()):
            groups.setdefault(int(s), []).append(i)
        if len(groups) == 1:
            (s,) = groups
            x, y = z[:, :s], z[:, s:]
            return torch.cat([self._ca(x, y, self.qkv, self.proj), self._ca(y, x, qkv_b, proj_b)], dim=1)
        out = torch.empty_like(z)
        for s, idx in groups.items():
            rows = torch.tensor(idx, device=z.device)
            zg = z.index_select(0, rows)
            x, y = zg[:, :s], zg[:, s:]
            fused = torch.cat([self._ca(x, y, self.qkv, self.proj), self._ca(y, x, qkv_b, proj_b)], dim=1)
            out = out.index_copy(0, rows, fused)
        return out


class PlainXAttnBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, per_direction: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.xattn = PlainCrossAttention(dim, heads, qkv_bias, per_direction)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, z: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
        fus = z + self.xattn(self.norm1(z), split)
        return fus + self.mlp(self.norm2(fus))


class PlainDecoder(nn.Module):
    """MAE's decoder for one modality: embed, cat mask tokens, gather-unshuffle, + pos, blocks, head."""

    def __init__(self, cfg: ModelConfig, channels: int) -> None:
        super().__init__()
        d = cfg.decoder_embed_dim
        self.embed = nn.Linear(cfg.embed_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(d, cfg.grid_size), persistent=False)
        self.blocks = nn.ModuleList(
            Block(d, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.decoder_depth)
        )
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.pred = nn.Linear(d, cfg.patch_size**2 * channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (B, K, C) kept tokens; ids_restore (B, N) this modality's slice of MAE's ids_restore."""
        x = self.embed(latent)
        b, k, d = x.shape
        total = 2 * ids_restore.shape[1]  # both modalities' positions: [kept, masked] has 2N slots
        mask_tokens = self.mask_token.to(x.dtype).expand(b, total - k, d)
        x_ = torch.cat([x, mask_tokens], dim=1)
        x = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
        x = x + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))


def patchify(img: torch.Tensor, p: int) -> torch.Tensor:
    """MAE's patchify: (B, C, H, W) -> (B, N, P*P*C), per patch rows p, columns q, then channel."""
    b, c, hh, ww = img.shape
    h, w = hh // p, ww // p
    x = img.reshape(b, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, h * w, p * p * c)


def forward_loss(
    img: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, p: int, norm_pix: bool
) -> torch.Tensor:
    """MAE's forward_loss: full patchify, (normalised) target, error on every patch, then the mask."""
    target = patchify(img.float(), p)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred.float() - target) ** 2).mean(dim=-1)
    m = mask.float()
    return (loss * m).sum() / m.sum().clamp(min=1.0)


class PlainFusMAE(nn.Module):
    """Fus-MAE with FusMAE's parameters, computed the textbook way (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, p = config.embed_dim, config.patch_size
        per_direction = config.xattn_weights == "per_direction"
        self.patch_embed_s1 = nn.Conv2d(config.s1_channels, c, kernel_size=p, stride=p)
        self.patch_embed_s2 = nn.Conv2d(config.s2_channels, c, kernel_size=p, stride=p)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(c, config.grid_size), persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        n_vit = config.depth - 1 if config.variant == "xae" else config.depth
        if config.variant == "xae":
            self.xattn_encoder = PlainXAttnBlock(
                c, config.num_heads, config.mlp_ratio, config.qkv_bias, per_direction
            )
        self.blocks = nn.ModuleList(
            Block(c, config.num_heads, config.mlp_ratio, config.qkv_bias) for _ in range(n_vit)
        )
        self.norm = nn.LayerNorm(c, eps=LN_EPS)
        if config.variant == "xad":
            self.xattn_decoder = PlainXAttnBlock(
                c, config.num_heads, config.mlp_ratio, config.qkv_bias, per_direction
            )
        self.decoder_s1 = PlainDecoder(config, config.s1_channels)
        self.decoder_s2 = PlainDecoder(config, config.s2_channels)

    def embed(self, s1: torch.Tensor, s2: torch.Tensor, masking: Masking) -> torch.Tensor:
        """Full patch embedding of both modalities, then MAE's gather of the kept tokens."""
        e1 = self.patch_embed_s1(s1).flatten(2).transpose(1, 2) + self.pos_embed.to(s1.dtype)  # (B, N, C)
        e2 = self.patch_embed_s2(s2).flatten(2).transpose(1, 2) + self.pos_embed.to(s2.dtype)
        both = torch.cat([e1, e2], dim=1)  # (B, 2N, C): combined index space
        ids = masking.ids_keep
        return torch.gather(both, 1, ids.unsqueeze(-1).expand(-1, -1, both.shape[-1]))

    def forward(
        self,
        s1: torch.Tensor,
        s2: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        masking: Masking | None = None,
    ) -> torch.Tensor:
        """The pretraining loss (loss_s1 + loss_s2) for a drawn (or given) masking."""
        cfg = self.config
        b = s1.shape[0]
        if masking is None:
            masking = random_masking(
                b, cfg.num_patches, cfg.mask_ratio, cfg.masking, generator=generator, device=s1.device
            )
        x = self.embed(s1, s2, masking)
        if cfg.variant == "xae":
            x = self.xattn_encoder(x, masking.split)
        x = torch.cat([x, self.cls_token.expand(b, -1, -1).to(x.dtype)], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        latent = x[:, : masking.num_kept]
        if cfg.variant == "xad":
            latent = self.xattn_decoder(latent, masking.split)
        n = cfg.num_patches
        pred_s1 = self.decoder_s1(latent, masking.ids_restore[:, :n])
        pred_s2 = self.decoder_s2(latent, masking.ids_restore[:, n:])
        p = cfg.patch_size
        mask = masking.mask
        return forward_loss(s1, pred_s1, mask[:, :n], p, cfg.norm_pix_loss) + forward_loss(
            s2, pred_s2, mask[:, n:], p, cfg.norm_pix_loss
        )


def plain_from(model: torch.nn.Module) -> PlainFusMAE:
    """A PlainFusMAE with the same config and weights as a FusMAE (strict state-dict load)."""
    plain = PlainFusMAE(model.config)
    plain.load_state_dict(model.state_dict(), strict=True)
    return plain.to(next(model.parameters()).device)
