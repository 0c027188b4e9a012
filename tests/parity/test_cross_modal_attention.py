"""Parity of the Triton cross-modal attention (Eq. 2) with a float64 reference: output and dq, dk, dv.

On a machine without CUDA the kernels run in Triton's interpreter (tests/conftest.py), which is slow,
so the issue's full product (B {1,3} x L {1,7,64,113,225} x H {1,3} x D {16,40,64} x 6 split kinds x
2 dtypes = 720 cases) is replaced by a covering design of 30 launches (``CASES``):

- every (L, D) pair is run in both fp32 and fp16 (5 x 3 x 2 = 30 cases);
- the six split kinds {0, 1, L//2, L-1, L, random} are per *sample*, so one B=3 launch carries three of
  them: for each (L, dtype) one D gets splits [0, 1, L//2], another [L-1, L, random] (both B=3) and
  the third is B=1 with a random split; the D that gets each role rotates between fp32 and fp16, so
  every (L, D) sees B=1 and B=3 and every (L, split kind, dtype) occurs;
- H alternates 1 and 3 so that each L and each D sees both;
- the interpreter launches small blocks (INTERPRETER_CONFIG: 32-row query blocks, 16-key steps, and
  16/32 in the backward), so L in {64, 113, 225} gives many key blocks, partial last blocks, query
  blocks straddling the split and key ranges starting off the block grid; ``test_block_configs``
  reruns one ragged case with other block shapes, including the GPU-sized 64 x 64.

Tolerances: fp32 max |triton - fp64| <= 1e-5 + 1e-5 |ref| (the interpreter's dots are exact; on a
GPU the fp32 dots use input_precision="ieee"). fp16: the flash-attention rule, error of the kernel vs
fp64 <= 2 x error of torch's fp16 path vs fp64 + 1e-4 for the output, 3 x (+ 1e-4) for gradients.
bf16 is tested on the torch path here; the Triton bf16 case runs on CUDA only (the interpreter has no
bf16). Also: non-contiguous inputs (views of a packed qkv), rows without keys (exact zeros, no NaN),
a hypothesis fuzz over shapes and splits, the torch.library op (opcheck, torch.compile fullgraph)
and the autotune set's keep() filter. The max errors met are printed at the end of the module.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from error_report import ErrorReport, max_abs_error  # tests/parity is on sys.path under pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusmae_fast import ops
from fusmae_fast.kernels import config_sweep
from fusmae_fast.kernels import cross_modal_attention as xmod
from fusmae_fast.kernels.cross_modal_attention import cross_modal_attention_ref, cross_modal_attention_triton
from fusmae_fast.kernels.triton_runtime import TL_DTYPE_NAME

CUDA = torch.cuda.is_available()
LENGTHS = (1, 7, 64, 113, 225)
HEAD_DIMS = (16, 40, 64)
REPORT = ErrorReport("cross_modal_attention max |error| vs float64 reference:", width=28)
_err = max_abs_error
_record = REPORT.record
_print_errors = REPORT.fixture()


def _splits(kinds: list[str], L: int, gen: torch.Generator) -> list[int]:
    out = []
    for kind in kinds:
        if kind == "rand":
            out.append(int(torch.randint(0, L + 1, (1,), generator=gen)))
        else:
            out.append({"0": 0, "1": min(1, L), "half": L // 2, "L-1": max(L - 1, 0), "L": L}[kind])
    return out


def _build_cases() -> list[tuple]:
    cases = []
    roles = (["0", "1", "half"], ["L-1", "L", "rand"], ["rand"])
    for dt_i, dtype in enumerate((torch.float32, torch.float16)):
        for l_i, L in enumerate(LENGTHS):
            for d_i, D in enumerate(HEAD_DIMS):
                kinds = roles[(d_i + dt_i) % 3]
                H = 3 if (l_i + d_i + dt_i) % 2 else 1
                cases.append((dtype, len(kinds), L, H, D, tuple(kinds)))
    return cases


CASES = _build_cases()


def _ids(case):
    dtype, B, L, H, D, kinds = case
    return f"{str(dtype)[6:]}-B{B}-L{L}-H{H}-D{D}-{'_'.join(kinds)}"


def _inputs(B, L, H, D, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, L, H, D, generator=gen, dtype=torch.float64) for _ in range(3))
    do = torch.randn(B, L, H, D, generator=gen, dtype=torch.float64)
    return [t.to(dtype) for t in (q, k, v, do)], gen


def _run(fn, q, k, v, do, split):
    """Output and (dq, dk, dv) of fn at the given inputs, for upstream gradient do."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    o = fn(q, k, v, split)
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    return [o.detach(), dq, dk, dv]


