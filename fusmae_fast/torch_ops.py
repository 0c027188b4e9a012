"""The torch path of the ops that have a faster form than their reference (what ``kernels="torch"`` runs).

``cross_modal_attention_torch``
    Eq. 2 computing only the useful score blocks where the split allows, on the attention core of
    ``fusmae_fast.attention`` (explicit or SDPA, by operands), equal to ``cross_modal_attention_ref``
    up to rounding (tested, rows without keys included).
``masked_mse_torch``
    ``masked_mse_ref``'s math in one ``torch.autograd.Function``: the normalised target is built
    without autograd in one buffer, and that buffer is all the hand-written backward needs (tested
    equal to the fp64 reference). ``torch.compile`` traces it in the model's one graph.

The other two ops (patch embedding, token scatter/gather) run their ``*_ref`` directly. The references
stay in ``fusmae_fast.kernels`` beside the Triton kernels they define (the tests' oracles); this module
builds on them (``cross_modal_mask``, ``masked_mse_ref`` as the fallback) and on the model's patch
layout (``fusmae_fast.patches``). Inputs are validated by ``fusmae_fast.ops``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fusmae_fast.attention import (
    attention,
    explicit_attention,
    explicit_is_faster,
    may_time_forms,
    sdpa_attention,
)
from fusmae_fast.form_timing import fastest, grad_will_be_taken, operands_key
from fusmae_fast.kernels.cross_modal_attention import cross_modal_mask
from fusmae_fast.kernels.masked_loss import EPS, check_norm_pix, masked_mse_ref
from fusmae_fast.patches import patch_view

__all__ = ["cross_modal_attention_torch", "masked_mse_torch"]


def cross_modal_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    split: torch.Tensor,
    bounds: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The torch path of the cross-modal attention, equal to ``cross_modal_attention_ref`` up to
    rounding (tested, rows without keys included). The attention core is ``fusmae_fast.attention``'s
    (explicit matmul-softmax-matmul or SDPA, whichever is faster for the operands); ``bounds``: the
    split's (min, max) when the caller has read them already (``ops`` does, in its input check).
    Around the core:

    - one split s for the whole batch (consistent masking; eager): only the useful n1 x n2 score
      blocks are computed, never the masked L x L (``_one_split``: two calls, S1 queries on S2 keys and
      S2 queries on S1 keys, and a concatenation, or for equal halves, what consistent masking gives,
      one paired call already in the concatenated layout);
    - ragged splits, every sample with both modalities (independent masking; eager): one call with
      the boolean cross-modal mask, or, where no gradient will be taken and timing picks it, the
      samples grouped by split point and each group's useful blocks only (``_ragged``);
    - otherwise (a sample with split 0 or L, or under torch.compile, which needs one data-independent
      graph): the masked call with rows that have no key let attend every key (finite, no NaN
      anywhere), then exact zeros put back with ``torch.where``, which also sends exactly zero
      gradient into those rows.
    """
    length = q.shape[1]
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D) views
    if not torch.compiler.is_compiling() and split.numel():
        # Eager mode may look at the split points (under torch.compile: one data-independent graph).
        # bounds: from the CPU range check; a CUDA split is read back once (both bounds together)
        lo, hi = bounds if bounds is not None else torch.stack(torch.aminmax(split)).tolist()
        if lo == hi and 0 < lo < length:
            return _one_split(qh, kh, vh, split, lo)
        if lo > 0 and hi < length:  # ragged, every sample has both modalities: no fix-up passes
            return _ragged(qh, kh, vh, split)
    allowed = cross_modal_mask(split, length)  # (B, L, L)
    has_key = ((split > 0) & (split < length))[:, None, None]  # (B, 1, 1): both modalities present
    attn_mask = (allowed | ~has_key)[:, None]  # (B, 1, L, L)
    out = attention(qh, kh, vh, attn_mask).transpose(1, 2)
    return torch.where(has_key[..., None], out, out.new_zeros(()))


