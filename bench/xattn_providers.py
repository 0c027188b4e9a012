"""The implementations of Eq. 2 (two-way cross-modal attention) that ``bench/xattn.py`` compares.

Every provider is a callable ``(q, k, v, split) -> o`` with the op's contract (``fusmae_fast.ops``):
q, k, v (B, L, H, D) modality-sorted, split int64 (B,), o (B, L, H, D), queries attend only the other
modality's keys, scale 1/sqrt(D). Anything a provider derives from ``split`` (a boolean mask, a
FlexAttention block mask, xformers' block-diagonal bias, the sample groups of the two-call form) is
built inside the call: in the model the split changes every step and the op runs once per step, so
that work is part of its cost. ``skip_reason`` says, before anything runs, why a provider cannot run
a case on this device (then it is skipped and the reason printed, never silently dropped).

Providers
    fusmae-triton    our Triton kernel (ops, kernels="triton"): CUDA; on CPU only in Triton's interpreter
    torch-reference  our torch path (ops, kernels="torch"; fusmae_fast.torch_ops): the useful score
                     blocks only where the split allows, on the faster attention core for the operands
    sdpa-mask        F.scaled_dot_product_attention with the boolean (B, 1, L, L) cross-modal mask
    flex             FlexAttention (torch.compile'd) with a torch.compile'd create_block_mask
    two-calls+cat    Eq. 2 as written: per group of samples with the same split, SDPA(x -> y) and
                     SDPA(y -> x), then torch.cat (and a batch re-order when there are several groups)
    literal          the same two calls and cat, each attention written out by hand (matmul, softmax,
                     matmul, autograd's backward): what a user writes without SDPA
    xformers         memory_efficient_attention with a BlockDiagonalMask over the packed batch
                     (query blocks [x_b, y_b], key blocks [y_b, x_b]): CUDA only
    twin             two-calls+cat again under another name, timed in turn with the others: an A/A
                     control (CPU only). Its time over two-calls+cat's is what this machine's noise
                     alone makes of two equal computations in the same run (bench/report.py's noise
                     floor); it never counts as a form ours is compared with
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F

from fusmae_fast import ops
from fusmae_fast.device import emulated_precision

XattnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
XattnCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

PROVIDERS: tuple[str, ...] = (
    "fusmae-triton",
    "torch-reference",
    "sdpa-mask",
    "flex",
    "two-calls+cat",
    "literal",
    "xformers",
    "twin",
)
CONTROL = "twin"
"""The A/A control provider (module docstring) and, in ``CONTROL_OF``, the provider it repeats."""
CONTROL_OF = "two-calls+cat"
MODES: tuple[str, ...] = ("fwd", "bwd", "fwd+bwd")
MEMORY_FRACTION = 0.4
"""A case whose estimated peak memory exceeds this fraction of the free memory is skipped."""
INTERPRETER_MAX_PROGRAMS = 4096
"""Triton's interpreter runs programs one by one in numpy; larger grids are skipped (minutes each)."""


# ------------------------------------------------------------------------------------------ providers


def torch_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """Our torch path, as the model calls it (validation included)."""
    return ops.cross_modal_attention(q, k, v, split, kernels="torch")


def fusmae_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """Our Triton kernel, as the model calls it (validation included)."""
    return ops.cross_modal_attention(q, k, v, split, kernels="triton")


