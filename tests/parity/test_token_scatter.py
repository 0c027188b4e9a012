"""Parity of the Triton decoder-input scatter (scatter_tokens) with the torch path and float64.

The forward and d latent are bit-exact with the torch path in fp32 and fp16 (a copy, or one correctly
rounded add); d mask_token (a sum over masked positions) and d pos (a sum over the batch) are checked
against float64 with fp32 tolerance (fp16: the flash-attention rule, 3 x for gradients). Cases: N from
the issue's image sizes (8x8/P4 -> 4, 120x120/P8 -> 225, 64x64/P16 -> 16), widths C in {2, 12}, mask
ratios {0.0 (nothing masked), 0.75, 1.0 (K = 0: all mask tokens)}, with and without pos, fp32 and
fp16; Fus-MAE's per-modality ids_restore (latent rows of the other modality are never read and get
zero gradient; masked positions hold values >= K); several batch splits of the reductions; strided
and mixed-dtype inputs; the distinct-index check; the torch.library op (opcheck, torch.compile).
"""

from __future__ import annotations

import pytest
import torch
from error_report import ErrorReport, max_abs_error  # tests/parity is on sys.path under pytest
from token_cases import GRID_N, TOKEN_CASE_IDS, TOKEN_CASES, case_seed

from fusmae_fast import ops
from fusmae_fast.kernels import reductions
from fusmae_fast.kernels.token_scatter import scatter_tokens_ref, scatter_tokens_triton
from fusmae_fast.masking import random_masking

CUDA = torch.cuda.is_available()
REPORT = ErrorReport("token_scatter max |error| vs float64 reference:")
_err = max_abs_error
_record = REPORT.record
_print_errors = REPORT.fixture()


def _mae_restore(B: int, N: int, gen: torch.Generator) -> torch.Tensor:
    """MAE's ids_restore = argsort(ids_shuffle) of a random shuffle per sample."""
    return torch.stack([torch.argsort(torch.randperm(N, generator=gen)) for _ in range(B)])


def _run(fn, latent, ids_restore, mask_token, pos, dout):
    leaves = [
        t.detach().clone().requires_grad_(True) if t is not None else None for t in (latent, mask_token, pos)
    ]
    out = fn(leaves[0], ids_restore, leaves[1], leaves[2])
    live = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(out, live, dout, allow_unused=True, materialize_grads=True))
    return out.detach(), *[next(grads) if t is not None else None for t in leaves]


def check_scatter(latent, ids_restore, mask_token, pos, dout, tag: str) -> None:
    dtype = latent.dtype
    out, dlat, dmask, dpos = _run(scatter_tokens_triton, latent, ids_restore, mask_token, pos, dout)
    out_t, dlat_t, dmask_t, dpos_t = _run(scatter_tokens_ref, latent, ids_restore, mask_token, pos, dout)
    assert out.dtype == out_t.dtype and out.shape == out_t.shape
    assert torch.equal(out, out_t), f"{tag}: forward not bit-exact ({_err(out, out_t):.3e})"
    assert dlat.dtype == latent.dtype and torch.equal(dlat, dlat_t), f"{tag}: d latent not exact"
    _record(f"{str(dtype)[6:]} triton out/dlatent (exact)", max(_err(out, out_t), _err(dlat, dlat_t)))
    pos64 = pos.double() if pos is not None else None
    ref = _run(scatter_tokens_ref, latent.double(), ids_restore, mask_token.double(), pos64, dout.double())
    assert dmask.dtype == mask_token.dtype
    REPORT.check("dmask_token", dmask, ref[2], dmask_t, dtype, tag, factor=3.0)
    if pos is not None:
        assert dpos.dtype == pos.dtype
        REPORT.check("dpos", dpos, ref[3], dpos_t, dtype, tag, factor=3.0)