def check_parity(q, k, v, do, split, dtype, tag=""):
    """Assert the Triton op matches the fp64 reference under the dtype's tolerance rule."""
    names = ("o", "dq", "dk", "dv")
    ref = _run(cross_modal_attention_ref, *(t.double() for t in (q, k, v, do)), split)
    tri = _run(cross_modal_attention_triton, q, k, v, do, split)
    for name, t in zip(names, tri, strict=True):
        assert t.dtype == dtype and t.shape == q.shape, name
        assert torch.isfinite(t).all(), f"{name} has non-finite values"
    low = _run(cross_modal_attention_ref, q, k, v, do, split) if dtype != torch.float32 else ref
    for i, (name, t, r, lo) in enumerate(zip(names, tri, ref, low, strict=True)):
        REPORT.check(name, t, r, lo, dtype, tag, factor=2.0 if i == 0 else 3.0)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_parity(case, device):
    dtype, B, L, H, D, kinds = case
    (q, k, v, do), gen = _inputs(B, L, H, D, dtype, seed=zlib.crc32(_ids(case).encode()))
    split = torch.tensor(_splits(list(kinds), L, gen), dtype=torch.int64)
    q, k, v, do, split = (t.to(device) for t in (q, k, v, do, split))
    check_parity(q, k, v, do, split, dtype, tag=_ids(case))


@pytest.mark.parametrize("config", [(16, 16, 4, 1), (64, 64, 4, 1), (16, 64, 4, 1)])
def test_block_configs(monkeypatch, config, device):
    """The result does not depend on the block shape (straddling blocks, off-grid key starts)."""
    monkeypatch.setitem(xmod.INTERPRETER_CONFIG, "fwd", config)
    monkeypatch.setitem(xmod.INTERPRETER_CONFIG, "dq", config)
    monkeypatch.setitem(xmod.INTERPRETER_CONFIG, "dkdv", config[1::-1] + config[2:])
    (q, k, v, do), _ = _inputs(3, 113, 2, 40, torch.float32, seed=7)
    split = torch.tensor([17, 64, 100], dtype=torch.int64)
    check_parity(*(t.to(device) for t in (q, k, v, do, split)), torch.float32, tag=f"config {config}")


def test_non_contiguous_views(device):
    """q, k, v as strided views of one packed (B, L, 3, H, D) projection; dO non-contiguous too."""
    B, L, H, D = 2, 50, 2, 32
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(B, L, 3, H, D, generator=gen).to(device)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    do = torch.randn(B, H, L, D, generator=gen).to(device).transpose(1, 2)
    split = torch.tensor([20, 31], dtype=torch.int64, device=device)
    check_parity(q, k, v, do, split, torch.float32, tag="views")


def test_rows_without_keys_are_exact_zeros(device):
    """split 0 or L: no key of the other modality, so o = 0 and all gradients 0, never NaN."""
    B, L, H, D = 2, 40, 2, 16
    (q, k, v, do), _ = _inputs(B, L, H, D, torch.float32, seed=5)
    split = torch.tensor([0, L], dtype=torch.int64)
    o, dq, dk, dv = _run(
        cross_modal_attention_triton, *(t.to(device) for t in (q, k, v, do)), split.to(device)
    )
    for t in (o, dq, dk, dv):
        assert torch.equal(t, torch.zeros_like(t))


def test_ops_dispatch(device):
    """fusmae_fast.ops routes kernels='triton' to this module; same result as kernels='torch'."""
    (q, k, v, _), _ = _inputs(2, 21, 1, 16, torch.float32, seed=11)
    split = torch.tensor([5, 21], dtype=torch.int64)
    q, k, v, split = (t.to(device) for t in (q, k, v, split))
    got = ops.cross_modal_attention(q, k, v, split, kernels="triton")
    want = ops.cross_modal_attention(q, k, v, split, kernels="torch")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3),
    L=st.integers(1, 80),
    H=st.integers(1, 2),
    D=st.sampled_from([16, 24, 40, 56]),
    data=st.data(),
)
def test_fuzz_shapes_and_splits(B, L, H, D, data, device):
    splits = data.draw(st.lists(st.integers(0, L), min_size=B, max_size=B), label="split")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    (q, k, v, do), _ = _inputs(B, L, H, D, torch.float32, seed=seed)
    split = torch.tensor(splits, dtype=torch.int64)
    check_parity(*(t.to(device) for t in (q, k, v, do, split)), torch.float32, tag=f"fuzz {splits}")


def test_bf16_torch_path():
    """bf16 on the torch path: finite, and within bf16 accuracy of the fp64 reference."""
    (q, k, v, do), gen = _inputs(2, 64, 2, 32, torch.bfloat16, seed=13)
    split = torch.tensor([0, 23], dtype=torch.int64)
    ref = _run(cross_modal_attention_ref, *(t.double() for t in (q, k, v, do)), split)
    low = _run(cross_modal_attention_ref, q, k, v, do, split)
    for name, lo, r in zip(("o", "dq", "dk", "dv"), low, ref, strict=True):
        err = _err(lo, r)
        _record(f"bfloat16 torch {name}", err)
        scale = r.abs().max().item()
        assert lo.dtype == torch.bfloat16 and torch.isfinite(lo).all()
        assert err <= 3e-2 * max(scale, 1.0), f"{name}: {err:.3e} vs scale {scale:.3e}"


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="Triton's interpreter has no bf16; runs on CUDA only")
def test_bf16_triton_cuda(device):
    for L, D, splits in ((113, 64, [0, 57, 113]), (225, 40, [1, 200, 112])):
        (q, k, v, do), _ = _inputs(3, L, 2, D, torch.bfloat16, seed=L)
        split = torch.tensor(splits, dtype=torch.int64)
        check_parity(*(t.to(device) for t in (q, k, v, do, split)), torch.bfloat16, tag=f"bf16 L{L}")


