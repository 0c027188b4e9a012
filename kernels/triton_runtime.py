"""The Triton plumbing the kernel modules share, written once.

dtypes
    ``TL_DTYPE_NAME`` maps each float dtype the kernels take to Triton's type name (the names compile
    specs use, in the order they list them); ``FLOAT_DTYPES`` is that list of dtypes.
Interpreter
    ``interpreting()``: kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, the CPU tests).
    There a launch runs one fixed config per kernel (the interpreter's cost is per operation, so
    autotuning would only waste time); on a GPU the autotuner picks among the kept configs.
Configs
    A config is a tuple of meta-parameters (block sizes), ``num_warps`` and, where the kernel family
    tunes it, ``num_stages``; ``ConfigFields`` names the positions. ``ConfigTable`` holds an autotune
    set as (config, predicate) rows per kernel and element-size group and derives from it ``keep()``,
    the configs handed to ``triton.autotune`` and the autotuner's early-prune hook, so that what the
    autotuner may try, what the tests check and what ``compile_check`` compiles are one list.
    ``autotuned()`` wraps a kernel; ``launch()`` runs it: with a config forced by ``forced_config()``
    (the every-config tests), else the interpreter's config under the interpreter, else, in
    deterministic mode (``set_deterministic()`` or ``FUSMAE_FAST_DETERMINISTIC=1``), the first config
    keep() lets through (pinned: it depends on the shapes and dtype only), else the autotuner's pick.
    Every launch runs under ``on_device_of()`` (the CUDA device of its tensors is made current).
    The copy kernels of token_gather and token_scatter share one autotune set (``COPY_CONFIGS``).
Determinism
    Every kernel writes each output element from one program and sums in a fixed order (no atomics),
    so a launch with a given config is bitwise reproducible. Which config runs is the autotuner's
    choice by timing, which may differ between processes and DDP ranks, and the attention and patch
    embedding sums follow the block sizes: without deterministic mode results are bitwise equal
    within one process only. In deterministic mode the config is pinned, so results are bitwise
    equal across processes and ranks for the same shapes, dtypes, GPU model and Triton version.
Value checks
    Checks that read tensor values (index ranges, split ranges, distinct indices) are fused per call
    into one flag (``raise_if_any``): on CPU tensors, and on CUDA with debug checks on
    (``set_debug_checks()`` or ``FUSMAE_FAST_DEBUG_CHECKS=1``), one host read and a ValueError naming
    the argument; on CUDA otherwise ``torch._assert_async`` (no host sync, CUDA-graph capturable; a
    failure is a device-side assertion at the next synchronisation). Skipped where torch.compile
    traces the call (one data-independent graph), except the distinct-index checks, which the
    backward ops of token_gather, token_scatter and masked_patch_embed then run (a repeat would make
    their plain stores race).
Host helpers
    input checks (float dtypes, distinct indices per row, whether a gradient is wanted), the
    ``tl.dot`` precision, power-of-two blocks and autotune-key buckets, contiguity of the last dim,
    and empty stand-ins for unneeded gradients of a custom op.

Only torch and triton are imported (no kernel lives here).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton

# ----------------------------------------------------------------------------------------------------
# dtypes and the interpreter
# ----------------------------------------------------------------------------------------------------

TL_DTYPE_NAME: dict[torch.dtype, str] = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
"""Triton's type name of each float dtype the kernels take, in the order compile specs list them."""
FLOAT_DTYPES: tuple[torch.dtype, ...] = tuple(TL_DTYPE_NAME)
"""The float dtypes of the Triton paths (fp32, fp16, bf16)."""


TRITON_VERSION: tuple[int, ...] = tuple(int(x) for x in triton.__version__.split(".")[:2])
"""(major, minor) of the Triton in use: a config that spills under one Triton version is pruned there
(its keep() predicate says so)."""


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ----------------------------------------------------------------------------------------------------
# Configs: tuples named by ConfigFields, autotune sets as (config, predicate) tables
# ----------------------------------------------------------------------------------------------------

Conf = tuple[int, ...]
"""A config: meta-parameter values, num_warps and (where tuned) num_stages, in ConfigFields order."""

_LAUNCH_OPTIONS = ("num_warps", "num_stages")


