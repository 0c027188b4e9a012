"""Every kept config of every autotuned kernel, launched once explicitly, against the fp64 reference.

The autotuner runs one config per autotune key, picked by timing, so most of a kernel's configs never
run in a test. ``every_config_runs`` launches each config that keep() lets through, for each op whose
kernels are autotuned (cross_modal_attention, masked_patch_embed, gather_tokens, scatter_tokens),
with ``triton_runtime.forced_config`` (not through the autotuner; the op's other kernels run their
pinned config), forward and every gradient, and returns each result beside the float64 reference
and, for fp16 / bf16, the pure-torch reference run in the same low precision. It checks nothing
itself: the caller applies the tolerance rule (tests/parity's ``ErrorReport.check``; the gpu_check
bench uses the same rule). masked_mse and the reductions have one config per shape, which the parity
tests run.

Sizes: ``"interpreter"`` (small shapes for Triton's CPU interpreter, each config at the first shape
it is kept for) or ``"gpu"`` (head dims 32, 40, 64, 80, 128 at L = 113, 450, 1024; token widths 32,
256, 768; patch embeddings of 2 and 12 channels at 120 x 120 / P8 into 768 wide tokens), every kept
config at every shape.

Only torch and triton are imported (and the kernel modules).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from . import cross_modal_attention as xattn
from . import masked_patch_embed as mpe
from . import token_gather, token_scatter
from .triton_runtime import (
    COPY_CONFIGS,
    deterministic_enabled,
    forced_config,
    keep_copy,
    set_deterministic,
)

SIZES = ("interpreter", "gpu")


@dataclass
class ConfigRun:
    """One explicit launch of one config: the op's outputs beside their references."""

    op: str
    """The public op (``cross_modal_attention``, ``masked_patch_embed``, ...)."""
    kernel: str
    """The kernel whose config was forced (``xattn_fwd``, ``mpe_dw``, ``gather_bwd``, ...)."""
    config: tuple[int, ...]
    """The forced config (the kernel family's ConfigFields order)."""
    dtype: torch.dtype
    """Dtype of the op's float inputs."""
    shape: str
    """The launch's sizes, as text."""
    outputs: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None, float]]
    """(name, Triton result, float64 reference, torch result in ``dtype`` or None for fp32, factor of
    the low-precision rule: 2 for outputs, 3 for gradients)."""

    @property
    def tag(self) -> str:
        return f"{self.kernel} {self.config} {str(self.dtype)[6:]} {self.shape}"