def _one_split(
    qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, split: torch.Tensor, s: int
) -> torch.Tensor:
    """Eq. 2 with one split 0 < s < L for the whole batch, only the useful score blocks computed: for
    equal halves with the explicit core, one paired call (queries as (B, H, 2, s, D), keys and values
    with their halves swapped, the output already in the concatenated layout), otherwise two calls
    (S1 queries on S2 keys, S2 queries on S1 keys) and a concatenation. That is the rules' choice;
    where ``may_time_forms`` allows (with or without a gradient), the forms are timed instead
    (``fusmae_fast.form_timing``): the paired call, two explicit calls, two SDPA calls, and one
    SDPA call over all L x L scores with the cross-modal mask (more work, but one call of the flash
    kernel, which wins some bf16 shapes on a CPU with AMX)."""
    operands = (qh, kh, vh, split, s)

    def by_rules() -> torch.Tensor:
        if 2 * s == qh.shape[2] and explicit_is_faster(qh, kh.narrow(2, 0, s), paired=True):
            return _paired(*operands)
        return _two_calls_by_rules(*operands)  # each direction's core by the rules

    if not may_time_forms(qh, kh, vh, keys=max(s, qh.shape[2] - s)):
        return by_rules()
    forms = _ONE_SPLIT_FORMS if 2 * s == qh.shape[2] else _ONE_SPLIT_UNEQUAL_FORMS
    return fastest(("cross-modal-one-split", s, operands_key(qh, kh, vh)), forms, operands, by_rules)


def _paired(
    qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, split: torch.Tensor, s: int
) -> torch.Tensor:
    """Equal halves as one explicit call: queries (B, H, 2, s, D), keys and values with their halves
    swapped; the output is already in the concatenated layout."""
    b, h, length, d = qh.shape
    swapped = [torch.cat(t.split_with_sizes([s, s], 2)[::-1], 2).view(b, h, 2, s, d) for t in (kh, vh)]
    return explicit_attention(qh.reshape(b, h, 2, s, d), *swapped).view(b, h, length, d).transpose(1, 2)