@dataclass(frozen=True)
class ConfigFields:
    """What the positions of a kernel family's config tuples mean."""

    names: tuple[str, ...]
    """Name per position: meta-parameters (e.g. ``BLOCK_M``), then ``num_warps`` and optionally
    ``num_stages``."""
    num_stages: int = 1
    """num_stages of every config when ``names`` has no ``num_stages`` position."""

    def blocks(self, conf: Conf) -> dict[str, int]:
        """The meta-parameters of ``conf`` (what a grid function reads)."""
        return {n: v for n, v in zip(self.names, conf, strict=True) if n not in _LAUNCH_OPTIONS}

    def launch_options(self, conf: Conf) -> dict[str, int]:
        """``conf`` as launch keywords: its meta-parameters, num_warps and num_stages."""
        options = dict(zip(self.names, conf, strict=True))
        options.setdefault("num_stages", self.num_stages)
        return options

    def triton_config(self, conf: Conf) -> triton.Config:
        options = self.launch_options(conf)
        return triton.Config(
            self.blocks(conf), num_warps=options["num_warps"], num_stages=options["num_stages"]
        )

    def conf_of(self, config: triton.Config) -> Conf:
        """The tuple of a ``triton.Config`` (the inverse of ``triton_config``)."""
        values = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
        return tuple(values[n] for n in self.names)


def early_prune(fields: ConfigFields, keep: Callable[[Conf, Mapping[str, Any]], bool]):
    """The autotuner's ``early_config_prune`` hook for a keep() rule: the configs for which
    ``keep(conf, args)`` holds, or the first config when none does. ``args`` holds the launch's
    arguments by name (the positional ones and the keyword meta-parameters)."""

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        kept = [c for c in configs if keep(fields.conf_of(c), args)]
        return kept or configs[:1]

    return prune


Predicate = Callable[..., bool]
"""When a config is kept, as a function of the launch's shapes (e.g. head dim, or (C, R))."""


def element_size_group(esize: int) -> int:
    """The element-size group of a table row: 4 for fp32, 2 for fp16 / bf16."""
    return 4 if esize >= 4 else 2


class ConfigTable:
    """An autotune set and its keep() rule: per (kernel, element-size group) rows of (config,
    predicate); the autotuner may try a config for a launch when a row of the launch's group holds
    that config with a predicate true for the launch's shapes."""

    def __init__(
        self, fields: ConfigFields, rows: Mapping[tuple[str, int], Sequence[tuple[Conf, Predicate]]]
    ) -> None:
        self.fields = fields
        self.rows = dict(rows)

    def configs(self, kernel: str) -> tuple[Conf, ...]:
        """Every config of ``kernel``'s set (the union over groups and shapes, in listed order)."""
        return tuple(dict.fromkeys(c for (k, _), rows in self.rows.items() if k == kernel for c, _ in rows))

    def keep(self, kernel: str, conf: Conf, esize: int, *shape: int) -> bool:
        """keep(): may the autotuner try ``conf`` for ``kernel`` at this element size and shapes?"""
        group = element_size_group(esize)
        return any(c == conf and pred(*shape) for c, pred in self.rows[(kernel, group)])

    def kept(self, kernel: str, esize: int, *shape: int) -> list[Conf]:
        """The configs keep() lets through, in listed order."""
        return [c for c in self.configs(kernel) if self.keep(kernel, c, esize, *shape)]

    def triton_configs(self, kernel: str) -> list[triton.Config]:
        """``kernel``'s whole set as ``triton.Config`` objects (what ``triton.autotune`` is given)."""
        return [self.fields.triton_config(c) for c in self.configs(kernel)]

    def prune(self, kernel: str, tensor_arg: str, shape: Callable[[Mapping[str, Any]], tuple[int, ...]]):
        """The early-prune hook applying keep(): the element size is that of argument ``tensor_arg``,
        the shapes are ``shape(args)`` of the launch's arguments by name."""

        def keep(conf: Conf, args: Mapping[str, Any]) -> bool:
            return self.keep(kernel, conf, args[tensor_arg].element_size(), *shape(args))

        return early_prune(self.fields, keep)


def autotuned(fn, configs: list[triton.Config], key: list[str], prune):
    """``fn`` under ``triton.autotune`` over ``configs``, keyed on ``key``, pruned early by ``prune``."""
    return triton.autotune(configs, key=key, prune_configs_by={"early_config_prune": prune})(fn)


_FORCED: dict[object, Conf] = {}
_DETERMINISTIC = [os.environ.get("FUSMAE_FAST_DETERMINISTIC", "0") == "1"]


def set_deterministic(enabled: bool) -> None:
    """Deterministic mode: every autotuned launch runs the first config keep() lets through for its
    shapes and dtype instead of the autotuner's timed pick (see the module docstring for what holds)."""
    _DETERMINISTIC[0] = bool(enabled)


def deterministic_enabled() -> bool:
    """True in deterministic mode (``set_deterministic(True)`` or ``FUSMAE_FAST_DETERMINISTIC=1``)."""
    return _DETERMINISTIC[0]


