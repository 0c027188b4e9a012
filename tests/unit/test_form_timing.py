"""fusmae_fast.form_timing: the fastest form is picked by timing once per key (the forward where no
gradient will be taken, forward and backward where one will), only where the module says a call may
be timed, without touching the caller's graph or random numbers, and every form of the torch path
gives the right result."""

import time

import pytest
import torch

from fusmae_fast import form_timing
from fusmae_fast.attention import attention
from fusmae_fast.form_timing import fastest, may_time, operands_key, picks
from fusmae_fast.kernels.cross_modal_attention import cross_modal_attention_ref
from fusmae_fast.kernels.triton_runtime import set_deterministic
from fusmae_fast.torch_ops import cross_modal_attention_torch


@pytest.fixture(autouse=True)
def fresh_picks():
    """Timing on and nothing recorded, before and after each test."""
    form_timing.set_form_timing(True)
    yield
    form_timing.set_form_timing(True)


def _counting_forms(delays: dict[str, float], calls: list[str]):
    def form(name: str):
        def run(*operands: torch.Tensor) -> torch.Tensor:
            calls.append(name)
            time.sleep(delays[name])
            return torch.tensor(float(len(name)))

        return run

    return {name: form(name) for name in delays}


def test_fastest_form_is_picked_once_and_then_run_alone():
    calls: list[str] = []
    forms = _counting_forms({"slow": 0.03, "quick": 0.0}, calls)
    out = fastest("site", forms, (), forms["slow"])
    assert picks() == {"site": "quick"}
    assert out.item() == len("quick")  # the winner's result
    # the quick form never reaches MIN_TIMED_S in all: MAX_ROUNDS rounds
    assert calls.count("slow") == calls.count("quick") == 1 + form_timing.MAX_ROUNDS
    calls.clear()
    for _ in range(3):
        assert fastest("site", forms, (), forms["slow"]).item() == len("quick")
    assert calls == ["quick"] * 3


def test_long_forms_are_timed_for_the_fewest_rounds():
    calls: list[str] = []
    a = 0.4 * form_timing.MIN_TIMED_S  # ROUNDS rounds pass MIN_TIMED_S in all
    forms = _counting_forms({"a": a, "b": 2 * a}, calls)
    fastest("long", forms, (), forms["b"])
    assert picks() == {"long": "a"}
    assert calls.count("a") == calls.count("b") == 1 + form_timing.ROUNDS


def test_near_ties_are_timed_for_the_most_rounds():
    calls: list[str] = []
    a = 0.4 * form_timing.MIN_TIMED_S  # long enough alone to stop after ROUNDS rounds
    forms = _counting_forms({"a": a, "b": 1.02 * a}, calls)  # within CLOSE: the most rounds
    fastest("tie", forms, (), forms["b"])
    assert calls.count("a") == calls.count("b") == 1 + form_timing.MAX_ROUNDS


def test_a_form_fast_in_one_round_only_loses_to_one_fast_in_every_round():
    # "lucky" takes 1 ms in one timed round and 30 ms in every other; "steady" takes 10 ms in all:
    # the best round would pick lucky, which is slower in every later call
    lucky_rounds = iter([0.03, 0.001] + [0.03] * form_timing.MAX_ROUNDS)  # warm-up, then the rounds
    forms = {
        "lucky": lambda: time.sleep(next(lucky_rounds)) or torch.tensor(0.0),
        "steady": lambda: time.sleep(0.01) or torch.tensor(1.0),
    }
    out = fastest("lucky-once", forms, (), forms["lucky"])
    assert picks() == {"lucky-once": "steady"}
    assert out.item() == 1.0


class _Sleeps(torch.autograd.Function):
    """x * 2 whose forward and backward each sleep a given time."""

    @staticmethod
    def forward(ctx, x, fwd_s: float, bwd_s: float):  # type: ignore[override]
        ctx.bwd_s = bwd_s
        time.sleep(fwd_s)
        return x * 2

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        time.sleep(ctx.bwd_s)
        return g * 2, None, None


