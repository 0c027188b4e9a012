"""Parity of the Triton token gather and masked patch embedding with float64 references.

gather_tokens: forward and dx are bit-exact with the torch path in fp32 and fp16 (a copy, or one
correctly rounded add); d pos (a sum over the batch) is checked against float64 with fp32 tolerance
(fp16: the flash-attention rule). Cases: N from the issue's image sizes (8x8/P4 -> 4, 120x120/P8 -> 225,
64x64/P16 -> 16), widths C in {2, 12} plus one wider than a block, keep ratios {0.0 (K = N), 0.75,
1.0 (K = 0)}, with and without pos, fp32 and fp16, several batch splits of the d pos reduction,
non-contiguous inputs, the distinct-index check, the torch.library op (opcheck, torch.compile).

The kernels run in Triton's interpreter on a CPU (tests/conftest.py). The max errors met are printed
at the end of the module.
"""

from __future__ import annotations

import pytest
import torch
from error_report import ErrorReport, max_abs_error  # tests/parity is on sys.path under pytest
from token_cases import GRID_N, TOKEN_CASE_IDS, TOKEN_CASES, case_seed

from fusmae_fast import ops
from fusmae_fast.kernels import token_gather as tg
from fusmae_fast.kernels.token_gather import gather_tokens_ref, gather_tokens_triton

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
REPORT = ErrorReport("token_gather max |error| vs float64 reference:")
_err = max_abs_error
_record = REPORT.record
_print_errors = REPORT.fixture()


def _keep_ids(B: int, N: int, K: int, gen: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randperm(N, generator=gen)[:K] for _ in range(B)]).to(torch.int64)


# ----------------------------------------------------------------------------------------------------
# gather_tokens
# ----------------------------------------------------------------------------------------------------


def _gather_run(fn, x, ids, pos, dout):
    x = x.detach().clone().requires_grad_(True)
    leaves = [x]
    if pos is not None:
        pos = pos.detach().clone().requires_grad_(True)
        leaves.append(pos)
    out = fn(x, ids, pos)
    grads = torch.autograd.grad(out, leaves, dout)
    return out.detach(), grads[0], (grads[1] if pos is not None else None)


def check_gather(x, ids, pos, dout, tag: str) -> None:
    dtype = x.dtype
    out, dx, dpos = _gather_run(gather_tokens_triton, x, ids, pos, dout)
    out_t, dx_t, dpos_t = _gather_run(gather_tokens_ref, x, ids, pos, dout)
    # the forward and dx are copies (plus one correctly rounded add): bit-exact with the torch path
    assert out.dtype == out_t.dtype and out.shape == out_t.shape
    assert torch.equal(out, out_t), f"{tag}: forward not bit-exact ({_err(out, out_t):.3e})"
    assert dx.dtype == x.dtype and torch.equal(dx, dx_t), f"{tag}: dx not bit-exact ({_err(dx, dx_t):.3e})"
    _record(f"{str(dtype)[6:]} triton out/dx (exact)", max(_err(out, out_t), _err(dx, dx_t)))
    if pos is not None:
        ref = _gather_run(gather_tokens_ref, x.double(), ids, pos.double(), dout.double())
        assert dpos.dtype == pos.dtype
        REPORT.check("dpos", dpos, ref[2], dpos_t, dtype, tag, factor=3.0)


@pytest.mark.parametrize("case", TOKEN_CASES, ids=TOKEN_CASE_IDS)
def test_gather_parity(case):
    grid, C, ratio, dtype, with_pos = case
    N = GRID_N[grid]
    B = 3
    K = int(N * (1.0 - ratio))
    gen = torch.Generator().manual_seed(case_seed(case))
    x = torch.randn(B, N, C, generator=gen).to(dtype)
    pos = torch.randn(N, C, generator=gen).to(dtype) if with_pos else None
    ids = _keep_ids(B, N, K, gen)
    dout = torch.randn(B, K, C, generator=gen).to(dtype)
    dev = [t.to(DEVICE) if t is not None else None for t in (x, ids, pos, dout)]
    check_gather(*dev, tag=str(case))