@contextlib.contextmanager
def forced_config(tuned, conf: Conf) -> Iterator[None]:
    """Within the block, every launch of the autotuned kernel ``tuned`` runs ``conf`` explicitly (on a
    GPU and under the interpreter alike): how the tests launch each kept config once."""
    key = tuned.fn
    previous = _FORCED.get(key)
    _FORCED[key] = conf
    try:
        yield
    finally:
        if previous is None:
            del _FORCED[key]
        else:
            _FORCED[key] = previous


def on_device_of(*tensors: Any) -> contextlib.AbstractContextManager:
    """``torch.cuda.device`` of the first CUDA tensor among ``tensors`` (launches and allocations then
    go to that device, whichever device is current), or a no-op without one."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == "cuda":
            return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def pinned_conf(tuned, args: tuple, meta: dict, fields: ConfigFields) -> Conf:
    """The config deterministic mode runs: the first of ``tuned``'s early-pruned (keep()) configs."""
    named = {**dict(zip(tuned.fn.arg_names, args, strict=False)), **meta}  # meta: the rest
    return fields.conf_of(tuned.early_config_prune(tuned.configs, named)[0])


def launch(
    tuned,
    grid: Callable[[dict], tuple[int, ...]],
    args: tuple,
    meta: dict,
    fields: ConfigFields,
    interpreter_conf: Conf,
) -> None:
    """Launch an autotuned kernel with positional ``args`` and keyword ``meta`` on the device of its
    tensors: a forced config (``forced_config``), else ``interpreter_conf`` under the interpreter,
    else the pinned config in deterministic mode, else the autotuner's pick. ``grid`` maps the
    meta-parameters (block sizes) to the launch grid."""
    conf = _FORCED.get(tuned.fn)
    if conf is None and interpreting():
        conf = interpreter_conf
    if conf is None and deterministic_enabled():
        conf = pinned_conf(tuned, args, meta, fields)
    with on_device_of(*args):
        if conf is None:
            tuned[grid](*args, **meta)
        else:
            tuned.fn[grid(fields.blocks(conf))](*args, **fields.launch_options(conf), **meta)


