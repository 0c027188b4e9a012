"""bench/worker_pool.py: every unit runs once in a spawned worker and comes back under its index; a unit
that raises, a worker that dies, a unit that says its worker is broken and a unit that hangs past the
deadline each end only that unit; a worker whose set-up fails is reported and runs nothing.

The units' functions live in this module: a spawned worker imports it by name to find them.
"""

from __future__ import annotations

import os
import time

import pytest

from fusmae_fast.bench import worker_pool


def square_or_fail(unit: tuple[str, int]) -> int:
    kind, x = unit
    if kind == "raise":
        raise ValueError(f"bad unit {x}")
    if kind == "die":
        os._exit(3)
    if kind == "hang":
        time.sleep(120)
    if kind == "broken":
        raise worker_pool.WorkerBroken(f"context lost at {x}")
    return x * x


def refuse_to_start() -> None:
    raise RuntimeError("no device here")


def test_results_errors_and_a_dead_worker():
    units = [("ok", 1), ("raise", 2), ("ok", 3), ("die", 4), ("ok", 5), ("broken", 6), ("ok", 7), ("ok", 8)]
    seen = []
    out = worker_pool.run_units(
        square_or_fail,
        units,
        workers=2,
        deadline=time.monotonic() + 120,
        on_done=lambda done, total: seen.append((done, total)),
    )
    assert out.results == {0: 1, 2: 9, 4: 25, 6: 49, 7: 64}
    assert out.errors == {
        1: "ValueError: bad unit 2",
        3: "worker process died (exit code 3)",
        5: "context lost at 6",
    }
    assert out.not_run == [] and out.start_errors == []
    assert [d for d, _ in seen] == list(range(1, 9)) and seen[-1] == (8, 8)


def test_a_hanging_unit_is_stopped_at_the_deadline():
    t0 = time.monotonic()
    out = worker_pool.run_units(
        square_or_fail, [("hang", 0), ("ok", 2), ("ok", 3)], workers=2, deadline=time.monotonic() + 10
    )
    assert time.monotonic() - t0 < 25
    assert out.not_run == [0]
    assert out.results == {1: 4, 2: 9}


def test_workers_that_cannot_start_run_nothing():
    out = worker_pool.run_units(
        square_or_fail,
        [("ok", 1), ("ok", 2)],
        workers=2,
        deadline=time.monotonic() + 60,
        initializer=refuse_to_start,
    )
    assert out.results == {} and out.errors == {}
    assert out.not_run == [0, 1]
    assert len(out.start_errors) == 2 and all("RuntimeError: no device here" in e for e in out.start_errors)


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        worker_pool.run_units(square_or_fail, [("ok", 1)], workers=0, deadline=time.monotonic() + 1)


def test_default_workers_is_bounded():
    assert worker_pool.default_workers(1) == 1
    assert 1 <= worker_pool.default_workers(1000) <= 16
    assert worker_pool.default_workers(1000, cap=1) == 1