def _ragged(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """Eq. 2 with ragged splits, every sample with both modalities: the masked call (``_masked``). Where
    no gradient will be taken and ``may_time_forms`` allows, it is timed against ``_grouped`` (only the
    useful blocks, per group of samples sharing a split: half the score work of the masked call, in
    many smaller products); the masked call's two cores are timed beside it. With a gradient the
    grouped form is not a candidate: autograd through its gathers and per-group calls measured several
    times slower than the masked call's backward (``bench/xattn.py``'s ``literal`` rows, the same
    computation)."""
    if grad_will_be_taken(qh, kh, vh) or not may_time_forms(qh, kh, vh):
        return _masked(qh, kh, vh, split)
    operands = (qh, kh, vh, split)
    return fastest(
        ("cross-modal-ragged", operands_key(qh, kh, vh)), _RAGGED_FORMS, operands, lambda: _masked(*operands)
    )


def _grouped(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """Ragged splits (CPU, 0 < every split < L) with the samples grouped by split point: each group's
    two directions as two explicit calls on its useful blocks (``_two_calls``), written into the output
    at the group's batch rows."""
    b, h, length, d = qh.shape
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(split.tolist()):
        groups.setdefault(s, []).append(i)
    out = qh.new_empty(b, length, h, d)
    for s, rows in groups.items():
        idx = torch.tensor(rows, device=qh.device)
        group = (t.index_select(0, idx) for t in (qh, kh, vh))
        out.index_copy_(0, idx, _two_explicit(*group, split, s))
    return out


def _two_calls(core: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Eq. 2 as two calls of ``core`` (S1 queries on S2 keys, S2 queries on S1 keys) and a concatenation."""

    def two_calls(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, split: torch.Tensor, s: int):
        sizes = [s, qh.shape[2] - s]  # one split call per operand (two views), cheaper than two narrows
        (qx, qy), (kx, ky), (vx, vy) = (t.split_with_sizes(sizes, 2) for t in (qh, kh, vh))
        return torch.cat([core(qx, ky, vy), core(qy, kx, vx)], dim=2).transpose(1, 2)

    return two_calls


def _masked_sdpa(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, split: torch.Tensor, s: int):
    """One SDPA call over all L x L scores with the cross-modal mask of the (shared) split."""
    mask = cross_modal_mask(split[:1], qh.shape[2])[:, None]
    return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).transpose(1, 2)


_two_calls_by_rules = _two_calls(attention)
_two_explicit = _two_calls(explicit_attention)
_ONE_SPLIT_UNEQUAL_FORMS: dict[str, Callable[..., torch.Tensor]] = {
    "two-sdpa": _two_calls(F.scaled_dot_product_attention),
    "two-explicit": _two_explicit,
    "masked-sdpa": _masked_sdpa,
}
"""The forms ``_one_split`` times, each a function of (qh, kh, vh, split, s)."""
_ONE_SPLIT_FORMS = {**_ONE_SPLIT_UNEQUAL_FORMS, "paired": _paired}
"""With equal halves, the paired call too."""


def _masked_core(core: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Ragged splits as one ``core`` call with the boolean cross-modal mask (the mask built inside)."""

    def masked(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
        return core(qh, kh, vh, cross_modal_mask(split, qh.shape[2])[:, None]).transpose(1, 2)

    return masked


_masked = _masked_core(attention)
"""Ragged splits as one masked call, its core by ``attention`` (timed or by the rules)."""
_RAGGED_FORMS: dict[str, Callable[..., torch.Tensor]] = {
    "masked-explicit": _masked_core(explicit_attention),
    "masked-sdpa": _masked_core(sdpa_attention),
    "grouped": _grouped,
}
"""The forms ``_ragged`` times where no gradient will be taken, each a function of (qh, kh, vh, split)."""


class _MaskedMSETorch(torch.autograd.Function):
    """masked_mse in a few in-place passes with a hand-written backward (the torch path).

    Autograd of the reference keeps every intermediate of patchify / normalise / square / mean and
    runs one backward op per forward op; here the normalised target is built in one buffer without
    autograd (the images take no gradient), turned in place into target - pred, and that one buffer is
    all the backward needs: d pred = -2 w (target - pred) d loss / (D max(sum w, 1)).
    """

    @staticmethod
    def forward(ctx, pred, img, mask, patch: int, norm_pix: bool):  # type: ignore[override]
        acc = torch.promote_types(pred.dtype, torch.float32)
        d = pred.shape[-1]
        view = patch_view(img, patch)
        t = torch.empty(view.shape, dtype=acc, device=img.device)  # fresh: modified in place below
        t.copy_(view)  # patchify and the cast to the accumulation dtype in one copy
        t = t.view(-1, d)
        if norm_pix:
            t.sub_(t.mean(dim=1, keepdim=True))
            # unbiased variance from the centred rows; the norm is one fast reduction
            var = torch.linalg.vector_norm(t, dim=1, keepdim=True).square_().div_(d - 1)
            t.mul_(var.add_(EPS).rsqrt_())
        t.sub_(pred.reshape(-1, d).to(acc))  # t = target - pred
        w = mask.reshape(-1).to(acc)
        denom = w.sum().clamp(min=1.0)
        per_patch = torch.linalg.vector_norm(t, dim=1).square_()  # d * MSE of each patch
        loss = (per_patch * w).sum() / (d * denom)
        ctx.save_for_backward(t, w, denom)
        ctx.pred_shape, ctx.pred_dtype = pred.shape, pred.dtype
        return loss

    @staticmethod
    def backward(ctx, dloss):  # type: ignore[override]
        t, w, denom = ctx.saved_tensors
        scale = w.mul(dloss * (-2.0 / t.shape[1]) / denom)
        dpred = (t * scale[:, None]).to(ctx.pred_dtype).reshape(ctx.pred_shape)
        return dpred, None, None, None, None


def masked_mse_torch(
    pred: torch.Tensor, img: torch.Tensor, mask: torch.Tensor, patch: int, norm_pix: bool
) -> torch.Tensor:
    """The torch path of masked_mse: ``masked_mse_ref``'s result, computed faster.

    Uses ``_MaskedMSETorch`` (in-place passes, one saved buffer, hand-written backward) when the image
    takes no gradient and a mask gets none (the model's case); otherwise the reference.
    """
    if img.requires_grad or mask.requires_grad:
        return masked_mse_ref(pred, img, mask, patch, norm_pix)
    check_norm_pix(norm_pix, pred.shape[-1])
    return _MaskedMSETorch.apply(pred, img, mask, int(patch), bool(norm_pix))
