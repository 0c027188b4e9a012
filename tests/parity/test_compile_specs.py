"""compile_specs() compile each kernel as Triton's JIT would for a real launch.

The launchers run at each module's compile layout with Triton's interpreter recording the launches
instead of running them; Triton's own argument specialisation (``native_specialize_impl``, what the
JIT's binder calls: unit ints become the constant 1, multiples of 16 and aligned pointers are marked
16-divisible) of the recorded arguments must equal the signature, constants and divisibility marks of
the compile spec for that kernel and config. So compile_check compiles the variants that run, not
others (before: unit strides marked 16-divisible, D = 40's 16-divisible row strides unmarked).
"""

from __future__ import annotations

import pytest
import torch
from triton.backends.compiler import BaseBackend
from triton.runtime import jit
from triton.runtime.interpreter import InterpretedFunction

from fusmae_fast.kernels import compile_spec, reductions, token_gather, token_scatter, triton_runtime
from fusmae_fast.kernels import cross_modal_attention as xattn
from fusmae_fast.kernels import masked_patch_embed as mpe

pytestmark = pytest.mark.skipif(not triton_runtime.interpreting(), reason="records interpreter launches")


@pytest.fixture
def recorded(monkeypatch):
    """Launches recorded, not run: (fn, positional args, keyword args)."""
    calls = []

    def record(self, *args, grid, warmup, **kwargs):
        calls.append((self, args, kwargs))

    monkeypatch.setattr(InterpretedFunction, "run", record)
    return calls


def _jit_view(fn, args, kwargs) -> tuple[dict, dict, set]:
    """(signature, constants, 16-divisible args) as Triton's JIT specialises this launch."""
    sig, consts, div = {}, {}, set()
    for name, value in zip(fn.arg_names, args, strict=False):
        kind, attr = jit.native_specialize_impl(BaseBackend, value, False, True, True)
        sig[name] = kind
        if kind == "constexpr":
            consts[name] = attr
        elif attr == "D":
            div.add(name)
    for name, value in kwargs.items():
        if name in fn.arg_names:
            sig[name], consts[name] = "constexpr", value
    return sig, consts, div


def _spec_view(spec) -> tuple[dict, dict, set]:
    return spec["signature"], spec["constexprs"], set(spec["divisible_by_16"])


def _check(calls, specs) -> int:
    """Every recorded launch equals (signature, constants, marks) the spec of its kernel and constants."""
    matched = 0
    for fn, args, kwargs in calls:
        sig, consts, div = _jit_view(fn, args, kwargs)
        blocks = {k: v for k, v in consts.items() if k in kwargs}
        ptrs = {k: t for k, t in sig.items() if t.startswith("*")}
        same = [
            s
            for s in specs
            if s["fn"] is fn
            and all(s["constexprs"].get(k) == v for k, v in blocks.items())
            and all(s["signature"][k] == t for k, t in ptrs.items())
        ]
        assert same, (fn, consts)
        spec_sig, spec_consts, spec_div = _spec_view(same[0])
        assert spec_sig == sig, (
            same[0]["kernel"],
            {k: (spec_sig[k], sig[k]) for k in sig if spec_sig[k] != sig[k]},
        )
        assert {k: v for k, v in spec_consts.items() if k not in kwargs} == {
            k: v for k, v in consts.items() if k not in kwargs
        }
        assert spec_div == div, (same[0]["kernel"], spec_div ^ div)
        matched += 1
    return matched


def test_jit_int_rule_matches_triton():
    for value in (0, 1, 2, 8, 16, 40, 320, 2**31 - 16, 2**31, 2**33 + 16):
        kind, attr = jit.native_specialize_impl(BaseBackend, value, False, True, True)
        ours = compile_spec.jit_int_spec(value)
        assert (kind, attr == "D") == ours or (kind == "constexpr" and ours[0] == "constexpr"), value


