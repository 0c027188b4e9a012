"""Parity of the Triton token gather (gather_tokens) with the torch path and float64 references.

The forward and dx are bit-exact with the torch path in fp32 and fp16 (a copy, or one correctly
rounded add); d pos (a sum over the batch) is checked against float64 with fp32 tolerance (fp16: the
flash-attention rule). Cases: N from the issue's image sizes (8x8/P4 -> 4, 120x120/P8 -> 225,
64x64/P16 -> 16), widths C in {2, 12} plus one wider than a block, keep ratios {0.0 (K = N), 0.75,
1.0 (K = 0)}, with and without pos, fp32 and fp16, several batch splits of the d pos reduction,
non-contiguous inputs, the distinct-index check, the torch.library op (opcheck, torch.compile), and the
copy kernels' autotune prune hook against keep() and compile_specs.

The kernels run in Triton's interpreter on a CPU (tests/conftest.py). The max errors met are printed
at the end of the module.
"""

from __future__ import annotations

import pytest
import torch
from error_report import ErrorReport, max_abs_error  # tests/parity is on sys.path under pytest
from token_cases import GRID_N, TOKEN_CASE_IDS, TOKEN_CASES, case_seed

from fusmae_fast import ops
from fusmae_fast.kernels import reductions, token_gather, triton_runtime
from fusmae_fast.kernels.token_gather import gather_tokens_ref, gather_tokens_triton

CUDA = torch.cuda.is_available()
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
def test_gather_parity(case, device):
    grid, C, ratio, dtype, with_pos = case
    N = GRID_N[grid]
    B = 3
    K = int(N * (1.0 - ratio))
    gen = torch.Generator().manual_seed(case_seed(case))
    x = torch.randn(B, N, C, generator=gen).to(dtype)
    pos = torch.randn(N, C, generator=gen).to(dtype) if with_pos else None
    ids = _keep_ids(B, N, K, gen)
    dout = torch.randn(B, K, C, generator=gen).to(dtype)
    dev = [t.to(device) if t is not None else None for t in (x, ids, pos, dout)]
    check_gather(*dev, tag=str(case))


@pytest.mark.parametrize("min_per_split", [1, 2])
def test_gather_batch_splits(monkeypatch, min_per_split, device):
    """The d pos reduction gives the same result for several batch splits (uneven last split)."""
    monkeypatch.setattr(reductions, "MIN_BATCH_PER_SPLIT", min_per_split)
    B, N, C, K = 7, 50, 70, 20
    assert reductions.batch_splits(B, N, C) > 1
    gen = torch.Generator().manual_seed(5)
    x, pos = torch.randn(B, N, C, generator=gen), torch.randn(N, C, generator=gen)
    ids = _keep_ids(B, N, K, gen)
    dout = torch.randn(B, K, C, generator=gen)
    check_gather(*(t.to(device) for t in (x, ids, pos, dout)), tag=f"splits {min_per_split}")


def test_gather_non_contiguous_and_mixed_dtypes(device):
    """Strided x / pos / ids views; fp16 x with fp32 pos promotes to an fp32 output (torch's rule)."""
    B, N, C, K = 2, 30, 24, 9
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(B, C, N, generator=gen).transpose(1, 2)  # last dim not contiguous
    pos = torch.randn(2 * N, C, generator=gen)[::2]  # row stride 2C
    ids = _keep_ids(B, N, K, gen).t().contiguous().t()  # column-major ids
    dout = torch.randn(B, K, C, generator=gen)
    check_gather(*(t.to(device) for t in (x, ids, pos, dout)), tag="views")
    x16 = x.half().to(device)
    out = gather_tokens_triton(x16, ids.to(device), pos.to(device))
    assert out.dtype == torch.float32
    assert torch.equal(out, gather_tokens_ref(x16, ids.to(device), pos.to(device)))


