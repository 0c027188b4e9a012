"""Picking, by timing, the fastest of several equal forms of a computation, once per shape.

The torch path has forms that compute the same thing up to rounding (the explicit attention and SDPA;
Eq. 2 as one paired call or as two calls). Which is fastest depends on the CPU as much as on the
shapes: SDPA's flash kernel packs its bf16 products for AMX where a CPU has it, and is several times
slower than the explicit form where it has not; in fp32 the explicit form's backward beats the flash
one at some shapes on one CPU and not on another. Fixed rules (``fusmae_fast.attention``) pick well for
the case the rules were measured on; ``fastest()`` measures the case at hand instead.

A caller runs its fixed rules unless ``may_time()`` allows timing; then it calls ``fastest(key,
forms, operands, by_rules)``, ``key`` being the call site and ``operands_key()``, each form a function of
the operands. The first call for a key times every form: one warm-up call each, then rounds
alternating their order, ``ROUNDS`` of them, more (up to ``MAX_ROUNDS``) while a form has run less
than ``MIN_TIMED_S`` in all or the two fastest are within ``CLOSE`` of each other; each form's median
round counts (a near tie is where a few noisy rounds pick the slower form; and a form's best round
can come from a state that does not last: on a shared CPU one Eq. 2 form's rounds alternated between
fast and twice as slow with the order of the rounds, so a pick by the best round can adopt a form
that is slower in the calls that follow). It records the winner for the key; later calls
with that key run the recorded form only. What is timed is what the call will cost:

- where no gradient will be taken, the forward; the winner's timed result is returned;
- where one will be (grad mode on and an operand requires one), the forward and its backward, on
  detached copies of the operands (the caller's graph is not touched; a gradient of ones, no random
  numbers drawn; saved tensors kept plainly even under saved-tensor hooks); then the winner runs on
  the operands themselves. Gradient and gradient-free calls of one shape are separate keys.

A call is timed only when:

- not inside ``torch.compile`` (one data-independent graph), on CPU tensors (CUDA uses SDPA);
- timing is on: ``set_form_timing(False)`` or ``FUSMAE_FAST_FORM_TIMING=0`` turns it off (and
  ``timing_off()`` within a block), and so does
  deterministic mode (``fusmae_fast.ops.set_deterministic``): the forms round differently, so a pick by
  timing may differ between processes, while the rule depends on the shapes only;
- fewer than ``MAX_KEYS`` keys are recorded (shapes that change every call get the rule).

A pretraining checkpoint keeps the picks (``export_picks``) and a resume adopts them
(``restore_picks``): the resumed run computes with the forms of the run it continues, rounding
included, instead of timing them afresh.

Callers add their own limits (the attention times a gradient call only while its scores are small
enough that timing the backward is cheap). ``picks()`` returns what was recorded (the benchmarks
print it).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch

from fusmae_fast.kernels.triton_runtime import deterministic_enabled

__all__ = [
    "CLOSE",
    "MAX_KEYS",
    "MAX_ROUNDS",
    "MIN_TIMED_S",
    "ROUNDS",
    "export_picks",
    "fastest",
    "form_timing_enabled",
    "grad_will_be_taken",
    "may_time",
    "operands_key",
    "picks",
    "restore_picks",
    "set_form_timing",
    "timing_off",
]

ROUNDS = 5
"""Fewest timed rounds per form on a key's first call (after one warm-up call each)."""
MAX_ROUNDS = 10
"""Most timed rounds: rounds go on past ``ROUNDS`` until every form has run ``MIN_TIMED_S`` in all and
the two fastest medians are not within ``CLOSE``."""
MIN_TIMED_S = 0.05
"""Seconds of timed calls per form that short forms repeat up to (short calls are the noisiest)."""
CLOSE = 1.10
"""Runner-up's median / winner's median below which rounds go on past ``ROUNDS`` (up to ``MAX_ROUNDS``)."""
MAX_KEYS = 256
"""Most keys recorded; a call with a new key past that runs the rule untimed."""

_ENABLED = [os.environ.get("FUSMAE_FAST_FORM_TIMING", "1") != "0"]
_PICKS: dict[Hashable, str] = {}
_RESTORED: dict[str, str] = {}  # repr(key) -> form, from restore_picks


def set_form_timing(enabled: bool) -> None:
    """Turn timing on or off (off: every call runs the rule); what was recorded is forgotten."""
    _ENABLED[0] = bool(enabled)
    _PICKS.clear()
    _RESTORED.clear()


@contextlib.contextmanager
def timing_off():
    """Within the block every call runs its rule (timing off); what was recorded is kept for after it.
    For A/B comparisons of the rules against the picks in one process (``bench/step_ab.py``)."""
    before = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = before


def form_timing_enabled() -> bool:
    """True unless ``set_form_timing(False)``, ``FUSMAE_FAST_FORM_TIMING=0`` or deterministic mode."""
    return _ENABLED[0] and not deterministic_enabled()


def picks() -> dict[Hashable, str]:
    """The form recorded for each key timed so far (a copy)."""
    return dict(_PICKS)


