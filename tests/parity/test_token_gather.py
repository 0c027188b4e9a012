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

import zlib

import pytest
import torch

from fusmae_fast import ops
from fusmae_fast.kernels import token_gather as tg
from fusmae_fast.kernels.token_gather import gather_tokens_ref, gather_tokens_triton

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
FP32_ATOL = 1e-5
FP32_RTOL = 1e-5
LOW_ATOL = 1e-4
MAX_ERR: dict[str, float] = {}
GRID_N = {"8x8-P4": 4, "120x120-P8": 225, "64x64-P16": 16}


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double().cpu() - b.double().cpu()).abs().max().item() if a.numel() else 0.0


def _record(key: str, err: float) -> None:
    MAX_ERR[key] = max(MAX_ERR.get(key, 0.0), err)


@pytest.fixture(scope="module", autouse=True)
def _print_errors(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not MAX_ERR:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("token_gather max |error| vs float64 reference:")
        for key in sorted(MAX_ERR):
            reporter.write_line(f"  {key:<34s} {MAX_ERR[key]:.3e}")


def _seed(tag: str) -> int:
    return zlib.crc32(tag.encode())


def _keep_ids(B: int, N: int, K: int, gen: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randperm(N, generator=gen)[:K] for _ in range(B)]).to(torch.int64)


def assert_close_rule(name: str, got, ref64, low, dtype, tag: str, grad: bool) -> None:
    """fp32: |got - ref64| <= atol + rtol |ref64| elementwise; fp16/bf16: flash-attention rule."""
    dname = str(dtype)[6:]
    err = _err(got, ref64)
    _record(f"{dname} triton {name}", err)
    if dtype == torch.float32:
        bound = FP32_ATOL + FP32_RTOL * ref64.double().abs().cpu()
        bad = (got.double().cpu() - ref64.double().cpu()).abs() > bound
        assert not bad.any(), f"{tag} {name}: max err {err:.3e}"
        return
    err_low = _err(low, ref64)
    _record(f"{dname} torch {name}", err_low)
    factor = 3.0 if grad else 2.0
    assert err <= factor * err_low + LOW_ATOL, (
        f"{tag} {name}: {err:.3e} > {factor} x {err_low:.3e} + {LOW_ATOL}"
    )


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
        assert_close_rule("dpos", dpos, ref[2], dpos_t, dtype, tag, grad=True)


GATHER_CASES = [
    (grid, C, ratio, dtype, with_pos)
    for grid in GRID_N
    for C, ratio, with_pos in ((2, 0.0, True), (12, 0.75, True), (12, 1.0, True), (2, 0.75, False))
    for dtype in (torch.float32, torch.float16)
]


@pytest.mark.parametrize(
    "case", GATHER_CASES, ids=[f"{g}-C{c}-r{r}-{str(d)[6:]}-pos{int(p)}" for g, c, r, d, p in GATHER_CASES]
)
def test_gather_parity(case):
    grid, C, ratio, dtype, with_pos = case
    N = GRID_N[grid]
    B = 3
    K = int(N * (1.0 - ratio))
    gen = torch.Generator().manual_seed(_seed(str(case)))
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