def _run(fn: Callable, leaves: Sequence[torch.Tensor], rest: tuple, dout: torch.Tensor, order: Callable):
    """Output and the gradients of every leaf of ``fn(*order(leaves, rest))`` for upstream ``dout``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*order(leaves, rest))
    return [out.detach(), *torch.autograd.grad(out, leaves, dout)]


@dataclass
class _OpCase:
    op: str
    names: tuple[str, ...]
    triton_fn: Callable
    ref_fn: Callable
    order: Callable
    leaves: list[torch.Tensor]
    rest: tuple
    rest64: tuple
    dout: torch.Tensor
    shape: str

    def runs(self, kernel: str, tuned, configs: Sequence[tuple[int, ...]]) -> Iterator[ConfigRun]:
        dtype = self.leaves[0].dtype
        ref = _run(
            self.ref_fn, [t.double() for t in self.leaves], self.rest64, self.dout.double(), self.order
        )
        low = None
        if dtype != torch.float32:
            low = _run(self.ref_fn, self.leaves, self.rest, self.dout, self.order)
        for conf in configs:
            with forced_config(tuned, conf):
                got = _run(self.triton_fn, self.leaves, self.rest, self.dout, self.order)
            outputs = [
                (name, g, r, lo, 2.0 if i == 0 else 3.0)
                for i, (name, g, r, lo) in enumerate(
                    zip(self.names, got, ref, low if low is not None else [None] * len(got), strict=True)
                )
            ]
            yield ConfigRun(self.op, kernel, conf, dtype, self.shape, outputs)


def _randn(gen: torch.Generator, *shape: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).to(device)


# ----------------------------------------------------------------------------------------------------
# The ops
# ----------------------------------------------------------------------------------------------------

_XATTN_KERNELS = {"fwd": xattn._fwd_tuned, "dq": xattn._dq_tuned, "dkdv": xattn._dkdv_tuned}


def _xattn_case(B, L, H, D, dtype, device, gen) -> _OpCase:
    q, k, v, do = (_randn(gen, B, L, H, D, dtype=dtype, device=device) for _ in range(4))
    split = torch.tensor([(L // 3 + 1, 0, L)[b % 3] for b in range(B)], dtype=torch.int64, device=device)
    return _OpCase(
        "cross_modal_attention",
        ("o", "dq", "dk", "dv"),
        xattn.cross_modal_attention_triton,
        xattn.cross_modal_attention_ref,
        lambda leaves, rest: (*leaves, *rest),
        [q, k, v],
        (split,),
        (split,),
        do,
        f"B{B}-L{L}-H{H}-D{D}",
    )


_MPE_KERNELS = {"fwd": mpe._mpe_fwd_tuned, "dimg": mpe._mpe_dimg_tuned, "dw": mpe._mpe_dw_tuned}


def _mpe_case(B, C_in, H, P, C, dtype, device, gen) -> _OpCase:
    n = (H // P) ** 2
    img = _randn(gen, B, C_in, H, H, dtype=dtype, device=device)
    weight = _randn(gen, C, C_in, P, P, dtype=dtype, device=device) * (C_in * P * P) ** -0.5
    bias, pos = _randn(gen, C, dtype=dtype, device=device), _randn(gen, n, C, dtype=dtype, device=device)
    keeps = [n, max(1, n // 4), 0]
    ids = torch.full((B, n), -1, dtype=torch.int64)
    for b in range(B):
        kept = torch.randperm(n, generator=gen)[: keeps[b % 3]]
        slots = torch.randperm(n, generator=gen)[: len(kept)]
        ids[b, slots] = kept
    dout = _randn(gen, B, n, C, dtype=dtype, device=device)
    return _OpCase(
        "masked_patch_embed",
        ("out", "dimg", "dweight", "dbias", "dpos"),
        mpe.masked_patch_embed_triton,
        mpe.masked_patch_embed_ref,
        lambda leaves, rest: (*leaves, *rest),
        [img, weight.to(dtype), bias, pos],
        (ids.to(device), P),
        (ids.to(device), P),
        dout,
        f"B{B}-Cin{C_in}-{H}x{H}-P{P}-C{C}",
    )


def _gather_case(B, N, K, C, dtype, device, gen) -> _OpCase:
    x, pos = _randn(gen, B, N, C, dtype=dtype, device=device), _randn(gen, N, C, dtype=dtype, device=device)
    ids = torch.stack([torch.randperm(N, generator=gen)[:K] for _ in range(B)]).to(device)
    return _OpCase(
        "gather_tokens",
        ("out", "dx", "dpos"),
        token_gather.gather_tokens_triton,
        token_gather.gather_tokens_ref,
        lambda leaves, rest: (leaves[0], rest[0], leaves[1]),
        [x, pos],
        (ids,),
        (ids,),
        _randn(gen, B, K, C, dtype=dtype, device=device),
        f"B{B}-N{N}-K{K}-C{C}",
    )


def _scatter_case(B, N, K, C, dtype, device, gen) -> _OpCase:
    latent = _randn(gen, B, K, C, dtype=dtype, device=device)
    mask_token, pos = (
        _randn(gen, C, dtype=dtype, device=device),
        _randn(gen, N, C, dtype=dtype, device=device),
    )
    ids = torch.stack([torch.argsort(torch.randperm(N, generator=gen)) for _ in range(B)]).to(device)
    return _OpCase(
        "scatter_tokens",
        ("out", "dlatent", "dmask_token", "dpos"),
        token_scatter.scatter_tokens_triton,
        token_scatter.scatter_tokens_ref,
        lambda leaves, rest: (leaves[0], rest[0], leaves[1], leaves[2]),
        [latent, mask_token, pos],
        (ids,),
        (ids,),
        _randn(gen, B, N, C, dtype=dtype, device=device),
        f"B{B}-N{N}-K{K}-C{C}",
    )


# ----------------------------------------------------------------------------------------------------
# The plan: per op, its shapes and, per shape, the kernels and the configs launched there
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sweep:
    shapes: Callable[[str], list[tuple[int, ...]]]
    """The op's shapes for a size."""
    kernels: dict[str, object]
    """Kernel name -> its autotuned kernel."""
    kept: Callable[[str, tuple[int, ...], int], list[tuple[int, ...]]]
    """(kernel name, shape, element size) -> the configs keep() lets through there."""
    case: Callable[..., _OpCase]
    """(*shape, dtype, device, generator) -> the op's inputs at that shape."""