def launch_fixed(kernel, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    """Launch a kernel that has one config (not autotuned) on the device of its tensors."""
    with on_device_of(*args):
        kernel[grid](*args, **meta)


# ----------------------------------------------------------------------------------------------------
# The copy kernels' autotune set (token_gather, token_scatter)
# ----------------------------------------------------------------------------------------------------

CopyConf = tuple[int, int, int]
"""(row block, BLOCK_C columns, num_warps) of the memory-bound copy kernels (num_stages 1); the row
block is ``BLOCK_M`` (rows of the output) or ``BLOCK_N`` (positions of the input), per kernel."""

COPY_CONFIGS: tuple[CopyConf, ...] = ((32, 64, 4), (16, 128, 4), (64, 64, 8), (32, 128, 8), (16, 32, 2))
"""Autotune set of the gather and scatter kernels."""

COMPILE_WIDTHS: tuple[int, ...] = (32, 256, 768)
"""Token widths C whose kept copy configs are compiled: narrow (<= 32), the decoder (256) and the ViT-B
encoder (768) widths. The width only selects which configs keep() lets through (the kernels are
C-generic), so together these cover every config of the autotune set."""


def copy_fields(rows_name: str) -> ConfigFields:
    """The fields of a copy config whose row block is the meta-parameter ``rows_name``."""
    return ConfigFields((rows_name, "BLOCK_C", "num_warps"), num_stages=1)


def keep_copy(conf: CopyConf, C: int) -> bool:
    """keep(): column blocks no wider than C rounded up (>= 32); narrow configs only for narrow C."""
    rows, block_c, warps = conf
    width = max(32, triton.next_power_of_2(max(C, 1)))
    if block_c > width:
        return False
    return block_c >= 64 or width <= 32


def kept_copy_configs(C: int) -> list[CopyConf]:
    return [c for c in COPY_CONFIGS if keep_copy(c, C)]


def compiled_copy_configs() -> list[CopyConf]:
    """The copy configs compile_check compiles: those kept for any of ``COMPILE_WIDTHS``, sorted."""
    return sorted({c for width in COMPILE_WIDTHS for c in kept_copy_configs(width)})


def copy_triton_configs(rows_name: str) -> list[triton.Config]:
    fields = copy_fields(rows_name)
    return [fields.triton_config(c) for c in COPY_CONFIGS]


def copy_prune(rows_name: str):
    """The early-prune hook applying keep_copy() to the launch's width ``C``."""
    return early_prune(copy_fields(rows_name), lambda conf, args: keep_copy(conf, args["C"]))


def autotuned_copy(fn, rows_name: str, key: list[str]):
    """A copy kernel under ``triton.autotune`` over ``COPY_CONFIGS``, pruned by keep_copy()."""
    return autotuned(fn, copy_triton_configs(rows_name), key, copy_prune(rows_name))


# ----------------------------------------------------------------------------------------------------
# Host helpers: input checks, dot precision, block sizes, layouts
# ----------------------------------------------------------------------------------------------------


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16 for the Triton path, got {t.dtype}")


def value_checks_enabled() -> bool:
    """Host-side value checks run outside torch.compile (inside it they are skipped)."""
    return not torch.compiler.is_compiling()


_DEBUG_CHECKS = [os.environ.get("FUSMAE_FAST_DEBUG_CHECKS", "0") == "1"]


def set_debug_checks(enabled: bool) -> None:
    """Debug checks: value checks on CUDA tensors read their flag back (one sync per call) and raise a
    ValueError naming the argument, instead of an asynchronous device-side assertion."""
    _DEBUG_CHECKS[0] = bool(enabled)


def debug_checks_enabled() -> bool:
    """True with ``set_debug_checks(True)`` or ``FUSMAE_FAST_DEBUG_CHECKS=1``."""
    return _DEBUG_CHECKS[0]


Check = tuple[torch.Tensor, Callable[[], Exception]]
"""A value check: a 0-dim bool tensor, True when the input is bad, and the error to raise then."""


def raise_if_any(checks: Sequence[Check]) -> None:
    """Run value checks fused into one flag: on CPU tensors or with debug checks, one host read and the
    first failing check's error; on CUDA otherwise an asynchronous device-side assertion (no sync)."""
    if not checks:
        return
    flags = torch.stack([bad.reshape(()) for bad, _ in checks])
    if flags.device.type == "cuda" and not debug_checks_enabled():
        torch._assert_async(
            ~flags.any(), "fusmae_fast: invalid op input (FUSMAE_FAST_DEBUG_CHECKS=1 names the argument)"
        )
        return
    for (_, error), bad in zip(checks, flags.tolist(), strict=True):
        if bad:
            raise error()


def grad_wanted(*tensors: torch.Tensor | None) -> bool:
    """True when autograd is on and one of ``tensors`` requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def repeats_check(name: str, ids: torch.Tensor, below: int | None = None) -> list[Check]:
    """The check that no row of ``ids`` repeats a value (only values >= 0, and < ``below`` when given,
    count), for ``raise_if_any``; empty when there is nothing to check."""
    if ids.numel() == 0 or ids.shape[1] < 2:
        return []
    live = ids >= 0
    if below is not None:
        live &= ids < below
    sentinel = -1 - torch.arange(ids.shape[1], device=ids.device)  # distinct stand-ins for dead slots
    vals = torch.where(live, ids, sentinel[None, :]).sort(dim=1).values
    bad = (vals[:, 1:] == vals[:, :-1]).any()

    def error() -> Exception:
        return ValueError(
            f"{name} repeats an index within a row; the Triton backward needs distinct indices per row "
            "(MAE's ids_keep / ids_restore are permutations)"
        )

    return [(bad, error)]


def check_distinct(name: str, ids: torch.Tensor, below: int | None = None) -> None:
    """Raise if a row of ``ids`` repeats a value (``repeats_check`` run through ``raise_if_any``)."""
    raise_if_any(repeats_check(name, ids, below))


def check_distinct_or_defer(name: str, ids: torch.Tensor, grad: bool, below: int | None = None) -> bool:
    """The distinct-index check of an op whose backward stores without atomics: in eager mode run now
    where a gradient will be taken (``grad``), returning False; where torch.compile traces the call
    (value checks skipped) return True, the ``check_ids`` flag with which the op's backward runs
    ``check_distinct`` instead (a repeat would make its plain stores race)."""
    if not value_checks_enabled():
        return True
    if grad:
        check_distinct(name, ids, below)
    return False


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``input_precision`` of ``tl.dot``: "tf32" for fp32 inputs when allowed, else "ieee"."""
    return "tf32" if (dtype == torch.float32 and allow_tf32) else "ieee"


def pow2_block(n: int) -> int:
    """The power-of-two block (at least 16) that covers ``n`` elements."""
    return max(16, triton.next_power_of_2(n))


def autotune_bucket(n: int, cap: int) -> int:
    """A size as an autotune key: the next power of two >= max(n, 16), at most ``cap``."""
    return min(cap, triton.next_power_of_2(max(n, 16)))


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a contiguous copy when its last dim is strided (kernels assume unit column stride)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def or_empty(like: torch.Tensor, *grads: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Gradients for a custom op's outputs: unneeded ones (None) become distinct empty tensors
    (custom-op outputs may be neither None nor alias each other)."""
    return tuple(g if g is not None else like.new_empty((0,)) for g in grads)