@pytest.mark.parametrize("min_per_split", [1, 2])
def test_gather_batch_splits(monkeypatch, min_per_split):
    """The d pos reduction gives the same result for several batch splits (uneven last split)."""
    monkeypatch.setattr(tg, "MIN_BATCH_PER_SPLIT", min_per_split)
    B, N, C, K = 7, 50, 70, 20
    assert tg.batch_splits(B, N, C) > 1
    gen = torch.Generator().manual_seed(5)
    x, pos = torch.randn(B, N, C, generator=gen), torch.randn(N, C, generator=gen)
    ids = _keep_ids(B, N, K, gen)
    dout = torch.randn(B, K, C, generator=gen)
    check_gather(*(t.to(DEVICE) for t in (x, ids, pos, dout)), tag=f"splits {min_per_split}")


def test_gather_non_contiguous_and_mixed_dtypes():
    """Strided x / pos / ids views; fp16 x with fp32 pos promotes to an fp32 output (torch's rule)."""
    B, N, C, K = 2, 30, 24, 9
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(B, C, N, generator=gen).transpose(1, 2)  # last dim not contiguous
    pos = torch.randn(2 * N, C, generator=gen)[::2]  # row stride 2C
    ids = _keep_ids(B, N, K, gen).t().contiguous().t()  # column-major ids
    dout = torch.randn(B, K, C, generator=gen)
    check_gather(*(t.to(DEVICE) for t in (x, ids, pos, dout)), tag="views")
    x16 = x.half().to(DEVICE)
    out = gather_tokens_triton(x16, ids.to(DEVICE), pos.to(DEVICE))
    assert out.dtype == torch.float32
    assert torch.equal(out, gather_tokens_ref(x16, ids.to(DEVICE), pos.to(DEVICE)))


def test_gather_only_pos_grad_and_no_grad():
    B, N, C, K = 2, 16, 8, 5
    gen = torch.Generator().manual_seed(4)
    x, pos = torch.randn(B, N, C, generator=gen), torch.randn(N, C, generator=gen, requires_grad=True)
    ids = _keep_ids(B, N, K, gen)
    (dpos,) = torch.autograd.grad(gather_tokens_triton(x, ids, pos).sum(), [pos])
    (want,) = torch.autograd.grad(gather_tokens_ref(x, ids, pos).sum(), [pos])
    torch.testing.assert_close(dpos, want, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert torch.equal(gather_tokens_triton(x, ids, pos), gather_tokens_ref(x, ids, pos))


def test_gather_rejects_repeated_indices_and_bad_dtypes():
    x = torch.randn(2, 6, 4, requires_grad=True)
    ids = torch.tensor([[0, 3, 3], [1, 2, 5]])
    with pytest.raises(ValueError, match="repeats an index"):
        gather_tokens_triton(x, ids)
    with torch.no_grad():  # no backward: repeats are fine for the forward
        assert torch.equal(gather_tokens_triton(x, ids), gather_tokens_ref(x, ids))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        gather_tokens_triton(x.detach().double(), ids)


def test_gather_ops_dispatch():
    gen = torch.Generator().manual_seed(2)
    x, pos = torch.randn(2, 10, 8, generator=gen), torch.randn(10, 8, generator=gen)
    ids = _keep_ids(2, 10, 4, gen)
    got = ops.gather_tokens(x, ids, pos, kernels="triton")
    assert torch.equal(got, ops.gather_tokens(x, ids, pos, kernels="torch"))


def test_gather_opcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 10, 8, generator=gen, requires_grad=True)
    pos = torch.randn(10, 8, generator=gen, requires_grad=True)
    ids = _keep_ids(2, 10, 4, gen)
    torch.library.opcheck(torch.ops.fusmae_fast.gather_tokens_fwd.default, (x, ids, pos))
    torch.library.opcheck(torch.ops.fusmae_fast.gather_tokens_fwd.default, (x, ids, None))


