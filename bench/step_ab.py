"""A/B of two ways to run the same step, alternated step by step in one process: eager against
``torch.compile``, eager against ``rules`` (eager with every attention form by the fixed rules instead of
picked by timing, ``fusmae_fast.form_timing``), eager against ``plain`` (the textbook baseline model of
``bench/plain_model.py``, eager), or a form against itself (an A/A control of the method).

Usage
    python bench/step_ab.py                                   # small, pretrain, bf16: eager vs compiled
    python bench/step_ab.py --preset base --precision fp32 --pairs 16
    python bench/step_ab.py --preset tiny --b eager           # A/A: how far apart equal steps read
    python bench/step_ab.py --precision fp32 --a rules --b eager  # the rules against the timed picks
    python bench/step_ab.py --preset base --precision fp32 --b plain --pairs 8  # ours against plain

Why: ``bench/step.py`` times each configuration in its own process, round after round. On a shared
or throttled CPU the machine's speed can drift by 2x between rounds, seconds apart, and then a ratio of
two rounds measures the drift. Here both steps are built in one process, with the same weights, inputs
and masks (``bench/step.py``'s ``build``). They run in pairs, and the order is swapped every pair
(``devices.round_order``), so drift slower than a step cancels within a pair. Each pair gives one
ratio, A's time over B's (above 1: B is faster). The result is the median ratio, its range, and how
many pairs B won.

Before the pairs: one untimed call of each (the compiled one compiles there; its time is reported),
then ``--warmup`` untimed calls of each. Outputs: the table on stdout (``report.step_ab_markdown``), and
``bench/results/step_ab_<device>.{json,md}`` (``--out-dir``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

FORMS = ("eager", "compiled", "rules", "plain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from fusmae_fast.bench import devices

    p = argparse.ArgumentParser(prog="python bench/step_ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=("tiny", "small", "base"))
    p.add_argument("--task", default="pretrain", choices=("pretrain", "encode"))
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--batch", type=int, default=None, help="default: bench/step.py's per preset")
    p.add_argument("--a", default="eager", choices=FORMS, help="the first form (default eager)")
    p.add_argument("--b", default="compiled", choices=FORMS, help="the second form (default compiled)")
    p.add_argument("--pairs", type=int, default=10, help="timed pairs (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each after the first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="default bench/results")
    devices.add_host_allocator_argument(p)
    args = p.parse_args(argv)
    if args.pairs < 1 or args.warmup < 0:
        p.error("--pairs must be >= 1 and --warmup >= 0")
    if args.batch is not None and args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def build_forms(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """The A and B step functions ("a", "b"), each built by ``bench/step.py``'s ``build`` from the same
    seed (same weights, inputs and masks)."""
    from fusmae_fast.bench.step import build

    cfg = {
        "task": args.task,
        "preset": args.preset,
        "kernels": "torch",
        "precision": args.precision,
        "batch": batch,
        "variant": "xae",
        "masking": "consistent",
        "device": args.device,
        "seed": args.seed,
    }
    return {
        side: _by_rules(step) if form == "rules" else step
        for side, form in (("a", args.a), ("b", args.b))
        for step in [build({**cfg, "compile": form == "compiled", "provider": _provider(form)})[1]]
    }


def _provider(form: str) -> str:
    """The model a form runs: ``plain`` the textbook baseline (``bench/plain_model.py``), eager; every
    other form FusMAE."""
    return "plain" if form == "plain" else "fusmae"


def _by_rules(step: Any) -> Any:
    """``step`` with the torch path's form timing off while it runs (the picks of other forms kept)."""
    from fusmae_fast.form_timing import timing_off

    def run() -> None:
        with timing_off():
            step()

    return run


def time_pairs(steps: dict[str, Any], pairs: int) -> list[dict[str, float]]:
    """``pairs`` timed pairs, A and B one after the other, the order swapped every pair: seconds each."""
    from fusmae_fast.bench import devices

    out = []
    for i in range(pairs):
        pair = {}
        for side in devices.round_order(["a", "b"], i):
            t0 = time.perf_counter()
            steps[side]()
            pair[side] = time.perf_counter() - t0
        out.append(pair)
    return out


def summary(pairs: list[dict[str, float]]) -> dict[str, Any]:
    """Median and range of A / B over the pairs, B's wins, and each side's median time (ms)."""
    ratios = [p["a"] / p["b"] for p in pairs]
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "b_faster_pairs": sum(r > 1 for r in ratios),
        "pairs": len(pairs),
        "a_ms_median": statistics.median(p["a"] for p in pairs) * 1e3,
        "b_ms_median": statistics.median(p["b"] for p in pairs) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from fusmae_fast.bench import devices, report
    from fusmae_fast.bench.step import DEFAULT_BATCH

    args = parse_args(argv)
    batch = args.batch or DEFAULT_BATCH[args.preset]
    t0 = time.perf_counter()
    allocator = devices.apply_host_allocator(args.host_allocator)
    device = torch.device(args.device)
    info = {**devices.run_info(device, devices.pin_threads(args.threads)), "host_allocator": allocator}
    steps = build_forms(args, batch)
    first = {}
    for side in ("a", "b"):
        t = time.perf_counter()
        steps[side]()
        first[side] = time.perf_counter() - t
        print(f"# first call of {side.upper()} ({getattr(args, side)}): {first[side]:.1f} s", flush=True)
    for _ in range(args.warmup):
        for side in ("a", "b"):
            steps[side]()
    pairs = time_pairs(steps, args.pairs)
    result = {
        "benchmark": "step_ab",
        "info": info,
        "config": {
            "task": args.task,
            "preset": args.preset,
            "precision": args.precision,
            "batch": batch,
            "a": args.a,
            "b": args.b,
        },
        "first_call_s": first,
        "pairs_s": pairs,
        "summary": summary(pairs),
    }
    devices.finish_run(result, t0, args.out_dir, device, report.step_ab_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
