"""Parity of the Triton masked patch embedding (masked_patch_embed) with float64 references.

Forward and every gradient (d img, d weight, d bias, d pos) against float64: fp32 with a fixed
tolerance, fp16 by the flash-attention rule. Cases: the issue's image sizes (8x8/P4, 120x120/P8,
64x64/P16), C_in in {2, 12}, an embedding width that is not a multiple of any block, ragged keeps
(mask ratio 0.0, 0.75 and 1.0 in one launch, -1 slots), MAE's uniform keep, nothing kept, small block
configs and several d weight row splits, strided inputs, the model's two-modality use, the dtype and
distinct-index checks, the torch.library op (opcheck, torch.compile), and the autotune prune hooks
against keep() and compile_specs.

The kernels run in Triton's interpreter on a CPU (tests/conftest.py). The max errors met are printed
at the end of the module.
"""

from __future__ import annotations

import pytest
import torch
from error_report import ErrorReport, max_abs_error  # tests/parity is on sys.path under pytest
from token_cases import case_seed

from fusmae_fast import ops
from fusmae_fast.kernels import masked_patch_embed as mpe

CUDA = torch.cuda.is_available()
REPORT = ErrorReport("masked_patch_embed max |error| vs float64 reference:")
_err = max_abs_error
_print_errors = REPORT.fixture()

IMAGE_SIZES = {"8x8-P4": (8, 4), "120x120-P8": (120, 8), "64x64-P16": (64, 16)}
EMBED = 40  # not a multiple of any column block