def grad_will_be_taken(*operands: object) -> bool:
    """Whether autograd will record a call on these operands: grad mode on and a tensor among them
    requires a gradient (other operands, None or numbers, are ignored)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in operands)


def export_picks() -> list[list[str]]:
    """The picks as ``[repr(key), form]`` pairs (plain strings: what a checkpoint keeps)."""
    return [[repr(key), name] for key, name in _PICKS.items()]


def restore_picks(pairs: list[list[str]]) -> None:
    """Adopt ``export_picks()``'s pairs: a call whose key is among them runs the recorded form without
    timing (where the call has a form of that name; else it is timed as usual), also where this
    process had picked another form for that key."""
    restored = {str(key): str(name) for key, name in pairs}
    for key in [k for k in _PICKS if repr(k) in restored]:
        del _PICKS[key]
    _RESTORED.update(restored)


def operands_key(*tensors: torch.Tensor | None) -> tuple:
    """The part of a key the operands give: dtype, shape, strides and whether a gradient will be taken
    of each (None for an absent one), and the autocast dtype when autocast is on. Keys are recorded
    for CPU calls only (``may_time``), so the device is not part of them."""
    grad = torch.is_grad_enabled()
    parts: list[object] = [
        None if t is None else (t.dtype, t.shape, t.stride(), grad and t.requires_grad) for t in tensors
    ]
    if torch.is_autocast_enabled("cpu"):
        parts.append(torch.get_autocast_dtype("cpu"))
    return tuple(parts)


def may_time(*tensors: torch.Tensor) -> bool:
    """Whether a call on these operands may be timed (module docstring): CPU tensors, not compiling,
    timing on."""
    if not form_timing_enabled() or torch.compiler.is_compiling():
        return False
    return all(t.is_cpu for t in tensors)


Form = Callable[..., torch.Tensor]


def _time_forms(forms: Mapping[str, Callable[[], torch.Tensor]]) -> tuple[str, torch.Tensor]:
    names = list(forms)
    results = {name: forms[name]() for name in names}  # warm-up; the winner's result is returned
    rounds: dict[str, list[float]] = {name: [] for name in names}

    def medians() -> dict[str, float]:
        return {name: statistics.median(times) for name, times in rounds.items()}

    def more() -> bool:
        done = len(rounds[names[0]])
        if done < ROUNDS:
            return True
        short = min(sum(times) for times in rounds.values()) < MIN_TIMED_S
        return done < MAX_ROUNDS and (short or _close(medians()))

    while more():
        for name in names if len(rounds[names[0]]) % 2 == 0 else reversed(names):
            start = time.perf_counter()
            forms[name]()
            rounds[name].append(time.perf_counter() - start)
    typical = medians()
    winner = min(names, key=typical.__getitem__)
    return winner, results[winner]


def _close(typical: Mapping[str, float]) -> bool:
    """Whether the two fastest forms' median times are within ``CLOSE`` of each other."""
    times = sorted(typical.values())
    return len(times) > 1 and times[1] < CLOSE * times[0]


def _with_backward(
    forms: Mapping[str, Form], operands: Sequence[object]
) -> dict[str, Callable[[], torch.Tensor]]:
    """Each form as a call of its forward and backward on detached copies of the operands (tensors that
    require a gradient become leaves that do; other operands are passed as they are), with a gradient
    of ones for the output."""
    copies = [
        t.detach().requires_grad_() if isinstance(t, torch.Tensor) and t.requires_grad else t
        for t in operands
    ]
    inputs = [t for t in copies if isinstance(t, torch.Tensor) and t.requires_grad]
    grad_out: list[torch.Tensor] = []

    def forward_backward(form: Form) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            # identity hooks: this graph's saved tensors are kept as they are even where the caller
            # runs under saved-tensor hooks (activation checkpointing, offloading)
            with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                out = form(*copies)
                if not grad_out:
                    grad_out.append(torch.ones_like(out))
                torch.autograd.grad(out, inputs, grad_out[0], allow_unused=True)
            return out.detach()

        return run

    return {name: forward_backward(form) for name, form in forms.items()}


def fastest(
    key: Hashable,
    forms: Mapping[str, Form],
    operands: Sequence[object],
    by_rules: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """The result of the fastest of ``forms`` (each called as ``form(*operands)``) for ``key``, a call
    the caller's ``may_time()`` allowed (module docstring); ``by_rules()``, the result by the caller's
    fixed rules, once ``MAX_KEYS`` keys are recorded."""
    name = _PICKS.get(key)
    if name is None and _RESTORED:
        restored = _RESTORED.get(repr(key))
        if restored in forms:
            name = _PICKS[key] = restored
    if name is not None:
        return forms[name](*operands)
    if len(_PICKS) >= MAX_KEYS:
        return by_rules()
    if grad_will_be_taken(*operands):
        name, _ = _time_forms(_with_backward(forms, operands))
        _PICKS[key] = name
        return forms[name](*operands)
    name, out = _time_forms({n: (lambda f=f: f(*operands)) for n, f in forms.items()})
    _PICKS[key] = name
    return out
