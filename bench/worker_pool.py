"""Independent units of work spread over spawned worker processes, against a deadline.

``run_units(fn, units, workers=N, deadline=...)`` runs ``fn(unit)`` for every unit, each in one of N
worker processes (the "spawn" start method: safe with CUDA; each worker runs ``initializer`` once
first), handing a unit to whichever worker is free. What the caller gets back says, per unit index,
what became of it: its result, the exception ``fn`` raised (as text), the exit code of the worker that
died while running it (a segfault or an abort in a kernel launch ends only that unit: the worker is
replaced and the others go on; a unit that raises ``WorkerBroken`` has its worker replaced too), or
nothing (not run: the deadline came first, or the workers could
not start). At the deadline every worker is killed, so one unit that hangs cannot hold the run.

Why: the GPU check's parity section is mostly Triton compiles (LLVM and ptxas, one CPU core each),
one per kernel config, and a GPU machine has many cores; the units run in any order and their results
are put back in the units' order by the caller.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from typing import Any

POLL_S = 0.5
"""Longest wait for a worker's message before the parent looks at the deadline again."""


@dataclass
class Outcome:
    """What became of each unit, by its index in ``units``."""

    results: dict[int, Any] = field(default_factory=dict)
    """Unit index -> what ``fn`` returned."""
    errors: dict[int, str] = field(default_factory=dict)
    """Unit index -> the exception ``fn`` raised, or how its worker died, as one line."""
    not_run: list[int] = field(default_factory=list)
    """Unit indices that never finished: the deadline came first, or no worker could start."""
    start_errors: list[str] = field(default_factory=list)
    """A line per worker whose ``initializer`` raised."""


class WorkerBroken(Exception):
    """Raised by a unit's function when its process can run nothing more (e.g. its CUDA context hit a
    sticky error): the unit fails with this message and the worker is replaced by a fresh one."""


def _worker(conn, fn, initializer, initargs) -> None:
    """A worker's loop: set up, then run each unit the parent sends until it sends None. Every message
    is sent synchronously on the worker's own pipe, so a result sent is never lost in a later crash."""
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:  # reported, and this worker takes no unit
        conn.send(("start_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        item = conn.recv()
        if item is None:
            return
        try:
            conn.send(("done", fn(item)))
        except WorkerBroken as exc:
            conn.send(("broken", f"{exc}"[:500]))
            return
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {str(exc)[:500]}"))


@dataclass
class _Worker:
    proc: Any
    conn: Any
    running: int | None = None
    """Index of the unit it runs, None while it sets up."""


def default_workers(n_units: int, cap: int = 16) -> int:
    """One worker per core this process may use, at most ``cap`` and at most one per unit."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, cap, n_units))


def run_units(
    fn: Callable[[Any], Any],
    units: Sequence[Any],
    *,
    workers: int,
    deadline: float,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    on_done: Callable[[int, int], None] | None = None,
) -> Outcome:
    """``fn(unit)`` for each of ``units`` in ``workers`` spawned processes until done or ``deadline``
    (time.monotonic()); ``fn``, ``initializer`` and the units must be picklable (module-level functions,
    plain values). ``on_done(finished, total)`` is called in this process after each unit."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = mp.get_context("spawn")
    pending = collections.deque(range(len(units)))
    out, live = Outcome(), {}
    respawns = [0]

    def start() -> None:
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, fn, initializer, initargs), daemon=True)
        proc.start()
        child.close()  # the parent's copy: the worker's exit then shows as EOF on conn
        live[conn] = _Worker(proc, conn)

    def settle(idx: int, kind: str, payload: Any) -> None:
        (out.results if kind == "done" else out.errors)[idx] = payload
        if on_done is not None:
            on_done(len(out.results) + len(out.errors), len(units))

    def hand_out(w: _Worker) -> None:
        """The next unit to ``w``, or the end when none is left."""
        w.running = pending.popleft() if pending else None
        w.conn.send(None if w.running is None else units[w.running])
        if w.running is None:
            del live[w.conn]

    def lost(w: _Worker) -> None:
        """``w`` died: its unit failed; a replacement takes the next one."""
        del live[w.conn]
        w.proc.join(timeout=5)
        if w.running is None:
            out.start_errors.append(f"a worker exited (code {w.proc.exitcode}) before taking a unit")
            return
        settle(w.running, "error", f"worker process died (exit code {w.proc.exitcode})")
        if pending and respawns[0] < len(units):
            respawns[0] += 1
            start()

    for _ in range(min(workers, len(units))):
        start()
    try:
        while live and time.monotonic() < deadline:
            ready = mp_connection.wait(list(live), timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
            for conn in ready:
                w = live[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    lost(w)
                    continue
                if kind == "start_error":
                    out.start_errors.append(payload)
                    del live[conn]
                    continue
                if kind == "broken":  # its unit failed; a fresh worker takes over
                    settle(w.running, "error", payload)
                    w.running = None
                    del live[conn]
                    w.proc.join(timeout=5)
                    if pending:
                        start()
                    continue
                if kind != "ready":
                    settle(w.running, kind, payload)
                hand_out(w)
    finally:
        for w in live.values():
            if w.proc.is_alive():
                w.proc.kill()
        for w in live.values():
            w.proc.join(timeout=5)
            w.conn.close()
    out.not_run = [i for i in range(len(units)) if i not in out.results and i not in out.errors]
    return out
