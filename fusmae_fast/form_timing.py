"""Picking, by timing, the fastest of several equal forms of a computation, once per shape.

The torch path has forms that compute the same thing up to rounding (the explicit attention and SDPA;
Eq. 2 as one paired call or as two calls). Which is fastest depends on the CPU as much as on the
shapes: SDPA's flash kernel packs its bf16 products for AMX where a CPU has it, and is several times
slower than the explicit form where it has not. Fixed rules (``fusmae_fast.attention``) pick well for
the case the rules were measured on; ``fastest()`` measures the case at hand instead.

A caller runs its fixed rules unless ``may_time()`` allows timing; then it calls ``fastest(key,
forms, by_rules)``, ``key`` being the call site and ``operands_key()``. The first call for a key times
every form: one warm-up call each, then rounds alternating their order, ``ROUNDS`` of them, more (up to
``MAX_ROUNDS``) while a form has run less than ``MIN_TIMED_S`` in all; each form's best round counts.
It records the winner for the key and returns the winner's result; later calls with that key run the
recorded form only. A call is timed only when:

- no gradient will be taken: a backward cannot be timed without running it, and the rules' grad-mode
  picks (the hand-written backward) were the faster on both CPUs they were measured on;
- not inside ``torch.compile`` (one data-independent graph), on CPU tensors (CUDA uses SDPA);
- timing is on: ``set_form_timing(False)`` or ``FUSMAE_FAST_FORM_TIMING=0`` turns it off, and so does
  deterministic mode (``fusmae_fast.ops.set_deterministic``): the forms round differently, so a pick by
  timing may differ between processes, while the rule depends on the shapes only;
- fewer than ``MAX_KEYS`` keys are recorded (shapes that change every call get the rule).

``picks()`` returns what was recorded (the benchmarks print it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Mapping

import torch

from fusmae_fast.kernels.triton_runtime import deterministic_enabled

__all__ = [
    "MAX_KEYS",
    "MAX_ROUNDS",
    "MIN_TIMED_S",
    "ROUNDS",
    "fastest",
    "form_timing_enabled",
    "may_time",
    "operands_key",
    "picks",
    "set_form_timing",
]

ROUNDS = 5
"""Fewest timed rounds per form on a key's first call (after one warm-up call each)."""
MAX_ROUNDS = 10
"""Most timed rounds: rounds go on past ``ROUNDS`` until every form has run ``MIN_TIMED_S`` in all."""
MIN_TIMED_S = 0.05
"""Seconds of timed calls per form that short forms repeat up to (short calls are the noisiest)."""
MAX_KEYS = 256
"""Most keys recorded; a call with a new key past that runs the rule untimed."""

_ENABLED = [os.environ.get("FUSMAE_FAST_FORM_TIMING", "1") != "0"]
_PICKS: dict[Hashable, str] = {}


def set_form_timing(enabled: bool) -> None:
    """Turn timing on or off (off: every call runs the rule); what was recorded is forgotten."""
    _ENABLED[0] = bool(enabled)
    _PICKS.clear()


def form_timing_enabled() -> bool:
    """True unless ``set_form_timing(False)``, ``FUSMAE_FAST_FORM_TIMING=0`` or deterministic mode."""
    return _ENABLED[0] and not deterministic_enabled()


def picks() -> dict[Hashable, str]:
    """The form recorded for each key timed so far (a copy)."""
    return dict(_PICKS)


def operands_key(*tensors: torch.Tensor | None) -> tuple:
    """The part of a key the operands give: dtype, shape and strides of each (None for an absent one),
    and the autocast dtype when autocast is on."""
    parts: list[object] = [
        None if t is None else (t.dtype, tuple(t.shape), t.stride(), t.device.type) for t in tensors
    ]
    if tensors and tensors[0] is not None and torch.is_autocast_enabled(tensors[0].device.type):
        parts.append(torch.get_autocast_dtype(tensors[0].device.type))
    return tuple(parts)


def may_time(*tensors: torch.Tensor) -> bool:
    """Whether a call on these operands may be timed (module docstring): CPU tensors, no gradient
    will be taken, not compiling, timing on."""
    if torch.compiler.is_compiling() or not form_timing_enabled():
        return False
    if any(t.device.type != "cpu" for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _time_forms(forms: Mapping[str, Callable[[], torch.Tensor]]) -> tuple[str, torch.Tensor]:
    names = list(forms)
    results = {name: forms[name]() for name in names}  # warm-up; the winner's result is returned
    best = dict.fromkeys(names, float("inf"))
    total = dict.fromkeys(names, 0.0)
    rnd = 0
    while rnd < ROUNDS or (rnd < MAX_ROUNDS and min(total.values()) < MIN_TIMED_S):
        for name in names if rnd % 2 == 0 else reversed(names):
            start = time.perf_counter()
            forms[name]()
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed)
            total[name] += elapsed
        rnd += 1
    winner = min(names, key=best.__getitem__)
    return winner, results[winner]


def fastest(
    key: Hashable, forms: Mapping[str, Callable[[], torch.Tensor]], by_rules: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The result of the fastest of ``forms`` for ``key``, a call the caller's ``may_time()`` allowed
    (module docstring); ``by_rules()``, the result by the caller's fixed rules, once ``MAX_KEYS`` keys
    are recorded."""
    name = _PICKS.get(key)
    if name is not None:
        return forms[name]()
    if len(_PICKS) >= MAX_KEYS:
        return by_rules()
    name, out = _time_forms(forms)
    _PICKS[key] = name
    return out