@pytest.mark.parametrize("head_dim", [40, 64, 72])
def test_attention_specs_match_the_jit(recorded, head_dim):
    B, L, H = xattn.COMPILE_LAYOUT
    qkv = torch.randn(B, L, 3, H, head_dim)
    q, k, v = qkv.unbind(2)
    split = torch.full((B,), L // 3, dtype=torch.int64)
    for dtype in (torch.float32, torch.float16):
        esize = torch.empty((), dtype=dtype).element_size()
        args = [t.to(dtype) for t in (q, k, v)]
        with pytest.MonkeyPatch.context() as mp:
            for name in xattn.INTERPRETER_CONFIG:  # a config the specs hold
                mp.setitem(xattn.INTERPRETER_CONFIG, name, xattn.kept_configs(name, head_dim, esize)[0])
            o, lse = xattn._forward(*args, split, False)
            xattn._backward(torch.empty_like(o), *args, o, lse, split, False)
    specs = [s for s in xattn.compile_specs() if f"-D{head_dim}-" in s["config"]]
    assert _check(recorded, specs) == 2 * 4


def _copy_conf(C: int) -> tuple[int, int, int]:
    return next(c for c in triton_runtime.compiled_copy_configs() if triton_runtime.keep_copy(c, C))


def test_token_specs_match_the_jit(recorded, monkeypatch):
    B, N, K, C = token_gather.COMPILE_SHAPE
    for name in token_gather.INTERPRETER_CONFIG:
        monkeypatch.setitem(token_gather.INTERPRETER_CONFIG, name, _copy_conf(C))
    gen = torch.Generator().manual_seed(0)
    x, pos = torch.randn(B, N, C, generator=gen), torch.randn(N, C, generator=gen)
    ids = torch.stack([torch.randperm(N, generator=gen)[:K] for _ in range(B)])
    out = token_gather._gather_forward(x, ids, pos)
    token_gather._gather_backward(out, ids, N, x.dtype, True, pos.dtype)
    gather_fns = {token_gather._gather_fwd_kernel, token_gather._gather_bwd_kernel}
    calls = [c for c in recorded if c[0] in gather_fns]
    assert _check(calls, token_gather.compile_specs()) == 2
    recorded.clear()
    B, N, K, C = token_scatter.COMPILE_SHAPE
    for name in token_scatter.INTERPRETER_CONFIG:
        monkeypatch.setitem(token_scatter.INTERPRETER_CONFIG, name, _copy_conf(C))
    latent, mask_token, pos = torch.randn(B, K, C), torch.randn(C), torch.randn(N, C)
    ids_restore = torch.stack([torch.argsort(torch.randperm(N, generator=gen)) for _ in range(B)])
    out = token_scatter._forward(latent, ids_restore, mask_token, pos)
    token_scatter._backward(out, ids_restore, K, latent.dtype, mask_token.dtype, pos.dtype)
    scatter_fns = {token_scatter._scatter_fwd_kernel, token_scatter._scatter_bwd_kernel}
    calls = [c for c in recorded if c[0] in scatter_fns]
    assert _check(calls, token_scatter.compile_specs()) == 2


def test_patch_embed_and_reduction_specs_match_the_jit(recorded, monkeypatch):
    B, C_in, size, K, C = mpe.COMPILE_SHAPE
    for P in mpe.COMPILE_PATCHES:
        for name in mpe.MPE_INTERPRETER_CONFIG:
            conf = mpe.kept_gemm_configs(name, C, C_in * P * P, 4)[0]
            monkeypatch.setitem(mpe.MPE_INTERPRETER_CONFIG, name, conf)
        n = (size // P) ** 2
        img, weight = torch.randn(B, C_in, size, size), torch.randn(C, C_in, P, P)
        bias, pos = torch.randn(C), torch.randn(n, C)
        ids = torch.stack([torch.randperm(n)[:K] for _ in range(B)])
        out = mpe._mpe_forward(img, weight, bias, pos, ids, P, False)
        mpe._mpe_backward(out, img, weight, ids, P, n, True, True, None, None, False)
    fns = {mpe._mpe_fwd_kernel, mpe._mpe_dimg_kernel, mpe._mpe_dw_kernel}
    assert _check([c for c in recorded if c[0] in fns], mpe.compile_specs()) == 3 * len(mpe.COMPILE_PATCHES)
    recorded.clear()
    S, N, C, K = reductions.COMPILE_SHAPE
    reductions.reduce_splits(torch.zeros(S, N, C), torch.float32, False)
    reductions.sum_rows(torch.zeros(S, N * C), torch.float32)
    reductions.inverse_map(torch.zeros(64, K, dtype=torch.int64), N)
    assert _check(recorded, reductions.compile_specs()) == 3