def _copy_kept(kernel: str, shape: tuple[int, ...], esize: int) -> list[tuple[int, ...]]:
    return [c for c in COPY_CONFIGS if keep_copy(c, shape[3])]


_COPY_SHAPES = {
    "gpu": [(8, 225, 56, C) for C in (32, 256, 768)],
    "interpreter": [(2, 40, 13, C) for C in (12, 100)],
}

_SWEEPS: dict[str, _Sweep] = {
    "cross_modal_attention": _Sweep(
        lambda size: (
            [(3, L, 2, D) for D in (32, 40, 64, 80, 128) for L in (113, 450, 1024)]
            if size == "gpu"
            else [(2, 70, 2, D) for D in (40, 32, 80)]
        ),
        {f"xattn_{k}": t for k, t in _XATTN_KERNELS.items()},
        lambda kernel, shape, esize: xattn.kept_configs(kernel[len("xattn_") :], shape[3], esize),
        _xattn_case,
    ),
    "masked_patch_embed": _Sweep(
        lambda size: (
            [(3, 2, 120, 8, 768), (3, 12, 120, 8, 768)]
            if size == "gpu"
            else [(3, 2, 16, 8, 128), (3, 1, 8, 4, 16)]
        ),
        {f"mpe_{k}": t for k, t in _MPE_KERNELS.items()},
        lambda kernel, shape, esize: mpe.kept_gemm_configs(
            kernel[len("mpe_") :], shape[4], shape[1] * shape[3] ** 2, esize
        ),
        _mpe_case,
    ),
    "gather_tokens": _Sweep(
        _COPY_SHAPES.__getitem__,
        {"gather_fwd": token_gather._gather_fwd_tuned, "gather_bwd": token_gather._gather_bwd_tuned},
        _copy_kept,
        _gather_case,
    ),
    "scatter_tokens": _Sweep(
        _COPY_SHAPES.__getitem__,
        {"scatter_fwd": token_scatter._scatter_fwd_tuned, "scatter_bwd": token_scatter._scatter_bwd_tuned},
        _copy_kept,
        _scatter_case,
    ),
}


def sweep_plan(
    op: str, size: str, esize: int, per_kernel: int | None = None
) -> list[tuple[tuple[int, ...], list[tuple[str, list]]]]:
    """Per shape of ``op``, the (kernel, configs) launched there: on "gpu" every kept config at every
    shape, on "interpreter" each config at the first shape it is kept for; with ``per_kernel``, only
    each kernel's first ``per_kernel`` launches (a sample, for a rehearsal of the sweep)."""
    sweep, done, plan = _SWEEPS[op], set(), []
    launched: dict[str, int] = {}
    for shape in sweep.shapes(size):
        steps = []
        for kernel in sweep.kernels:
            confs = [c for c in sweep.kept(kernel, shape, esize) if size == "gpu" or (kernel, c) not in done]
            if per_kernel is not None:
                confs = confs[: max(0, per_kernel - launched.get(kernel, 0))]
                launched[kernel] = launched.get(kernel, 0) + len(confs)
            done.update((kernel, c) for c in confs)
            if confs:
                steps.append((kernel, confs))
        if steps:
            plan.append((shape, steps))
    return plan