def _mpe_inputs(B, C_in, H, P, C, gen):
    N = (H // P) ** 2
    img = torch.randn(B, C_in, H, H, generator=gen, dtype=torch.float64)
    weight = torch.randn(C, C_in, P, P, generator=gen, dtype=torch.float64) / (C_in * P * P) ** 0.5
    bias = torch.randn(C, generator=gen, dtype=torch.float64)
    pos = torch.randn(N, C, generator=gen, dtype=torch.float64)
    return img, weight, bias, pos


def _ragged_ids(N: int, keeps: list[int], gen: torch.Generator) -> torch.Tensor:
    """(B, N) ids: sample b keeps keeps[b] random patches at random slots, -1 in the other slots."""
    rows = []
    for k in keeps:
        row = torch.full((N,), -1, dtype=torch.int64)
        slots = torch.randperm(N, generator=gen)[:k]
        row[slots] = torch.randperm(N, generator=gen)[:k]
        rows.append(row)
    return torch.stack(rows)


def _mpe_run(fn, img, weight, bias, pos, ids, patch, dout):
    leaves = [t.detach().clone().requires_grad_(True) for t in (img, weight, bias, pos)]
    out = fn(*leaves, ids, patch)
    grads = torch.autograd.grad(out, leaves, dout)
    return [out.detach(), *grads]


def check_mpe(img, weight, bias, pos, ids, patch, dout, tag: str) -> None:
    dtype = img.dtype
    names = ("out", "dimg", "dweight", "dbias", "dpos")
    tri = _mpe_run(mpe.masked_patch_embed_triton, img, weight, bias, pos, ids, patch, dout)
    ref = _mpe_run(
        mpe.masked_patch_embed_ref, *(t.double() for t in (img, weight, bias, pos)), ids, patch, dout.double()
    )
    low = (
        _mpe_run(mpe.masked_patch_embed_ref, img, weight, bias, pos, ids, patch, dout)
        if dtype != torch.float32
        else ref
    )
    for i, (name, t, r, lo) in enumerate(zip(names, tri, ref, low, strict=True)):
        assert t.dtype == dtype and t.shape == r.shape, name
        assert torch.isfinite(t).all(), f"{tag} {name} has non-finite values"
        REPORT.check(name, t, r, lo, dtype, tag, factor=3.0 if i > 0 else 2.0)
    empty = ids < 0  # empty slots: exact zeros out; masked patches: exact zeros in d img
    assert torch.equal(tri[0][empty], torch.zeros_like(tri[0][empty]))
    kept_pixels = torch.zeros_like(img, dtype=torch.bool)
    gw = img.shape[3] // patch
    for b, i in (ids >= 0).nonzero().tolist():
        n = int(ids[b, i])
        kept_pixels[
            b, :, (n // gw) * patch : (n // gw + 1) * patch, (n % gw) * patch : (n % gw + 1) * patch
        ] = True
    assert not tri[1][~kept_pixels].any(), f"{tag}: d img nonzero on a masked patch"


MPE_CASES = [
    (size, c_in, dtype)
    for size in IMAGE_SIZES
    for c_in in (2, 12)
    for dtype in (torch.float32, torch.float16)
]


@pytest.mark.parametrize("case", MPE_CASES, ids=[f"{s}-Cin{c}-{str(d)[6:]}" for s, c, d in MPE_CASES])
def test_mpe_parity_ragged(case, device):
    """One launch, three samples: mask ratio 0.0 (all N kept), 0.75 (N/4 kept) and 1.0 (nothing kept),
    kept patches at random slots of K = N, -1 elsewhere (the ragged per-modality keep form)."""
    size, C_in, dtype = case
    H, P = IMAGE_SIZES[size]
    N = (H // P) ** 2
    gen = torch.Generator().manual_seed(case_seed(case))
    img, weight, bias, pos = (t.to(dtype) for t in _mpe_inputs(3, C_in, H, P, EMBED, gen))
    ids = _ragged_ids(N, [N, N // 4, 0], gen)
    dout = torch.randn(3, N, EMBED, generator=gen).to(dtype)
    check_mpe(*(t.to(device) for t in (img, weight, bias, pos, ids)), P, dout.to(device), tag=str(case))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mpe_uniform_keep(dtype, device):
    """MAE's plain form: K = N/4 kept per sample, no empty slot (mask ratio 0.75)."""
    H, P, C_in, B = 120, 8, 2, 2
    N = (H // P) ** 2
    gen = torch.Generator().manual_seed(21)
    img, weight, bias, pos = (t.to(dtype) for t in _mpe_inputs(B, C_in, H, P, EMBED, gen))
    ids = torch.stack([torch.randperm(N, generator=gen)[: N // 4] for _ in range(B)])
    dout = torch.randn(B, N // 4, EMBED, generator=gen).to(dtype)
    check_mpe(
        *(t.to(device) for t in (img, weight, bias, pos, ids)), P, dout.to(device), tag=f"uniform {dtype}"
    )


def test_mpe_nothing_kept(device):
    """K = 0 (mask ratio 1.0 for the whole batch): empty output, all gradients exact zeros."""
    gen = torch.Generator().manual_seed(22)
    img, weight, bias, pos = (
        t.float().to(device).requires_grad_(True) for t in _mpe_inputs(2, 2, 8, 4, 8, gen)
    )
    ids = torch.empty(2, 0, dtype=torch.int64, device=device)
    out = mpe.masked_patch_embed_triton(img, weight, bias, pos, ids, 4)
    assert out.shape == (2, 0, 8)
    grads = torch.autograd.grad(out.sum(), [img, weight, bias, pos])
    for g, t in zip(grads, (img, weight, bias, pos), strict=True):
        assert g.shape == t.shape and not g.any()


@pytest.mark.parametrize(
    "conf", [(16, 16, 32, 4, 1), (32, 16, 16, 4, 1)], ids=["BM16-BN16-BR32", "BM32-BN16-BR16"]
)
def test_mpe_block_configs_and_dw_splits(monkeypatch, conf, device):
    """Small blocks (partial row / column / reduction blocks, straddling empty-slot blocks) and several
    d weight row splits give the same results."""
    for kernel in ("fwd", "dimg", "dw"):
        monkeypatch.setitem(mpe.MPE_INTERPRETER_CONFIG, kernel, conf)
    monkeypatch.setattr(mpe, "MIN_ROWS_PER_SPLIT", 16)
    monkeypatch.setattr(mpe, "SPLIT_ROW_ALIGN", 32)
    H, P, C_in, C = 24, 4, 3, 20
    N = (H // P) ** 2
    assert mpe.dw_splits(3 * N, C, C_in * P * P)[0] > 1
    gen = torch.Generator().manual_seed(23)
    img, weight, bias, pos = (t.float() for t in _mpe_inputs(3, C_in, H, P, C, gen))
    ids = _ragged_ids(N, [N, 7, 0], gen)
    dout = torch.randn(3, N, C, generator=gen)
    check_mpe(*(t.to(device) for t in (img, weight, bias, pos, ids)), P, dout.to(device), tag=f"conf {conf}")


def test_mpe_strided_inputs(device):
    """channels_last image, transposed-view weight, strided pos and ids: strides are honoured."""
    H, P, C_in, C, B = 16, 4, 3, 24, 2
    N = (H // P) ** 2
    gen = torch.Generator().manual_seed(24)
    img, weight, bias, pos = (t.float() for t in _mpe_inputs(B, C_in, H, P, C, gen))
    img = img.to(memory_format=torch.channels_last)
    weight = weight.transpose(2, 3).contiguous().transpose(2, 3)
    pos = torch.randn(N, 2 * C, generator=gen)[:, ::2]
    bias = torch.randn(2 * C, generator=gen)[::2]
    ids = _ragged_ids(N, [N, 5], gen).t().contiguous().t()
    dout = torch.randn(B, N, C, generator=gen)
    assert not (img.is_contiguous() or weight.is_contiguous() or pos.is_contiguous())
    check_mpe(*(t.to(device) for t in (img, weight, bias, pos, ids)), P, dout.to(device), tag="strided")


def test_mpe_fusmae_two_modalities(device):
    """The model's use: S1 and S2 embedded with ids_keep_modality(1|2) (ragged, independent masking)
    and added give the modality-sorted sequence; matches the torch path."""
    from fusmae_fast.masking import random_masking

    H, P, C, B = 24, 4, 16, 3
    N = (H // P) ** 2
    masking = random_masking(B, N, 0.75, "independent", generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(25)
    total = {}
    for kernels in ("torch", "triton"):
        parts = []
        for modality, c_in in ((1, 2), (2, 12)):
            g = torch.Generator().manual_seed(100 + modality)
            img, weight, bias, pos = (t.float().to(device) for t in _mpe_inputs(B, c_in, H, P, C, g))
            ids = masking.ids_keep_modality(modality).to(device)
            parts.append(ops.masked_patch_embed(img, weight, bias, pos, ids, P, kernels=kernels))
        total[kernels] = parts[0] + parts[1]
    del gen
    torch.testing.assert_close(total["triton"], total["torch"], atol=1e-5, rtol=1e-5)


def test_mpe_rejects_mixed_dtypes_and_repeats(device, debug_checks):
    gen = torch.Generator().manual_seed(26)
    img, weight, bias, pos = (t.float().to(device) for t in _mpe_inputs(2, 2, 8, 4, 8, gen))
    ids = torch.tensor([[0, 1], [2, -1]], device=device)
    with pytest.raises(TypeError, match="share a dtype"):
        mpe.masked_patch_embed_triton(img, weight.half(), bias, pos, ids, 4)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        mpe.masked_patch_embed_triton(img.double(), weight.double(), bias.double(), pos.double(), ids, 4)
    repeated = torch.tensor([[0, 0], [2, -1]], device=device)
    with pytest.raises(ValueError, match="repeats an index"):
        mpe.masked_patch_embed_triton(img, weight, bias.requires_grad_(True), pos, repeated, 4)
    # two empty slots (-1) in a row are not a repeat
    empty_slots = torch.tensor([[-1, -1], [3, -1]], device=device)
    out = mpe.masked_patch_embed_triton(img, weight, bias, pos, empty_slots, 4)
    assert not out[0].any()


def test_mpe_ops_dispatch(device):
    gen = torch.Generator().manual_seed(27)
    img, weight, bias, pos = (t.float().to(device) for t in _mpe_inputs(2, 12, 16, 4, 8, gen))
    ids = torch.tensor([[0, 5, 15], [3, -1, 9]], device=device)
    got = ops.masked_patch_embed(img, weight, bias, pos, ids, 4, kernels="triton")
    want = ops.masked_patch_embed(img, weight, bias, pos, ids, 4, kernels="torch")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mpe_opcheck(device):
    gen = torch.Generator().manual_seed(28)
    leaves = [t.float().to(device).requires_grad_(True) for t in _mpe_inputs(2, 2, 8, 4, 8, gen)]
    ids = torch.tensor([[0, 3], [2, -1]], device=device)
    torch.library.opcheck(
        torch.ops.fusmae_fast.masked_patch_embed_fwd.default, (*leaves, ids, 4, False, False)
    )


def test_mpe_torch_compile_fullgraph(device):
    import torch._dynamo

    torch._dynamo.reset()

    def f(img, weight, bias, pos, ids):
        return (mpe.masked_patch_embed_triton(img * 2.0, weight, bias, pos, ids, 4) ** 2).sum()

    gen = torch.Generator().manual_seed(29)
    leaves = [t.float().to(device).requires_grad_(True) for t in _mpe_inputs(2, 2, 8, 4, 8, gen)]
    ids = torch.tensor([[0, 3], [2, -1]], device=device)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(*leaves, ids)
    grads = torch.autograd.grad(out, leaves)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = (mpe.masked_patch_embed_ref(ref_leaves[0] * 2.0, *ref_leaves[1:], ids, 4) ** 2).sum()
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    assert abs(out.item() - ref.item()) <= 1e-4 * abs(ref.item())
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


def test_mpe_compiled_backward_rejects_repeats(device, debug_checks):
    """Under torch.compile the forward's check is skipped (one data-independent graph); the backward op
    checks instead, where a gradient of pos (or img, bias) is taken: repeats would race there."""
    import torch._dynamo

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(30)
    img, weight, bias, pos = (t.float().to(device) for t in _mpe_inputs(2, 2, 8, 4, 8, gen))
    pos.requires_grad_(True)
    repeated = torch.tensor([[0, 0], [2, -1]], device=device)

    def f(img, weight, bias, pos, ids):
        return mpe.masked_patch_embed_triton(img, weight, bias, pos, ids, 4).sum()

    loss = torch.compile(f, fullgraph=True, backend="aot_eager")(img, weight, bias, pos, repeated)
    with pytest.raises(ValueError, match="ids_keep repeats an index"):
        loss.backward()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="Triton's interpreter has no bf16; runs on CUDA only")
def test_mpe_bf16_cuda(device):
    gen = torch.Generator().manual_seed(30)
    H, P = 120, 8
    N = (H // P) ** 2
    for C_in in (2, 12):
        img, weight, bias, pos = (t.bfloat16() for t in _mpe_inputs(4, C_in, H, P, 768, gen))
        ids = _ragged_ids(N, [N, N // 4, 0, 112], gen)
        dout = torch.randn(4, N, 768, generator=gen).bfloat16()
        check_mpe(
            *(t.to(device) for t in (img, weight, bias, pos, ids)), P, dout.to(device), tag=f"bf16 {C_in}"
        )


def test_autotune_prune_matches_keep_and_compile_specs():
    """The autotuners' prune hooks apply keep(); every config they can keep for the presets' shapes
    (C 768, C_in 2 / 12, P 8 / 16) is in compile_specs (the copy kernels' part of this check is
    test_token_gather.py's test_copy_autotune_prune_matches_keep_and_compile_specs)."""
    names = {(s["kernel"], s["config"]) for s in mpe.compile_specs()}
    for kernel, tensor_arg in (("fwd", "IMG"), ("dimg", "DOUT"), ("dw", "DOUT")):
        configs = mpe._gemm_triton_configs(kernel)
        for dtype, tname in ((torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")):
            esize = torch.empty((), dtype=dtype).element_size()
            for c_in in (2, 12):
                for patch in mpe.COMPILE_PATCHES:
                    R = c_in * patch * patch
                    args = {"C": 768, "C_IN": c_in, tensor_arg: torch.empty(1, dtype=dtype)}
                    pruned = mpe._gemm_prune(kernel, tensor_arg)(configs, args, PATCH=patch)
                    got = [
                        (
                            c.kwargs["BLOCK_M"],
                            c.kwargs["BLOCK_N"],
                            c.kwargs["BLOCK_R"],
                            c.num_warps,
                            c.num_stages,
                        )
                        for c in pruned
                    ]
                    assert got == mpe.kept_gemm_configs(kernel, 768, R, esize) and got
                    for m, n, r, w, s in got:
                        assert (
                            f"mpe_{kernel}",
                            f"BM{m}-BN{n}-BR{r}-w{w}-s{s}-P{patch}-ieee-{tname}",
                        ) in names