def test_gather_torch_compile_fullgraph():
    import torch._dynamo

    torch._dynamo.reset()

    def f(x, ids, pos):
        return (gather_tokens_triton(x * 2.0, ids, pos) ** 2).sum()

    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 12, 16, generator=gen, requires_grad=True)
    pos = torch.randn(12, 16, generator=gen, requires_grad=True)
    ids = _keep_ids(2, 12, 5, gen)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, ids, pos)
    grads = torch.autograd.grad(out, [x, pos])
    x64, pos64 = (t.detach().double().requires_grad_(True) for t in (x, pos))
    ref = (gather_tokens_ref(x64 * 2.0, ids, pos64) ** 2).sum()
    ref_grads = torch.autograd.grad(ref, [x64, pos64])
    assert abs(out.item() - ref.item()) <= 1e-4 * abs(ref.item())
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="Triton's interpreter has no bf16; runs on CUDA only")
def test_gather_bf16_cuda():
    gen = torch.Generator().manual_seed(12)
    B, N, C, K = 4, 225, 768, 56
    x, pos = torch.randn(B, N, C, generator=gen).bfloat16(), torch.randn(N, C, generator=gen).bfloat16()
    ids = _keep_ids(B, N, K, gen)
    dout = torch.randn(B, K, C, generator=gen).bfloat16()
    check_gather(*(t.to(DEVICE) for t in (x, ids, pos, dout)), tag="bf16")