def test_gather_only_pos_grad_and_no_grad(device):
    B, N, C, K = 2, 16, 8, 5
    gen = torch.Generator().manual_seed(4)
    x, pos = torch.randn(B, N, C, generator=gen).to(device), torch.randn(N, C, generator=gen).to(device)
    pos.requires_grad_(True)
    ids = _keep_ids(B, N, K, gen).to(device)
    (dpos,) = torch.autograd.grad(gather_tokens_triton(x, ids, pos).sum(), [pos])
    (want,) = torch.autograd.grad(gather_tokens_ref(x, ids, pos).sum(), [pos])
    torch.testing.assert_close(dpos, want, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert torch.equal(gather_tokens_triton(x, ids, pos), gather_tokens_ref(x, ids, pos))


def test_gather_rejects_repeated_indices_and_bad_dtypes(device, debug_checks):
    x = torch.randn(2, 6, 4, device=device, requires_grad=True)
    ids = torch.tensor([[0, 3, 3], [1, 2, 5]], device=device)
    with pytest.raises(ValueError, match="repeats an index"):
        gather_tokens_triton(x, ids)
    with torch.no_grad():  # no backward: repeats are fine for the forward
        assert torch.equal(gather_tokens_triton(x, ids), gather_tokens_ref(x, ids))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        gather_tokens_triton(x.detach().double(), ids)


def test_gather_ops_dispatch(device):
    gen = torch.Generator().manual_seed(2)
    x, pos = torch.randn(2, 10, 8, generator=gen).to(device), torch.randn(10, 8, generator=gen).to(device)
    ids = _keep_ids(2, 10, 4, gen).to(device)
    got = ops.gather_tokens(x, ids, pos, kernels="triton")
    assert torch.equal(got, ops.gather_tokens(x, ids, pos, kernels="torch"))


def test_gather_opcheck(device):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 10, 8, generator=gen).to(device).requires_grad_(True)
    pos = torch.randn(10, 8, generator=gen).to(device).requires_grad_(True)
    ids = _keep_ids(2, 10, 4, gen).to(device)
    torch.library.opcheck(torch.ops.fusmae_fast.gather_tokens_fwd.default, (x, ids, pos, False))
    torch.library.opcheck(torch.ops.fusmae_fast.gather_tokens_fwd.default, (x, ids, None, False))


def test_gather_torch_compile_fullgraph(device):
    import torch._dynamo

    torch._dynamo.reset()

    def f(x, ids, pos):
        return (gather_tokens_triton(x * 2.0, ids, pos) ** 2).sum()

    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 12, 16, generator=gen).to(device).requires_grad_(True)
    pos = torch.randn(12, 16, generator=gen).to(device).requires_grad_(True)
    ids = _keep_ids(2, 12, 5, gen).to(device)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, ids, pos)
    grads = torch.autograd.grad(out, [x, pos])
    x64, pos64 = (t.detach().double().requires_grad_(True) for t in (x, pos))
    ref = (gather_tokens_ref(x64 * 2.0, ids, pos64) ** 2).sum()
    ref_grads = torch.autograd.grad(ref, [x64, pos64])
    assert abs(out.item() - ref.item()) <= 1e-4 * abs(ref.item())
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


def test_gather_compiled_backward_rejects_repeats(device, debug_checks):
    """Under torch.compile the forward's check is skipped (one data-independent graph); the backward op
    checks instead: a repeated index would make its plain stores race (one of two gradients lost)."""
    import torch._dynamo

    torch._dynamo.reset()
    x = torch.randn(2, 6, 4, device=device, requires_grad=True)
    ids = torch.tensor([[0, 3, 3], [1, 2, 5]], device=device)
    out = torch.compile(
        lambda x, ids: gather_tokens_triton(x, ids).sum(), fullgraph=True, backend="aot_eager"
    )
    loss = out(x, ids)
    with pytest.raises(ValueError, match="ids_keep repeats an index"):
        loss.backward()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="Triton's interpreter has no bf16; runs on CUDA only")
def test_gather_bf16_cuda(device):
    gen = torch.Generator().manual_seed(12)
    B, N, C, K = 4, 225, 768, 56
    x, pos = torch.randn(B, N, C, generator=gen).bfloat16(), torch.randn(N, C, generator=gen).bfloat16()
    ids = _keep_ids(B, N, K, gen)
    dout = torch.randn(B, K, C, generator=gen).bfloat16()
    check_gather(*(t.to(device) for t in (x, ids, pos, dout)), tag="bf16")


def test_copy_autotune_prune_matches_keep_and_compile_specs():
    """The copy kernels' prune hook applies keep_copy(); every copy config it can keep for widths
    32..768 is in compile_specs (the copy part of the prune/keep/compile_specs check, with
    test_masked_patch_embed.py's test_autotune_prune_matches_keep_and_compile_specs)."""
    names = {(s["kernel"], s["config"]) for s in token_gather.compile_specs()}
    for kernel, rows in (("gather_fwd", "BLOCK_M"), ("gather_bwd", "BLOCK_N")):
        configs = triton_runtime.copy_triton_configs(rows)
        for C in (2, 12, 32, 100, 256, 768):
            pruned = triton_runtime.copy_prune(rows)(configs, {"C": C})
            got = [(c.kwargs[rows], c.kwargs["BLOCK_C"], c.num_warps) for c in pruned]
            assert got == triton_runtime.kept_copy_configs(C) and got
            for r, c, w in got:
                prefix = f"B{'M' if rows == 'BLOCK_M' else 'N'}{r}-BC{c}-w{w}-"
                assert any(k == kernel and cfg.startswith(prefix) for k, cfg in names), (kernel, prefix)