def cross_mask(split: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 1, L, L) bool, True = may attend (query and key of different modalities)."""
    pos = torch.arange(length, device=split.device)
    first = pos[None, :] < split[:, None]
    return (first[:, :, None] != first[:, None, :])[:, None]


def sdpa_mask(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """SDPA with the boolean cross-modal mask. Rows without any key (split 0 or L) depend on the SDPA
    backend (torch 2.13 CPU: 0, as the op wants); the per-case correctness check catches a NaN."""
    mask = cross_mask(split, q.shape[1])
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).transpose(1, 2)


def _textbook_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v


def _or_zero(attend: XattnCore, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """attend over (G, H, n, D); queries with no key at all (the other modality is empty) get 0."""
    if k.shape[2] == 0:
        return torch.zeros_like(q)
    return attend(q, k, v)


def two_calls_cat(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """Eq. 2 as written: CA(x, y) and CA(y, x) as two SDPA calls per group of samples sharing a split,
    concatenated along the sequence; groups are re-assembled into batch order."""
    return _two_calls(F.scaled_dot_product_attention, q, k, v, split)


def literal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """``two_calls_cat`` with each attention written out (matmul, softmax, matmul)."""
    return _two_calls(_textbook_attention, q, k, v, split)


def _two_calls(
    attend: XattnCore, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor
) -> torch.Tensor:
    b, length = q.shape[:2]
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D) views
    splits = split.tolist()  # the host needs the split points to slice: one device sync
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(splits):
        groups.setdefault(int(s), []).append(i)
    outs = []
    order: list[int] = []
    for s, idx in groups.items():
        if len(groups) == 1:
            qg, kg, vg = qh, kh, vh
        else:
            sel = torch.tensor(idx, device=q.device)
            qg, kg, vg = qh.index_select(0, sel), kh.index_select(0, sel), vh.index_select(0, sel)
        o_x = _or_zero(attend, qg[:, :, :s], kg[:, :, s:], vg[:, :, s:])  # CA(x, y)
        o_y = _or_zero(attend, qg[:, :, s:], kg[:, :, :s], vg[:, :, :s])  # CA(y, x)
        outs.append(torch.cat([o_x, o_y], dim=2))
        order.extend(idx)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
    if order != list(range(b)):
        inverse = torch.empty(b, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(b)
        out = out.index_select(0, inverse.to(q.device))
    return out.transpose(1, 2)


@lru_cache(maxsize=1)
def _flex_fns():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    return torch.compile(flex_attention, dynamic=False), torch.compile(create_block_mask)


def flex_block_mask(split: torch.Tensor, length: int):
    """FlexAttention BlockMask of the cross-modal pattern (compiled create_block_mask)."""
    _, make_mask = _flex_fns()

    def cross_modal(b, h, q_idx, kv_idx):
        s = split[b]
        return (q_idx < s) != (kv_idx < s)

    return make_mask(cross_modal, split.shape[0], None, length, length, device=split.device)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor) -> torch.Tensor:
    """FlexAttention (compiled) with the cross-modal block mask; rows without keys come out as 0."""
    attend, _ = _flex_fns()
    block_mask = flex_block_mask(split, q.shape[1])
    o = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask)
    return o.transpose(1, 2)


def xformers_blockdiag(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor
) -> torch.Tensor:
    """xformers memory_efficient_attention over the packed batch (1, B*L, H, D).

    Query blocks are [x_b, y_b] per sample (the layout as it is); the keys/values are re-ordered per
    sample to [y_b, x_b] (one gather) so that query block i attends key block i, which is the other
    modality: BlockDiagonalMask.from_seqlens(q=[n1_0, n2_0, ...], kv=[n2_0, n1_0, ...]).
    """
    from xformers.ops import fmha

    b, length, h, d = q.shape
    n1 = split.tolist()
    q_lens = [x for s in n1 for x in (s, length - s)]
    kv_lens = [x for s in n1 for x in (length - s, s)]
    bias = fmha.attn_bias.BlockDiagonalMask.from_seqlens(q_seqlen=q_lens, kv_seqlen=kv_lens)
    pos = torch.arange(length, device=q.device)[None, :]
    n2 = (length - split)[:, None]
    src = torch.where(pos < n2, pos + split[:, None], pos - n2)  # swapped order per sample
    flat = (src + torch.arange(b, device=q.device)[:, None] * length).reshape(-1)
    kp = k.reshape(b * length, h, d).index_select(0, flat)[None]
    vp = v.reshape(b * length, h, d).index_select(0, flat)[None]
    o = fmha.memory_efficient_attention(q.reshape(1, b * length, h, d), kp, vp, attn_bias=bias)
    return o.reshape(b, length, h, d)


FUNCTIONS: dict[str, XattnFn] = {
    "fusmae-triton": fusmae_triton,
    "torch-reference": torch_reference,
    "sdpa-mask": sdpa_mask,
    "flex": flex,
    "two-calls+cat": two_calls_cat,
    "literal": literal,
    "xformers": xformers_blockdiag,
    "twin": two_calls_cat,
}


def mask_builder(provider: str) -> Callable[[torch.Tensor, int], object] | None:
    """The split -> mask step of a provider that has one (timed separately as ``mask_ms``)."""
    if provider == "sdpa-mask":
        return cross_mask
    if provider == "flex":
        return flex_block_mask
    return None


# ------------------------------------------------------------------------------------------- skipping


def estimated_bytes(provider: str, b: int, length: int, h: int, d: int, esize: int, mode: str) -> int:
    """Rough peak of the temporaries a provider allocates (score-sized tensors dominate)."""
    io = 8 * b * length * h * d * esize  # q, k, v, o and their gradients
    scores = b * h * length * length
    if provider == "torch-reference":
        # fp32 scores, masked copy, softmax, probs * has_key (+ the saved ones and grads in backward)
        return io + scores * 4 * (6 if mode != "fwd" else 4) + b * length * length
    if provider == "sdpa-mask":
        # the bool mask; backends may expand it to a float bias and (math path) materialise scores
        return io + b * length * length * 5 + scores * 4 * (3 if mode != "fwd" else 2)
    if provider in ("two-calls+cat", "literal", "twin"):
        half = b * h * (length // 2 + 1) ** 2 * 4 * 2
        return io + half * (3 if mode != "fwd" else 2)
    return io + b * length * length  # flash-style kernels: block masks only


def skip_reason(
    provider: str,
    device: torch.device,
    dtype: torch.dtype,
    mode: str,
    *,
    b: int,
    length: int,
    h: int,
    d: int,
    split: torch.Tensor,
    interpret: bool,
    free_bytes: int,
) -> str | None:
    """Why ``provider`` cannot run this case here, or None if it can."""
    if provider not in FUNCTIONS:
        return f"unknown provider {provider!r}"
    emulated = emulated_precision({torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, ""), device)
    if emulated:
        return f"{emulated} (a timing of the emulation, not of attention)"
    if provider == CONTROL and device.type == "cuda":
        return "the A/A noise control runs on CPU only (it would lengthen the GPU plan)"
    if provider == "fusmae-triton":
        if device.type != "cuda" and not interpret:
            return (
                "our Triton kernel needs CUDA (--interpret runs it in Triton's CPU interpreter, not a timing)"
            )
        if device.type != "cuda" and dtype == torch.bfloat16:
            return "Triton's interpreter has no bf16 dots"
        if device.type != "cuda":
            programs = math.ceil(length / 16) * b * h
            if programs > INTERPRETER_MAX_PROGRAMS:
                return (
                    f"interpreter: {programs} programs per launch would take minutes; run --interpret "
                    f"with a smaller case (<= {INTERPRETER_MAX_PROGRAMS} programs)"
                )
    if provider == "flex":
        try:
            importlib.import_module("torch.nn.attention.flex_attention")
        except ImportError as exc:
            return f"FlexAttention unavailable in torch {torch.__version__}: {exc}"
        if device.type == "cpu" and mode != "fwd":
            return "FlexAttention has no CPU backward (torch raises NotImplementedError): forward only"
    if provider == "xformers":
        if device.type != "cuda":
            return "xformers' memory_efficient_attention kernels are CUDA only"
        if importlib.util.find_spec("xformers") is None:
            return "xformers is not installed (pip install xformers matching this torch)"
        if bool(((split == 0) | (split == length)).any()):
            return "a sample has an empty modality (split 0 or L): BlockDiagonalMask needs non-empty blocks"
    esize = torch.empty((), dtype=dtype).element_size()
    need = estimated_bytes(provider, b, length, h, d, esize, mode)
    if need > MEMORY_FRACTION * free_bytes:
        return (
            f"needs ~{need / 2**30:.1f} GiB of temporaries (> {MEMORY_FRACTION:.0%} of the "
            f"{free_bytes / 2**30:.1f} GiB free on {device.type})"
        )
    return None