# ----------------------------------------------------------------------------------------------------
# masked_patch_embed
# ----------------------------------------------------------------------------------------------------

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
    tri = _mpe_run(tg.masked_patch_embed_triton, img, weight, bias, pos, ids, patch, dout)
    ref = _mpe_run(
        tg.masked_patch_embed_ref, *(t.double() for t in (img, weight, bias, pos)), ids, patch, dout.double()
    )
    low = (
        _mpe_run(tg.masked_patch_embed_ref, img, weight, bias, pos, ids, patch, dout)
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
def test_mpe_parity_ragged(case):
    """One launch, three samples: mask ratio 0.0 (all N kept), 0.75 (N/4 kept) and 1.0 (nothing kept),
    kept patches at random slots of K = N, -1 elsewhere (the ragged per-modality keep form)."""
    size, C_in, dtype = case
    H, P = IMAGE_SIZES[size]
    N = (H // P) ** 2
    gen = torch.Generator().manual_seed(case_seed(case))
    img, weight, bias, pos = (t.to(dtype) for t in _mpe_inputs(3, C_in, H, P, EMBED, gen))
    ids = _ragged_ids(N, [N, N // 4, 0], gen)
    dout = torch.randn(3, N, EMBED, generator=gen).to(dtype)
    check_mpe(*(t.to(DEVICE) for t in (img, weight, bias, pos, ids)), P, dout.to(DEVICE), tag=str(case))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mpe_uniform_keep(dtype):
    """MAE's plain form: K = N/4 kept per sample, no empty slot (mask ratio 0.75)."""
    H, P, C_in, B = 120, 8, 2, 2
    N = (H // P) ** 2
    gen = torch.Generator().manual_seed(21)
    img, weight, bias, pos = (t.to(dtype) for t in _mpe_inputs(B, C_in, H, P, EMBED, gen))
    ids = torch.stack([torch.randperm(N, generator=gen)[: N // 4] for _ in range(B)])
    dout = torch.randn(B, N // 4, EMBED, generator=gen).to(dtype)
    check_mpe(
        *(t.to(DEVICE) for t in (img, weight, bias, pos, ids)), P, dout.to(DEVICE), tag=f"uniform {dtype}"
    )


def test_mpe_nothing_kept():
    """K = 0 (mask ratio 1.0 for the whole batch): empty output, all gradients exact zeros."""
    gen = torch.Generator().manual_seed(22)
    img, weight, bias, pos = (
        t.float().to(DEVICE).requires_grad_(True) for t in _mpe_inputs(2, 2, 8, 4, 8, gen)
    )
    ids = torch.empty(2, 0, dtype=torch.int64, device=DEVICE)
    out = tg.masked_patch_embed_triton(img, weight, bias, pos, ids, 4)
    assert out.shape == (2, 0, 8)
    grads = torch.autograd.grad(out.sum(), [img, weight, bias, pos])
    for g, t in zip(grads, (img, weight, bias, pos), strict=True):
        assert g.shape == t.shape and not g.any()


@pytest.mark.parametrize(
    "conf", [(16, 16, 32, 4, 1), (32, 16, 16, 4, 1)], ids=["BM16-BN16-BR32", "BM32-BN16-BR16"]
)
def test_mpe_block_configs_and_dw_splits(monkeypatch, conf):
    """Small blocks (partial row / column / reduction blocks, straddling empty-slot blocks) and several
    d weight row splits give the same results."""
    for kernel in ("fwd", "dimg", "dw"):
        monkeypatch.setitem(tg.MPE_INTERPRETER_CONFIG, kernel, conf)
    monkeypatch.setattr(tg, "MIN_ROWS_PER_SPLIT", 16)
    monkeypatch.setattr(tg, "SPLIT_ROW_ALIGN", 32)
    H, P, C_in, C = 24, 4, 3, 20
    N = (H // P) ** 2
    assert tg.dw_splits(3 * N, C, C_in * P * P)[0] > 1
    gen = torch.Generator().manual_seed(23)
    img, weight, bias, pos = (t.float() for t in _mpe_inputs(3, C_in, H, P, C, gen))
    ids = _ragged_ids(N, [N, 7, 0], gen)
    dout = torch.randn(3, N, C, generator=gen)
    check_mpe(*(t.to(DEVICE) for t in (img, weight, bias, pos, ids)), P, dout.to(DEVICE), tag=f"conf {conf}")


def test_mpe_strided_inputs():
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
    check_mpe(*(t.to(DEVICE) for t in (img, weight, bias, pos, ids)), P, dout.to(DEVICE), tag="strided")


def test_mpe_fusmae_two_modalities():
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
            img, weight, bias, pos = (t.float().to(DEVICE) for t in _mpe_inputs(B, c_in, H, P, C, g))
            ids = masking.ids_keep_modality(modality).to(DEVICE)
            parts.append(ops.masked_patch_embed(img, weight, bias, pos, ids, P, kernels=kernels))
        total[kernels] = parts[0] + parts[1]
    del gen
    torch.testing.assert_close(total["triton"], total["torch"], atol=1e-5, rtol=1e-5)


def test_mpe_rejects_mixed_dtypes_and_repeats():
    gen = torch.Generator().manual_seed(26)
    img, weight, bias, pos = (t.float() for t in _mpe_inputs(2, 2, 8, 4, 8, gen))
    ids = torch.tensor([[0, 1], [2, -1]])
    with pytest.raises(TypeError, match="share a dtype"):
        tg.masked_patch_embed_triton(img, weight.half(), bias, pos, ids, 4)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        tg.masked_patch_embed_triton(img.double(), weight.double(), bias.double(), pos.double(), ids, 4)
    repeated = torch.tensor([[0, 0], [2, -1]])
    with pytest.raises(ValueError, match="repeats an index"):
        tg.masked_patch_embed_triton(img, weight, bias.requires_grad_(True), pos, repeated, 4)
    # two empty slots (-1) in a row are not a repeat
    out = tg.masked_patch_embed_triton(img, weight, bias, pos, torch.tensor([[-1, -1], [3, -1]]), 4)
    assert not out[0].any()


def test_mpe_ops_dispatch():
    gen = torch.Generator().manual_seed(27)
    img, weight, bias, pos = (t.float() for t in _mpe_inputs(2, 12, 16, 4, 8, gen))
    ids = torch.tensor([[0, 5, 15], [3, -1, 9]])
    got = ops.masked_patch_embed(img, weight, bias, pos, ids, 4, kernels="triton")
    want = ops.masked_patch_embed(img, weight, bias, pos, ids, 4, kernels="torch")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mpe_opcheck():
    gen = torch.Generator().manual_seed(28)
    leaves = [t.float().requires_grad_(True) for t in _mpe_inputs(2, 2, 8, 4, 8, gen)]
    ids = torch.tensor([[0, 3], [2, -1]])
    torch.library.opcheck(torch.ops.fusmae_fast.masked_patch_embed_fwd.default, (*leaves, ids, 4, False))


def test_mpe_torch_compile_fullgraph():
    import torch._dynamo

    torch._dynamo.reset()

    def f(img, weight, bias, pos, ids):
        return (tg.masked_patch_embed_triton(img * 2.0, weight, bias, pos, ids, 4) ** 2).sum()

    gen = torch.Generator().manual_seed(29)
    leaves = [t.float().requires_grad_(True) for t in _mpe_inputs(2, 2, 8, 4, 8, gen)]
    ids = torch.tensor([[0, 3], [2, -1]])
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(*leaves, ids)
    grads = torch.autograd.grad(out, leaves)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = (tg.masked_patch_embed_ref(ref_leaves[0] * 2.0, *ref_leaves[1:], ids, 4) ** 2).sum()
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    assert abs(out.item() - ref.item()) <= 1e-4 * abs(ref.item())
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="Triton's interpreter has no bf16; runs on CUDA only")
def test_mpe_bf16_cuda():
    gen = torch.Generator().manual_seed(30)
    H, P = 120, 8
    N = (H // P) ** 2
    for C_in in (2, 12):
        img, weight, bias, pos = (t.bfloat16() for t in _mpe_inputs(4, C_in, H, P, 768, gen))
        ids = _ragged_ids(N, [N, N // 4, 0, 112], gen)
        dout = torch.randn(4, N, 768, generator=gen).bfloat16()
        check_mpe(
            *(t.to(DEVICE) for t in (img, weight, bias, pos, ids)), P, dout.to(DEVICE), tag=f"bf16 {C_in}"
        )


def test_autotune_prune_matches_keep_and_compile_specs():
    """The autotuners' prune hooks apply keep(); every config they can keep for the presets' shapes
    (C 768, C_in 2 / 12, P 8 / 16; copy widths 32..768) is in compile_specs."""
    names = {(s["kernel"], s["config"]) for s in tg.compile_specs()}
    for kernel, tensor_arg in (("fwd", "IMG"), ("dimg", "DOUT"), ("dw", "DOUT")):
        configs = tg._gemm_triton_configs(kernel)
        for dtype, tname in ((torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")):
            esize = torch.empty((), dtype=dtype).element_size()
            for c_in in (2, 12):
                for patch in tg.COMPILE_PATCHES:
                    R = c_in * patch * patch
                    args = {"C": 768, "C_IN": c_in, tensor_arg: torch.empty(1, dtype=dtype)}
                    pruned = tg._gemm_prune(kernel, tensor_arg)(configs, args, PATCH=patch)
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
                    assert got == tg.kept_gemm_configs(kernel, 768, R, esize) and got
                    for m, n, r, w, s in got:
                        assert (
                            f"mpe_{kernel}",
                            f"BM{m}-BN{n}-BR{r}-w{w}-s{s}-P{patch}-ieee-{tname}",
                        ) in names
    for kernel, rows in (("gather_fwd", "BLOCK_M"), ("gather_bwd", "BLOCK_N")):
        configs = tg.copy_triton_configs(rows)
        for C in (2, 12, 32, 100, 256, 768):
            pruned = tg.copy_prune(rows)(configs, {"C": C})
            got = [(c.kwargs[rows], c.kwargs["BLOCK_C"], c.num_warps) for c in pruned]
            assert got == tg.kept_copy_configs(C) and got
            for r, c, w in got:
                prefix = f"B{'M' if rows == 'BLOCK_M' else 'N'}{r}-BC{c}-w{w}-"
                assert any(k == kernel and cfg.startswith(prefix) for k, cfg in names), (kernel, prefix)