def test_custom_op_opcheck(device):
    """torch.library registration: schema, fake (meta) kernel, autograd registration."""
    (q, k, v, _), _ = _inputs(2, 9, 1, 16, torch.float32, seed=17)
    split = torch.tensor([4, 9], dtype=torch.int64)
    q, k, v, split = (t.to(device).requires_grad_(t.is_floating_point()) for t in (q, k, v, split))
    torch.library.opcheck(torch.ops.fusmae_fast.cross_modal_attention_fwd.default, (q, k, v, split, False))


def test_torch_compile_fullgraph(device):
    """torch.compile traces a function using the op with no graph break (dynamo + AOT autograd with
    fake tensors; backend aot_eager so the test needs no C++ toolchain), forward and backward."""
    import torch._dynamo

    torch._dynamo.reset()

    def f(q, k, v, split):
        return (cross_modal_attention_triton(q * 2.0, k, v, split) + q).sum()

    (q, k, v, _), _ = _inputs(2, 12, 1, 16, torch.float32, seed=19)
    split = torch.tensor([5, 0], dtype=torch.int64)
    q, k, v, split = (t.to(device) for t in (q, k, v, split))
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(*leaves, split)
    grads = torch.autograd.grad(out, leaves)
    ref_leaves = [t.double().requires_grad_(True) for t in (q, k, v)]
    ref = (cross_modal_attention_ref(ref_leaves[0] * 2.0, *ref_leaves[1:], split) + ref_leaves[0]).sum()
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    assert abs(out.item() - ref.item()) < 1e-4
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


def test_autotune_set_and_keep_filter():
    """Every supported head dim keeps at least one config per kernel and dtype; the autotuner's
    prune hook applies keep(); compile_specs lists every kept config of the compiled head dims."""
    spec_names = {(s["kernel"], s["config"]) for s in xmod.compile_specs()}
    for kernel in ("fwd", "dq", "dkdv"):
        configs = xmod._triton_configs(kernel)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            esize = torch.empty((), dtype=dtype).element_size()
            for D in range(16, 129, 8):
                kept = xmod.kept_configs(kernel, D, esize)
                assert kept, (kernel, dtype, D)
                pruned = xmod._prune(kernel)(configs, {"Q": torch.empty(1, dtype=dtype)}, HEAD_DIM=D)
                got = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in pruned]
                assert got == kept
                if D in xmod.COMPILE_HEAD_DIMS:
                    tname = TL_DTYPE_NAME[dtype]
                    for bm, bn, w, s in kept:
                        assert (f"xattn_{kernel}", f"BM{bm}-BN{bn}-D{D}-w{w}-s{s}-{tname}") in spec_names


@pytest.mark.parametrize("version", [(3, 6, 0), (3, 9, 0)])
def test_autotune_set_under_both_tested_tritons(monkeypatch, version):
    """The table's Triton-dependent rows (configs ptxas spills on sm_86 under Triton 3.6 at some head
    dims) still leave every head dim at least one config per kernel and element size, on both tested
    Tritons; under 3.6 the spilling configs are gone at exactly those head dims."""
    monkeypatch.setattr(xmod, "TRITON_VERSION", version)
    for kernel in ("fwd", "dq", "dkdv"):
        for esize in (2, 4):
            for D in range(16, 129, 8):
                assert xmod.kept_configs(kernel, D, esize), (version, kernel, esize, D)
    old = version < (3, 9)
    assert ((16, 32, 4, 2) in xmod.kept_configs("dq", 40, 4)) != old
    assert ((64, 64, 4, 2) in xmod.kept_configs("fwd", 128, 2)) != old
    assert (64, 64, 4, 2) in xmod.kept_configs("fwd", 64, 2)  # spills only past head dim 64
    assert (16, 32, 8, 2) in xmod.kept_configs("dq", 40, 4)  # the one fp32 dq config at D = 40 under 3.6
    assert (32, 32, 8, 2) not in xmod.kept_configs("dkdv", 56, 2)  # spills at D 40 / 56 on both


@pytest.mark.parametrize("version", [(3, 6, 0), (3, 9, 0)])
def test_every_kept_config_is_kept_at_a_swept_head_dim(monkeypatch, version):
    """A config kept at some head dim is kept at one of the head dims the every-config sweep runs in
    the interpreter (32, 40, 80; the GPU sweep runs a superset), on both tested Tritons: otherwise no
    test would ever launch it."""
    monkeypatch.setattr(xmod, "TRITON_VERSION", version)
    swept = {shape[3] for shape in config_sweep._SWEEPS["cross_modal_attention"].shapes("interpreter")}
    for (name, group), rows in xmod._TABLE.rows.items():
        for conf, keep in rows:
            if any(keep(d) for d in range(16, 129, 8)):
                assert any(keep(d) for d in swept), (version, name, group, conf)