def _case_generator(seed: int, op: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Generator:
    """The generator of one shape's inputs: seeded from (seed, op, dtype, shape) alone, so a launch
    run on its own (``run_launch``, e.g. in a worker process) sees the inputs the whole sweep gives it."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}|{op}|{dtype}|{shape}".encode()))


def _op_runs(
    op: str, size: str, dtype: torch.dtype, device, seed: int, per_kernel: int | None
) -> Iterator[ConfigRun]:
    sweep = _SWEEPS[op]
    for shape, steps in sweep_plan(op, size, torch.empty((), dtype=dtype).element_size(), per_kernel):
        case = sweep.case(*shape, dtype, device, _case_generator(seed, op, dtype, shape))
        for kernel, confs in steps:
            yield from case.runs(kernel, sweep.kernels[kernel], confs)


def count_runs(
    size: str,
    dtypes: Sequence[torch.dtype],
    ops: Sequence[str] | None = None,
    per_kernel: int | None = None,
) -> int:
    """How many launches ``every_config_runs`` makes (each a forward and backward of the op with one
    forced config; on a cold Triton cache each compiles that kernel once per dtype and head dim /
    width / patch shape), without running anything."""
    return sum(
        len(confs)
        for op in ops or tuple(OPS)
        for dtype in dtypes
        for _, steps in sweep_plan(op, size, torch.empty((), dtype=dtype).element_size(), per_kernel)
        for _, confs in steps
    )


OPS: tuple[str, ...] = tuple(_SWEEPS)
"""The ops with autotuned kernels."""


@contextlib.contextmanager
def _pinned() -> Iterator[None]:
    """Deterministic mode within the block: the op's kernels other than the forced one run their
    pinned config."""
    was = deterministic_enabled()
    set_deterministic(True)
    try:
        yield
    finally:
        set_deterministic(was)


def every_config_runs(
    device: torch.device | str,
    *,
    size: str = "interpreter",
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float16),
    ops: Sequence[str] | None = None,
    seed: int = 0,
    per_kernel: int | None = None,
) -> Iterator[ConfigRun]:
    """Launch every kept config of every autotuned kernel of ``ops`` (default: all of ``OPS``) once,
    explicitly, at the shapes of ``size`` ("interpreter" or "gpu") for each of ``dtypes``, and yield
    each result beside its references (``ConfigRun``); ``per_kernel``: only each kernel's first that
    many launches per dtype. The op's other kernels run their pinned (deterministic-mode) config
    meanwhile. The caller checks the results (``ErrorReport.check``)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    with _pinned():
        for name in ops or tuple(OPS):
            for dtype in dtypes:
                yield from _op_runs(name, size, dtype, device, seed, per_kernel)


@dataclass(frozen=True)
class SweepLaunch:
    """One launch of ``every_config_runs``, named by plain values (picklable: a worker process can run
    it on its own with ``run_launch``)."""

    op: str
    dtype: str
    """The float inputs' dtype: fp32, fp16 or bf16."""
    shape: tuple[int, ...]
    kernel: str
    config: tuple[int, ...]


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""A launch's dtype name -> the torch dtype."""
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
"""The torch dtype -> its name in a launch."""


def sweep_launches(
    size: str, dtypes: Sequence[torch.dtype], ops: Sequence[str] | None = None, per_kernel: int | None = None
) -> list[SweepLaunch]:
    """Every launch ``every_config_runs`` makes with these arguments, in its order."""
    return [
        SweepLaunch(op, DTYPE_NAMES[dtype], shape, kernel, conf)
        for op in ops or tuple(OPS)
        for dtype in dtypes
        for shape, steps in sweep_plan(op, size, torch.empty((), dtype=dtype).element_size(), per_kernel)
        for kernel, confs in steps
        for conf in confs
    ]


def run_launch(device: torch.device | str, launch: SweepLaunch, *, seed: int = 0) -> ConfigRun:
    """The one launch ``launch`` of the sweep, with the inputs and references ``every_config_runs``
    gives it (the same seed), its other kernels pinned."""
    sweep, dtype = _SWEEPS[launch.op], DTYPES[launch.dtype]
    case = sweep.case(*launch.shape, dtype, device, _case_generator(seed, launch.op, dtype, launch.shape))
    with _pinned():
        return next(case.runs(launch.kernel, sweep.kernels[launch.kernel], [launch.config]))