def test_gradient_calls_are_timed_with_their_backward():
    """Where a gradient will be taken the backward is part of the time: the form with the quick forward
    and slow backward wins gradient-free calls and loses gradient calls, which are a key of their own."""
    forms = {
        "quick-forward": lambda x: _Sleeps.apply(x, 0.0, 0.01),
        "quick-backward": lambda x: _Sleeps.apply(x, 0.003, 0.0),
    }
    x = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        fastest(("site", operands_key(x)), forms, (x,), lambda: forms["quick-backward"](x))
    out = fastest(("site", operands_key(x)), forms, (x,), lambda: forms["quick-forward"](x))
    (no_grad_key, no_grad_pick), (grad_key, grad_pick) = picks().items()
    assert (no_grad_pick, grad_pick) == ("quick-forward", "quick-backward")
    assert no_grad_key != grad_key
    assert x.grad is None  # the timing ran on copies
    out.sum().backward()  # the winner ran on x itself
    torch.testing.assert_close(x.grad, torch.full((3,), 2.0))


def test_timed_gradient_attention_is_right_and_leaves_the_caller_alone():
    """A timed gradient call records a pick, draws no random numbers, leaves no gradient on the caller's
    tensors, and its output's backward gives the fp64 reference's gradients, also under activation
    checkpointing (whose saved-tensor hooks the timing's graph must not use)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 17, 40, generator=g, dtype=torch.float64).float().requires_grad_()
    q, k, v = x * 1.0, x * 0.5, x * 2.0  # non-leaf operands, as in the model

    def ref(x):
        q, k, v = x * 1.0, x * 0.5, x * 2.0
        return torch.softmax(q @ k.transpose(-2, -1) / 40**0.5, -1) @ v

    rng = torch.get_rng_state()
    out = attention(q, k, v)
    assert torch.equal(torch.get_rng_state(), rng)
    ((key, _),) = picks().items()
    assert key[0] == "attention" and key[1][0][-1] is True  # q: a gradient will be taken
    assert x.grad is None
    xd = x.detach().double().requires_grad_()
    want = ref(xd)
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=2e-5)
    out.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(x.grad.double(), xd.grad, atol=2e-5, rtol=2e-5)

    form_timing.set_form_timing(True)  # forget the pick: the first call happens inside the checkpoint
    x.grad = None
    y = torch.utils.checkpoint.checkpoint(
        lambda x: attention(x * 1.0, x * 0.5, x * 2.0), x, use_reentrant=False
    )
    y.sum().backward()
    assert len(picks()) == 1
    torch.testing.assert_close(x.grad.double(), xd.grad, atol=2e-5, rtol=2e-5)


def test_untimed_calls_run_the_rules(monkeypatch):
    """Past the cap on a gradient call's scores, nothing is recorded and the rules' form runs (bf16: the
    explicit form, bitwise)."""
    from fusmae_fast import attention as attention_module
    from fusmae_fast.attention import explicit_attention

    monkeypatch.setattr(attention_module, "TIMED_GRAD_MAX_SCORE_BYTES", 5 * 5 * 2 * 2 - 1)
    q = torch.randn(1, 2, 5, 64, dtype=torch.bfloat16, requires_grad=True)
    out = attention(q, q, q)
    assert picks() == {}
    torch.testing.assert_close(out, explicit_attention(q, q, q), atol=0, rtol=0)
    with torch.no_grad():
        attention(q, q, q)  # gradient-free: timed, whatever the size
    assert len(picks()) == 1


def test_restored_picks_are_run_without_timing(monkeypatch):
    """export_picks / restore_picks (a checkpoint's round trip, through plain strings): after the
    picks are forgotten, a restored key runs its form untimed; a name the call has no form of is timed."""
    calls: list[str] = []
    forms = _counting_forms({"slow": 0.01, "quick": 0.0}, calls)
    x = torch.randn(2, 3)
    fastest(("site", operands_key(x)), forms, (x,), forms["slow"])
    saved = form_timing.export_picks()
    assert saved == [[repr(("site", operands_key(x))), "quick"]]
    form_timing.set_form_timing(True)  # a new process: nothing recorded
    form_timing.restore_picks([*saved, [repr(("other", operands_key(x))), "gone"]])
    calls.clear()
    fastest(("site", operands_key(x.clone())), forms, (x,), forms["slow"])
    assert calls == ["quick"] and picks() == {("site", operands_key(x)): "quick"}
    fastest(("other", operands_key(x)), forms, (x,), forms["slow"])
    assert len(calls) > 2 and picks()[("other", operands_key(x))] == "quick"  # timed


def test_restored_picks_replace_this_processes_own():
    """A restore wins over a pick this process already made for the key (a run continued in the
    process that timed another run: the record of the run it continues decides)."""
    calls: list[str] = []
    forms = _counting_forms({"slow": 0.01, "quick": 0.0}, calls)
    x = torch.randn(2, 3)
    key = ("site", operands_key(x))
    fastest(key, forms, (x,), forms["slow"])
    assert picks() == {key: "quick"}
    form_timing.restore_picks([[repr(key), "slow"]])
    calls.clear()
    fastest(key, forms, (x,), forms["slow"])
    assert calls == ["slow"] and picks() == {key: "slow"}


def test_keys_past_the_cap_run_the_rule(monkeypatch):
    monkeypatch.setattr(form_timing, "MAX_KEYS", 2)
    calls: list[str] = []
    forms = _counting_forms({"slow": 0.01, "quick": 0.0}, calls)
    for key in ("a", "b", "c"):
        fastest(key, forms, (), forms["slow"])
    assert picks() == {"a": "quick", "b": "quick"}
    calls.clear()
    fastest("d", forms, (), forms["slow"])
    assert calls == ["slow"]


def test_which_calls_may_be_timed():
    x = torch.randn(2, 3)
    assert may_time(x)
    with_grad = x.clone().requires_grad_(True)
    assert may_time(x, with_grad)  # timed with its backward
    assert form_timing.grad_will_be_taken(x, with_grad, None) and not form_timing.grad_will_be_taken(x)
    with torch.no_grad():
        assert not form_timing.grad_will_be_taken(x, with_grad)
    assert not may_time(torch.empty(2, device="meta"))
    fastest("kept", {"only": lambda: x}, (), lambda: x)
    with form_timing.timing_off():
        assert not may_time(x)
    assert may_time(x) and picks() == {"kept": "only"}  # timing_off forgets nothing
    form_timing.set_form_timing(False)
    assert not may_time(x) and not form_timing.form_timing_enabled() and picks() == {}
    form_timing.set_form_timing(True)
    set_deterministic(True)
    try:
        assert not may_time(x)
    finally:
        set_deterministic(False)
    assert may_time(x)


def test_operands_key_tells_layouts_and_autocast_apart():
    a = torch.randn(2, 4, 3, 8)
    b = a.transpose(1, 2).contiguous().transpose(1, 2)  # same shape, other strides
    assert operands_key(a) == operands_key(a.clone())
    assert operands_key(a) != operands_key(b)
    assert operands_key(a) != operands_key(a.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = operands_key(a)
    assert in_autocast != operands_key(a)
    assert in_autocast[-1] == torch.bfloat16
    assert operands_key(a, None) == (*operands_key(a), None)
    with_grad = a.clone().requires_grad_()
    assert operands_key(with_grad) != operands_key(a)
    with torch.no_grad():
        assert operands_key(with_grad) == operands_key(a)


def _force(monkeypatch, name: str) -> list[str]:
    """Make every timed call pick ``name`` (where it is among the forms, else the rule's form)."""
    seen: list[str] = []

    def pick(forms):
        seen.extend(forms)
        chosen = name if name in forms else next(iter(forms))
        return chosen, forms[chosen]()

    monkeypatch.setattr(form_timing, "_time_forms", pick)
    return seen


@pytest.mark.parametrize("form", ["sdpa", "explicit"])
@pytest.mark.parametrize("masked", [False, True])
def test_each_attention_form_when_timed(monkeypatch, form, masked):
    seen = _force(monkeypatch, form)
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 17, 40, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 17, 17, generator=g) > 0.5 if masked else None
    if mask is not None:
        mask[..., 0] = True
    scores = q @ k.transpose(-2, -1) / 40**0.5
    want = torch.softmax(scores if mask is None else scores.masked_fill(~mask, -torch.inf), -1) @ v
    with torch.no_grad():
        got = attention(q, k, v, mask)
    assert set(seen) == {"sdpa", "explicit"}
    assert list(picks().values()) == [form]
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def _torch_path_matches_reference(q, k, v, split, grad: bool, g: torch.Generator) -> None:
    """The Eq. 2 torch path on (q, k, v, split) equals the fp64 reference, and so do its gradients of a
    random output gradient where ``grad``."""
    with torch.set_grad_enabled(grad):
        got = cross_modal_attention_torch(q, k, v, split)
    leaves = [t.detach().double().requires_grad_(grad) for t in (q, k, v)]
    want = cross_modal_attention_ref(*leaves, split)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)
    if grad:
        do = torch.randn(want.shape, generator=g, dtype=torch.float64)
        got.backward(do.float())
        want.backward(do)
        for t, ref in zip((q, k, v), leaves, strict=True):
            torch.testing.assert_close(t.grad.double(), ref.grad, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("form", ["two-sdpa", "two-explicit", "paired", "masked-sdpa"])
@pytest.mark.parametrize(("L", "split"), [(50, 25), (50, 20), (113, 56), (1, 0), (7, 7)])
@pytest.mark.parametrize("grad", [False, True])
def test_each_cross_modal_form_when_timed(monkeypatch, form, L, split, grad):
    """Eq. 2 with one split: each form the timing may pick equals the reference, and so do its
    gradients where one is taken (the paired form exists at L/2 only; a split of 0 or L goes the
    masked way, with its zero rows)."""
    seen = _force(monkeypatch, form)
    g = torch.Generator().manual_seed(L + split)
    q, k, v = (torch.randn(3, L, 2, 40, generator=g).requires_grad_(grad) for _ in range(3))
    _torch_path_matches_reference(q, k, v, torch.full((3,), split, dtype=torch.int64), grad, g)
    if 0 < split < L:
        expected = {"two-sdpa", "two-explicit", "masked-sdpa"} | ({"paired"} if 2 * split == L else set())
        assert expected <= set(seen)
        timed = [name for key, name in picks().items() if key[0] == "cross-modal-one-split"]
        assert timed == [form if form in expected else "two-sdpa"]


@pytest.mark.parametrize("form", ["masked-explicit", "masked-sdpa", "grouped"])
@pytest.mark.parametrize("splits", [[3, 5, 3, 4, 5, 1], [1, 6, 6, 1], [2, 3]])
@pytest.mark.parametrize("grad", [False, True])
def test_each_ragged_form_when_timed(monkeypatch, form, splits, grad):
    """Eq. 2 with ragged splits (every sample with both modalities): each form the timing may pick
    equals the reference (rows in batch order, groups of one and of several samples); the grouped form
    is timed only where no gradient will be taken, and a gradient call keeps the masked call."""
    seen = _force(monkeypatch, form)
    L, b = 7, len(splits)
    g = torch.Generator().manual_seed(sum(splits) + b)
    q, k, v = (torch.randn(b, L, 2, 40, generator=g).requires_grad_(grad) for _ in range(3))
    _torch_path_matches_reference(q, k, v, torch.tensor(splits, dtype=torch.int64), grad, g)
    ragged = [name for key, name in picks().items() if key[0] == "cross-modal-ragged"]
    if grad:
        assert ragged == [] and "grouped" not in seen
    else:
        assert set(seen) >= {"masked-explicit", "masked-sdpa", "grouped"} and ragged == [form]