@pytest.mark.parametrize("case", TOKEN_CASES, ids=TOKEN_CASE_IDS)
def test_scatter_parity(case, device):
    grid, C, ratio, dtype, with_pos = case
    N = GRID_N[grid]
    B = 3
    K = int(N * (1.0 - ratio))
    gen = torch.Generator().manual_seed(case_seed(case))
    latent = torch.randn(B, K, C, generator=gen).to(dtype)
    mask_token = torch.randn(C, generator=gen).to(dtype)
    pos = torch.randn(N, C, generator=gen).to(dtype) if with_pos else None
    dout = torch.randn(B, N, C, generator=gen).to(dtype)
    ids = _mae_restore(B, N, gen)
    dev = [t.to(device) if t is not None else None for t in (latent, ids, mask_token, pos, dout)]
    check_scatter(*dev, tag=str(case))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_scatter_fusmae_per_modality_layout(dtype, device):
    """Independent masking: each modality's decoder scatters from the shared modality-sorted latent
    (K = kept tokens of both modalities) with its own ids_restore slice; ragged splits per sample."""
    N, C, B = 225, 12, 3
    masking = random_masking(B, N, 0.75, "independent", generator=torch.Generator().manual_seed(1))
    K = masking.num_kept
    gen = torch.Generator().manual_seed(2)
    latent = torch.randn(B, K, C, generator=gen).to(dtype)
    mask_token = torch.randn(C, generator=gen)  # fp32 parameter, as in the model
    pos = torch.randn(N, C, generator=gen).to(dtype)
    for ids in (masking.ids_restore_s1, masking.ids_restore_s2):
        dout = torch.randn(B, N, C, generator=gen).to(dtype)
        check_scatter(*(t.to(device) for t in (latent, ids, mask_token, pos, dout)), tag=f"fusmae {dtype}")


@pytest.mark.parametrize("min_per_split", [1, 2])
def test_scatter_batch_splits(monkeypatch, min_per_split, device):
    monkeypatch.setattr(reductions, "MIN_BATCH_PER_SPLIT", min_per_split)
    B, N, C, K = 7, 50, 70, 20
    gen = torch.Generator().manual_seed(3)
    ids = _mae_restore(B, N, gen)
    latent, mask_token = torch.randn(B, K, C, generator=gen), torch.randn(C, generator=gen)
    pos, dout = torch.randn(N, C, generator=gen), torch.randn(B, N, C, generator=gen)
    check_scatter(
        *(t.to(device) for t in (latent, ids, mask_token, pos, dout)), tag=f"splits {min_per_split}"
    )


def test_scatter_strided_and_mixed_dtypes(device):
    """Strided latent / pos / ids views; fp16 latent with fp32 mask token and pos -> fp32 output."""
    B, N, C, K = 2, 30, 24, 9
    gen = torch.Generator().manual_seed(4)
    latent = torch.randn(B, C, K, generator=gen).transpose(1, 2).half()
    ids = _mae_restore(B, N, gen).t().contiguous().t()
    mask_token = torch.randn(2 * C, generator=gen)[::2]
    pos = torch.randn(N, 2 * C, generator=gen)[:, :C]
    dout = torch.randn(B, N, C, generator=gen)
    check_scatter(*(t.to(device) for t in (latent, ids, mask_token, pos, dout)), tag="mixed")


def test_scatter_grad_subsets(device):
    """Only some inputs need a gradient: the others get None, the rest match the reference."""
    B, N, C, K = 2, 16, 8, 5
    gen = torch.Generator().manual_seed(6)
    ids = _mae_restore(B, N, gen).to(device)
    latent, pos = torch.randn(B, K, C, generator=gen).to(device), torch.randn(N, C, generator=gen).to(device)
    mask_token = torch.randn(C, generator=gen).to(device).requires_grad_(True)
    (got,) = torch.autograd.grad(scatter_tokens_triton(latent, ids, mask_token, pos).sum(), [mask_token])
    (want,) = torch.autograd.grad(scatter_tokens_ref(latent, ids, mask_token, pos).sum(), [mask_token])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    latent.requires_grad_(True)
    out = scatter_tokens_triton(latent, ids, mask_token.detach(), None)
    (got,) = torch.autograd.grad((out**2).sum(), [latent])
    (want,) = torch.autograd.grad((scatter_tokens_ref(latent, ids, mask_token.detach()) ** 2).sum(), [latent])
    assert torch.equal(got, want)


def test_scatter_rejects_repeated_rows_and_bad_dtypes(device, debug_checks):
    latent = torch.randn(2, 3, 4, device=device, requires_grad=True)
    ids = torch.tensor([[0, 1, 1, 3, 5], [2, 1, 0, 3, 3]], device=device)  # row 0 takes latent row 1 twice
    mask_token = torch.zeros(4, device=device)
    with pytest.raises(ValueError, match="repeats an index"):
        scatter_tokens_triton(latent, ids, mask_token)
    # repeated masked values (>= K) are fine
    ok = torch.tensor([[0, 1, 3, 3, 2], [2, 9, 0, 1, 3]], device=device)
    assert torch.equal(
        scatter_tokens_triton(latent, ok, mask_token), scatter_tokens_ref(latent, ok, mask_token)
    )
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        scatter_tokens_triton(latent, ok, mask_token.long())


def test_scatter_ops_dispatch(device):
    gen = torch.Generator().manual_seed(7)
    ids = _mae_restore(2, 10, gen).to(device)
    latent, mask_token, pos = (torch.randn(*s, generator=gen).to(device) for s in ((2, 3, 8), (8,), (10, 8)))
    got = ops.scatter_tokens(latent, ids, mask_token, pos, kernels="triton")
    assert torch.equal(got, ops.scatter_tokens(latent, ids, mask_token, pos, kernels="torch"))


def test_scatter_opcheck(device):
    gen = torch.Generator().manual_seed(8)
    ids = _mae_restore(2, 10, gen).to(device)
    latent, mask_token, pos = (
        torch.randn(*s, generator=gen).to(device).requires_grad_(True) for s in ((2, 3, 8), (8,), (10, 8))
    )
    op = torch.ops.fusmae_fast.scatter_tokens_fwd.default
    torch.library.opcheck(op, (latent, ids, mask_token, pos, False))
    torch.library.opcheck(op, (latent, ids, mask_token, None, False))


def test_scatter_torch_compile_fullgraph(device):
    import torch._dynamo

    torch._dynamo.reset()

    def f(latent, ids, mask_token, pos):
        return (scatter_tokens_triton(latent * 2.0, ids, mask_token, pos) ** 2).sum()

    gen = torch.Generator().manual_seed(9)
    ids = _mae_restore(2, 12, gen).to(device)
    shapes = ((2, 4, 16), (16,), (12, 16))
    leaves = [torch.randn(*s, generator=gen).to(device).requires_grad_(True) for s in shapes]
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(leaves[0], ids, *leaves[1:])
    grads = torch.autograd.grad(out, leaves)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = (scatter_tokens_ref(ref_leaves[0] * 2.0, ids, *ref_leaves[1:]) ** 2).sum()
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    assert abs(out.item() - ref.item()) <= 1e-4 * abs(ref.item())
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


def test_scatter_compiled_backward_rejects_repeats(device, debug_checks):
    """Under torch.compile the forward's check is skipped (one data-independent graph); the backward op
    checks instead: a latent row taken twice would make its plain stores race (one gradient lost)."""
    import torch._dynamo

    torch._dynamo.reset()
    latent = torch.randn(2, 3, 4, device=device, requires_grad=True)
    ids = torch.tensor([[0, 1, 1, 3, 5], [2, 1, 0, 3, 3]], device=device)
    mask_token = torch.zeros(4, device=device)

    def f(latent, ids):
        return (scatter_tokens_triton(latent, ids, mask_token) ** 2).sum()

    loss = torch.compile(f, fullgraph=True, backend="aot_eager")(latent, ids)
    with pytest.raises(ValueError, match="ids_restore repeats an index"):
        loss.backward()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="Triton's interpreter has no bf16; runs on CUDA only")
def test_scatter_bf16_cuda(device):
    gen = torch.Generator().manual_seed(10)
    B, N, C, K = 4, 225, 256, 56
    ids = _mae_restore(B, N, gen)
    latent, mask_token = torch.randn(B, K, C, generator=gen).bfloat16(), torch.randn(C, generator=gen)
    pos, dout = torch.randn(N, C, generator=gen).bfloat16(), torch.randn(B, N, C, generator=gen).bfloat16()
    check_scatter(*(t.to(device) for t in (latent, ids, mask_token, pos, dout)), tag="bf16")
