"""Markdown tables from the benchmark JSONs; ``python bench/report.py`` writes docs/benchmarks.md.

``python bench/report.py`` reads the newest result of each benchmark in ``bench/results/``
(``xattn_*.json``, ``step_*.json``, ``independent/step_*.json``, ``avx2/{step,xattn}_*.json``,
``amx/{step,step_ceiling}_*.json``, ``step_parts_*.json``, every ``data_read_*.json`` and every
``embed_*.json``, ``roofline.json``; newest by the timestamp inside, full runs preferred over --quick
runs only when ``--prefer-full`` is given) and writes

- ``docs/benchmarks.md`` (``--out``): every measured table, each named with the device it ran on and
  the file it comes from, and the GPU roofline table labelled as a model;
- the README's summary table (``--readme``): the text between the ``SUMMARY_BEGIN`` and
  ``SUMMARY_END`` markers is replaced by ``readme_summary()``, fp32 step throughput of FusMAE and
  ``plain`` with their ratio and Amdahl's bound.

The table functions are also used by the benchmarks themselves to print their tables, so a table
always has one format.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.bench import devices

ROOFLINE_LABEL = "model, not measured"


def _f(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}g}" if abs(x) < 0.01 else f"{x:.{digits}f}".rstrip("0").rstrip(".")


def _device_text(info: dict[str, Any]) -> str:
    """'**name** (kind[, CPU capability, native matmul dtypes])'."""
    extra = ""
    if info.get("cpu_capability"):
        extra += f", {info['cpu_capability']}"
    if info.get("cpu_native"):
        extra += f", native matmul {'/'.join(info['cpu_native'])}"
    return f"**{info['device_name']}** ({info['device']}{extra})"


def _header(result: dict[str, Any]) -> str:
    info = result["info"]
    git = info.get("git") or {}
    sha = (git.get("sha") or "unknown")[:10] + (" (+local changes)" if git.get("dirty") else "")
    th = info.get("threads") or {}
    return (
        f"Measured on {_device_text(info)}, torch {info['torch']}, "
        f"triton {info['triton']}, {th.get('intra_op', '?')} intra-op threads, git {sha}, "
        f"{info['timestamp']}, load average {info.get('loadavg_start')} -> {info.get('loadavg_end')}"
        + (" — `--quick` run" if result.get("quick") else "")
        + "."
        + (f" Host allocator: {info['host_allocator']}." if info.get("host_allocator") else "")
        + _recounted_text(info.get("recounted"))
    )


def _recounted_text(recounted: dict[str, Any] | None) -> str:
    """The header's note of a ``bench/step.py --recount``: FLOPs counted again later, timings as run."""
    if not recounted:
        return ""
    return (
        f" GFLOP/image and fractions recounted at git {recounted['git']['sha'][:10]}, "
        f"{recounted['timestamp']} (`--recount`; the timings are the run's)."
    )


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- xattn


def xattn_ratios(result: dict[str, Any], mode: str = "fwd") -> list[dict[str, Any]]:
    """Per case: time of each other provider / time of torch-reference (> 1: our torch path is faster)."""
    ok = [r for r in result["rows"] if r.get("status") == "ok" and r["mode"] == mode and "label" not in r]
    out = []
    for case in dict.fromkeys((r["case"], r["dtype"]) for r in ok):
        by = {r["provider"]: r for r in ok if (r["case"], r["dtype"]) == case}
        ours = by.get("torch-reference")
        if ours is None:
            continue
        for other in ("sdpa-mask", "flex", "two-calls+cat", "literal", "fusmae-triton", "xformers"):
            if other in by:
                out.append(
                    {"case": case[0], "dtype": case[1], "mode": mode, "vs": other, **_over(by[other], ours)}
                )
    return out


def _over(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``row``'s time over ``base``'s: ``ratio`` at each one's fastest round, and ``round_ratios``, one
    per round, when both have the same number (over one) of rounds."""
    out: dict[str, Any] = {"ratio": row["ms_p50"] / base["ms_p50"]}
    a, b = row.get("rounds_ms_p50", []), base.get("rounds_ms_p50", [])
    if len(a) > 1 and len(a) == len(b):
        out["round_ratios"] = [x / y for x, y in zip(a, b, strict=True)]
    return out


def _paired_rounds(entries: list[dict[str, Any]]) -> list[float] | None:
    """Per round, the fastest of ``entries``' providers over ours in that same round (None unless every
    entry has one ratio per round, for the same number of rounds)."""
    rounds = [e.get("round_ratios") for e in entries]
    if not rounds or any(r is None or len(r) != len(rounds[0]) for r in rounds):
        return None
    return [min(r[i] for r in rounds) for i in range(len(rounds[0]))]


def xattn_vs_fastest(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per case and mode: the fastest other provider and its time / ours (>= 1: ours is the fastest)."""
    out = []
    for mode in ("fwd", "bwd", "fwd+bwd"):
        ratios = xattn_ratios(result, mode)
        for case in dict.fromkeys((r["case"], r["dtype"]) for r in ratios):
            entries = [r for r in ratios if (r["case"], r["dtype"]) == case]
            best = dict(min(entries, key=lambda r: r["ratio"]))
            paired = _paired_rounds(entries)
            if paired is not None:
                best["paired_rounds"] = paired
            out.append(best)
    return out


def xattn_noise_floor(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per case and mode: the A/A control's time over the provider it repeats (``twin`` over
    ``two-calls+cat``, bench/xattn_providers.py), at each one's fastest round and per round."""
    ok = [r for r in result["rows"] if r.get("status") == "ok" and "label" not in r]
    out = []
    for key in dict.fromkeys((r["case"], r["dtype"], r["mode"]) for r in ok):
        by = {r["provider"]: r for r in ok if (r["case"], r["dtype"], r["mode"]) == key}
        twin, base = by.get("twin"), by.get("two-calls+cat")
        if twin is None or base is None:
            continue
        out.append({**dict(zip(("case", "dtype", "mode"), key, strict=True)), **_over(twin, base)})
    return out


def xattn_markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    has_roof = any("roofline_frac" in r for r in rows)
    head = ["case", "dtype", "mode", "provider", "ms p20", "ms p50", "ms p80", "TFLOP/s", "GB/s"]
    head += ["roofline"] if has_roof else []
    head += ["check", "note"]
    body = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        note = r.get("label", "")
        if "mask_ms_p50" in r:
            note = (note + "; " if note else "") + f"mask alone {_f(r['mask_ms_p50'])} ms"
        check = "ok" if r.get("check_ok") else f"WRONG ({r.get('check_max_abs_err', 0):.2g})"
        line = [
            r["case"],
            r["dtype"],
            r["mode"],
            r["provider"],
            _f(r["ms_p20"]),
            _f(r["ms_p50"]),
            _f(r["ms_p80"]),
        ]
        line += [_f(r.get("tflops"), 3), _f(r.get("gbs"), 3)]
        if has_roof:
            line.append(f"{r['roofline_frac']:.0%}" if "roofline_frac" in r else "-")
        line += [check, note]
        body.append(line)
    parts = [_header(result), "", _table(head, body)]
    ratios = xattn_ratios(result, "fwd")
    if ratios:
        parts += [
            "",
            "Forward, time of X / time of `torch-reference` (our torch path); > 1 means ours is faster:",
            "",
            _table(
                ["case", "dtype", "X", "ratio"],
                [[r["case"], r["dtype"], r["vs"], f"{r['ratio']:.2f}x"] for r in ratios],
            ),
        ]
    fastest = xattn_vs_fastest(result)
    if fastest:
        paired = any("paired_rounds" in r for r in fastest)
        head = ["case", "dtype", "mode", "fastest other", "ratio"]
        head += ["same round: median (min - max)"] if paired else []
        body = []
        for r in fastest:
            line = [r["case"], r["dtype"], r["mode"], r["vs"], f"{r['ratio']:.2f}x"]
            if paired:
                pr = r.get("paired_rounds")
                line.append(f"{statistics.median(pr):.2f}x ({min(pr):.2f} - {max(pr):.2f})" if pr else "-")
            body.append(line)
        parts += [
            "",
            "Every mode, time of the fastest other form / time of `torch-reference` (>= 1: ours is the "
            "fastest form measured). Ratio: each provider's fastest round."
            + (
                " Same round: per round, the fastest other form's p50 over ours in that round (the forms "
                "of a case are timed in turn within a round, so drift between rounds cancels), median "
                "and range over the rounds."
                if paired
                else ""
            ),
            "",
            _table(head, body),
        ]
    floor = xattn_noise_floor(result)
    if floor:
        body = []
        for r in floor:
            rr = r.get("round_ratios")
            spread = f"{statistics.median(rr):.2f}x ({min(rr):.2f} - {max(rr):.2f})" if rr else "-"
            body.append([r["case"], r["dtype"], r["mode"], f"{r['ratio']:.2f}x", spread])
        parts += [
            "",
            "Noise floor: `twin` is `two-calls+cat` again under another name, timed in turn with the "
            "others (an A/A control). Its time over `two-calls+cat`'s is what this machine's noise "
            "alone makes of two equal computations in this run; a ratio of ours inside this spread "
            "is no evidence either way.",
            "",
            _table(["case", "dtype", "mode", "twin / two-calls+cat", "same round: median (min - max)"], body),
        ]
    skips = [r for r in rows if r.get("status") in ("skipped", "error")]
    if skips:
        reasons: dict[tuple[str, str, str], list[str]] = {}
        for r in skips:
            reasons.setdefault((r["provider"], r["status"], r["reason"]), []).append(
                f"{r['case']} {r['mode']}"
            )
        parts += ["", "Not measured:", ""]
        for (prov, status, reason), where in reasons.items():
            n = len(where)
            parts.append(f"- `{prov}` {status} ({n} point{'s' if n > 1 else ''}): {reason}")
    parts += [
        "",
        "TFLOP/s counts only the useful 2·n1·n2 cross-modal score entries (backward = 2.5 x forward); "
        "GB/s = the op's compulsory bytes (q, k, v, o and gradients once) / time. Masks derived from the "
        "split are built inside the timed call (the model's split changes every step).",
    ]
    return "\n".join(parts)


def xattn_pivot_markdown(result: dict[str, Any], details: str | None = None) -> str:
    """Compact form for the README: p50 ms per provider (columns) for every case and mode (rows)."""
    rows = result["rows"]
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    keys = list(dict.fromkeys((r["case"], r["dtype"], r["mode"]) for r in rows))
    body = []
    for case, dtype, mode in keys:
        line = [case, dtype, mode]
        for prov in providers:
            hit = [
                r
                for r in rows
                if (r["case"], r["dtype"], r["mode"], r["provider"]) == (case, dtype, mode, prov)
            ]
            r = hit[0] if hit else None
            if r is None:
                line.append("")
            elif r.get("status") != "ok":
                line.append("skip" if r.get("status") == "skipped" else "error")
            elif "label" in r:
                line.append(f"({_f(r['ms_p50'])}, interpreter)")
            else:
                bad = "" if r.get("check_ok", True) else " WRONG"
                line.append(f"{_f(r['ms_p50'])}{bad}")
        body.append(line)
    parts = [_header(result), "", "p50 milliseconds per call (lower is better):", ""]
    parts.append(_table(["case", "dtype", "mode", *providers], body))
    ratios = xattn_ratios(result, "fwd")
    if ratios:
        text = "; ".join(f"{r['case']} vs {r['vs']} {r['ratio']:.2f}x" for r in ratios)
        parts += ["", f"Forward, time of X / time of `torch-reference` (> 1: our torch path faster): {text}."]
    reasons = dict.fromkeys(
        f"`{r['provider']}`: {r['reason']}" for r in rows if r.get("status") in ("skipped", "error")
    )
    if reasons:
        parts += ["", "skip / error = not measured: " + "; ".join(reasons) + "."]
    if details:
        parts += ["", f"p20/p80, TFLOP/s (useful 2·n1·n2 work only), GB/s and mask-only times: `{details}`."]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- step


STEP_KEY = ("preset", "variant", "masking", "precision", "compile", "batch")
"""Fields that must match for a FusMAE row and a plain row to be compared."""


STEP_PARTS_KEY = ("preset", "variant", "masking", "batch")
"""Fields that must match for a step row and a ``step_parts`` row (its Amdahl bound) to be compared."""
PRESET_ORDER = {"tiny": 0, "small": 1, "base": 2}
"""Row order of the README summary."""


UNSTABLE_SPREAD = 3.0
"""A step row whose p80 exceeds this many times its p20 did not run at a steady speed (typically
torch.compile recompiling for new shapes); its ratio is flagged, not trusted."""


def _unstable(row: dict[str, Any]) -> bool:
    return row.get("ms_p80", 0.0) > UNSTABLE_SPREAD * row.get("ms_p20", float("inf"))


def step_pairs(result: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(FusMAE row, its `plain` twin) for every measured FusMAE row that has a twin, in row order."""
    ok = [r for r in result["rows"] if r.get("status") == "ok" and r.get("task", "pretrain") == "pretrain"]
    plain = {tuple(r[k] for k in STEP_KEY): r for r in ok if r["provider"] == "plain"}
    pairs = [(r, plain.get(tuple(r[k] for k in STEP_KEY))) for r in ok if r["provider"] == "fusmae"]
    return [(r, twin) for r, twin in pairs if twin is not None]


def step_ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """images/s of FusMAE over images/s of `plain` for every FusMAE row that has a plain twin."""
    out = []
    for r, twin in step_pairs(result):
        entry = {k: r[k] for k in STEP_KEY}
        entry.update(kernels=r["kernels"], ratio=r["images_per_s"] / twin["images_per_s"])
        entry["unstable"] = [name for name, row in (("ours", r), ("plain", twin)) if _unstable(row)]
        out.append(entry)
    return out


def _fraction(r: dict[str, Any]) -> str:
    f = r.get("fraction_of_peak")
    return "-" if f is None else f"{f:.2f}"


def _adjacent(r: dict[str, Any]) -> str:
    f = r.get("fraction_of_adjacent_peak")
    return "-" if f is None else f"{f['median']:.2f} ({f['min']:.2f}-{f['max']:.2f})"


def peaks_line(result: dict[str, Any]) -> str | None:
    """The GEMM peaks the fractions are taken of (None for results measured before they were)."""
    peaks = result.get("peaks")
    if not peaks:
        return None
    parts = []
    for precision, peak in peaks.items():
        samples = ", ".join(f"{s:.0f}" for s in peak.get("samples_gflops", []))
        parts.append(f"{precision} {peak['peak_gflops']:.0f} GFLOP/s (before / after the matrix: {samples})")
    line = (
        "Fraction of peak = counted GFLOP/image x images/s / this device's GEMM peak, measured in the same "
        "run (the better of a 2048^3 product and a ViT-shaped 3616 x 384 x 1536 one): "
        + "; ".join(parts)
        + "."
    )
    probed: dict[str, list[float]] = {}
    for r in result["rows"]:
        probed.setdefault(r.get("precision", "?"), []).extend(r.get("adjacent_peaks_gflops") or [])
    ranges = [f"{p} {min(v):.0f}-{max(v):.0f}" for p, v in probed.items() if v]
    if ranges:
        line += (
            " Fraction of the adjacent peak = each timed step's counted GFLOP/s over the mean of the "
            "ViT-shaped product's rate read just before and just after that step (median over the steps, "
            f"min-max in brackets): the probes of this run read {', '.join(ranges)} GFLOP/s; where the "
            "machine's speed drifts within a run, this is the fraction to read."
        )
    return line


def step_markdown(result: dict[str, Any]) -> str:
    head = ["task", "preset", "variant/masking", "provider", "kernels", "precision", "compile", "batch"]
    head += ["ms p20", "p50", "p80", "images/s", "GFLOP/image", "fraction of peak"]
    adjacent = any(r.get("fraction_of_adjacent_peak") for r in result["rows"])
    if adjacent:
        head.append("of adjacent peak")
    head += ["peak mem MB", "step mem MB", "first step s"]
    rounds = any(len(r.get("rounds_ms_p50") or []) > 1 for r in result["rows"])
    if rounds:  # --rounds N: the table keeps each config's fastest round; the spread says how far to trust it
        head.append("p50 of each round, ms")
    body = []
    for r in result["rows"]:
        if r.get("status") != "ok":
            continue
        task = r.get("task", "pretrain")
        kernels = r["kernels"] if r["provider"] != "plain" else "-"
        masking = r["masking"] if task == "pretrain" else "none"
        line = [task, r["preset"], f"{r['variant']}/{masking}", r["provider"], kernels, r["precision"]]
        line += ["on" if r["compile"] else "off", str(r["batch"])]
        line += [_f(r[k]) for k in ("ms_p20", "ms_p50", "ms_p80", "images_per_s")]
        line += [_f(r.get("gflop_per_image")), _fraction(r)]
        if adjacent:
            line.append(_adjacent(r))
        line += [_f(r.get("peak_mem_mb")), _f(r.get("step_mem_mb")), _f(r.get("first_step_s"))]
        if rounds:
            line.append(", ".join(_f(x) for x in r.get("rounds_ms_p50") or []))
        body.append(line)
    parts = [_header(result), "", _table(head, body)]
    peaks = peaks_line(result)
    if peaks:
        parts += ["", peaks]
    ratios = step_ratios(result)
    if ratios:
        parts += [
            "",
            "FusMAE images/s over `plain` images/s (same weights, same masks, same optimizer):",
            "",
            _table(
                ["preset", "variant/masking", "kernels", "precision", "compile", "batch", "ours / plain"],
                [
                    [
                        r["preset"],
                        f"{r['variant']}/{r['masking']}",
                        r["kernels"],
                        r["precision"],
                        "on" if r["compile"] else "off",
                        str(r["batch"]),
                        f"{r['ratio']:.2f}x"
                        + (
                            f" (unstable: {' and '.join(r['unstable'])} p80 > {UNSTABLE_SPREAD:g} x p20)"
                            if r["unstable"]
                            else ""
                        ),
                    ]
                    for r in ratios
                ],
            ),
        ]
        if any(r["unstable"] for r in ratios):
            parts += [
                "",
                f"Unstable: p80 > {UNSTABLE_SPREAD:g} x p20 over the timed steps, so no steady speed was "
                "measured and that ratio means nothing. Seen with `plain` + torch.compile + independent "
                "masking: plain's attention runs per group of samples with the same split, so its shapes "
                "change every step and torch.compile recompiles.",
            ]
    skips = [r for r in result["rows"] if r.get("status") in ("skipped", "error")]
    if skips:
        parts += ["", "Not measured:", ""]
        for r in skips:
            parts.append(
                f"- {r['preset']} {r['provider']} kernels={r['kernels']} {r['precision']} "
                f"compile={'on' if r['compile'] else 'off'}: {r['status']}: {r['reason']}"
            )
    mem = result.get("settings", {}).get("memory_method")
    parts += [
        "",
        "pretrain: one step = masking + forward + backward + AdamW step (+ zero_grad); encode: "
        "`FusMAE.encode(s1, s2)` under inference mode, both modalities, every patch. GFLOP/image: matmul, "
        "convolution and attention FLOPs counted by torch.utils.flop_counter (a step: forward + backward; "
        "the CPU flash-attention kernels, which torch gives no formula, counted with its SDPA formulas: "
        "bench/flop_count.py), i.e. the work each implementation really does; compiled rows take their "
        "eager twin's count. "
        "First step s: the first call, untimed (torch.compile compiles there; eager: allocation). "
        + (f"Memory: {mem}." if mem else ""),
    ]
    prof = result.get("profile")
    if prof:
        parts += ["", profile_markdown(prof)]
    return "\n".join(parts)


def step_parts_markdown(result: dict[str, Any], detail: bool = True) -> str:
    """The Amdahl table of ``bench/step_parts.py`` and (``detail``) per configuration its part times."""
    info = result["info"]
    lines = [
        f"Measured on {_device_text(info)}, torch {info['torch']}, "
        f"{info['threads']['intra_op']} intra-op threads, git {info['git']['sha'][:10]}, "
        f"{info['timestamp']}; "
        "fp32, eager, kernels=torch. p50 of forward + backward of each part alone (ms).",
        "",
        "| preset | masking | B | plain step | ours step | shared parts | shared / plain step | "
        "ours / plain measured | bound: plain step / shared |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['preset']} | {r['variant']}/{r['masking']} | {r['batch']} | {r['step_ms']['plain']:.1f} | "
            f"{r['step_ms']['fusmae']:.1f} | {r['shared_total_ms']:.1f} | "
            f"{100 * r['shared_fraction_of_plain']:.0f}% | {r['ratio_measured']:.2f}x | "
            f"{r['ratio_bound']:.2f}x |"
        )
    for r in result["rows"] if detail else []:
        lines += ["", f"{r['preset']}, {r['variant']}/{r['masking']}, batch {r['batch']}:", ""]
        lines += ["| part | fusmae ms | plain ms |", "|---|---|---|"]
        for name, ms in r["shared_ms"].items():
            lines.append(f"| shared: {name} | {ms:.2f} | (same code) |")
        for name, both in r["own_ms"].items():
            lines.append(f"| own: {name} | {both['fusmae']:.2f} | {both['plain']:.2f} |")
    lines += [
        "",
        "Shared parts run the same code with the same weights in both models, so however fast our own "
        "parts get, ours / plain cannot exceed the bound column (Amdahl). The bound is an estimate: parts "
        "timed alone carry their own allocator and cache costs and do not add up exactly to a step, so a "
        "bound near (or just under) the measured ratio means the shared parts are all of the step.",
    ]
    return "\n".join(lines)


def step_ceiling_markdown(result: dict[str, Any]) -> str:
    """``bench/step_ceiling.py``: per configuration the step's fraction of peak, its ceiling, and per op
    the matrix work in place and replayed alone."""
    lines = [_header(result), ""]
    head = ["preset", "precision", "batch", "step ms", "fraction of peak", "matrix ms in place",
            "matrix ms alone", "rest of the step ms", "ceiling"]  # fmt: skip
    rows = [
        [r["preset"], r["precision"], str(r["batch"]), _f(r["step_ms"]), f"{r['fraction_of_peak']:.2f}",
         _f(r["matrix_ms_in_place"]), _f(r["matrix_ms_alone"]), _f(r["rest_ms"]), f"{r['ceiling']:.2f}"]
        for r in result["rows"]
    ]  # fmt: skip
    lines.append(_table(head, rows))
    op_head = ["op", "calls", "GFLOP", "ms in place", "ms alone", "fraction of peak alone"]
    for r in result["rows"]:
        title = f"{r['preset']}, {r['precision']}, batch {r['batch']}"
        lines += ["", f"{title} (GEMM peak {r['peak_gflops']:.0f} GFLOP/s, {r['distinct_calls']} distinct "
                  "calls replayed):", ""]  # fmt: skip
        rows = [
            [f"`{name}`", str(int(op["calls"])), _f(op["gflop"]), _f(op["ms_in_place"]), _f(op["ms_alone"]),
             _f(op["fraction_of_peak_alone"], 2)]
            for name, op in r["ops"].items()
        ]  # fmt: skip
        lines.append(_table(op_head, rows))
    lines += [
        "",
        "Ceiling = the step's counted FLOPs / the time of its matrix work (matrix products and attention "
        "kernels) replayed alone, each call at its own shape, strides and dtype (best of the timed calls) "
        "/ the GEMM peak: the fraction of peak a step of this model would reach if nothing but its "
        "matrix work took time. Rest of the step = the recorded step's time - its matrix work in place. "
        "The step and the replay run minutes apart: on a shared CPU whose speed drifts, a ceiling below "
        "the step's own fraction means the machine was faster during the step than during the replay.",
    ]
    lines += [f"Skipped: {s}" for s in result.get("skips", [])]
    return "\n".join(lines)


def step_ab_markdown(result: dict[str, Any]) -> str:
    """``bench/step_ab.py``: two forms of one step alternated in pairs in one process: each side's median
    time, the A / B ratio (median, range), B's wins, the first calls, and every pair."""
    s, c, first = result["summary"], result["config"], result["first_call_s"]
    what = (
        f"{c['task']} {c['preset']} {c['precision']} batch {c['batch']}: A = {c['a']}, B = {c['b']}, "
        f"{s['pairs']} pairs alternated in one process (order swapped every pair)."
    )
    head = ["A median ms", "B median ms", "A / B median", "A / B range", "pairs B faster", "first call A s",
            "first call B s"]  # fmt: skip
    row = [_f(s["a_ms_median"]), _f(s["b_ms_median"]), f"{s['ratio_median']:.2f}",
           f"{s['ratio_min']:.2f}-{s['ratio_max']:.2f}", f"{s['b_faster_pairs']}/{s['pairs']}",
           f"{first['a']:.1f}", f"{first['b']:.1f}"]  # fmt: skip
    per_pair = ", ".join(f"{p['a'] * 1e3:.0f}/{p['b'] * 1e3:.0f}" for p in result["pairs_s"])
    lines = [_header(result), "", what, "", _table(head, [row]), "", f"A/B ms per pair: {per_pair}."]
    return "\n".join(lines)


def profile_markdown(prof: dict[str, Any]) -> str:
    """Where a step's time goes (torch.profiler, self CPU time by op), ours next to plain."""
    parts = [f"Where the time goes ({prof['what']}; torch.profiler self CPU time, top ops):", ""]
    for name, ops in prof["providers"].items():
        total = sum(o["self_ms"] for o in ops["all"])
        line = f"`{name}`: {total:.1f} ms profiled per step"
        mp = ops.get("matrix_products")
        if mp and mp["self_ms"]:
            peak = prof.get("peak_gflops")
            of_peak = f", {mp['gflops'] / peak:.2f} of the GEMM peak" if peak else ""
            line += (
                f"; its matrix products ({', '.join(f'`{o}`' for o in mp['ops'])}) take "
                f"{mp['self_ms'] / total:.0%} of it and run at {mp['gflops']:.0f} GFLOP/s in place{of_peak}"
            )
        parts += [line, ""]
        parts.append(
            _table(
                ["op", "self ms/step", "share", "calls/step"],
                [
                    [f"`{o['op']}`", _f(o["self_ms"]), f"{o['self_ms'] / total:.0%}", _f(o["calls"])]
                    for o in ops["top"]
                ],
            )
        )
        parts.append("")
    if prof.get("regions"):
        parts.append(
            "Time by model region (record_function ranges, CPU ms per step; the fwd/* regions are parts of "
            "step/forward, their backward is inside step/backward):"
        )
        parts.append("")
        names = list(prof["regions"])
        keys = list(dict.fromkeys(k for v in prof["regions"].values() for k in v))
        rows = [[k] + [_f(prof["regions"][n].get(k)) for n in names] for k in keys]
        parts.append(_table(["region"] + names, rows))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- roofline


def roofline_markdown(result: dict[str, Any], detail: bool = False) -> str:
    parts = [
        f"**GPU roofline — {ROOFLINE_LABEL}.** Predicted from the kernels' exact FLOP and byte counts and "
        f"the registers / shared memory ptxas reports for sm_86 (`{result['source']}`), with vendor peak "
        "figures; no GPU was used. " + result["assumptions"],
        "",
    ]
    head = ["GPU", "shape", "dtype", "fwd µs", "bwd µs", "fwd+bwd µs", "bound fwd / bwd kernels"]
    head += ["fwd config (model's pick)", "occupancy", "executed / useful FLOPs"]
    body = []
    for s in result["summary"]:
        line = [
            s["gpu"],
            s["shape"],
            s["dtype"],
            _f(s["fwd_us"]),
            _f(s["bwd_us"]),
            _f(s["fwd_us"] + s["bwd_us"]),
        ]
        line += [f"{s['fwd_bound']} / {s['bwd_bound']}", s["fwd_config"], f"{s['fwd_occupancy']:.0%}"]
        line.append(f"{s['executed_fwd_flops'] / s['useful_fwd_flops']:.2f}")
        body.append(line)
    parts.append(_table(head, body))
    if detail:
        parts += ["", "Per kernel and config (" + ROOFLINE_LABEL + "):", ""]
        head = [
            "GPU",
            "shape",
            "kernel",
            "config",
            "regs",
            "smem B",
            "blocks/SM",
            "occupancy",
            "waves",
            "exec GFLOP",
            "MB",
            "µs compute",
            "µs memory",
            "µs predicted",
            "bound",
        ]
        body = [
            [
                r["gpu"],
                r["shape"],
                r["kernel"],
                r["config"],
                str(r["regs"]),
                str(r["smem"]),
                str(r["blocks_per_sm"]),
                f"{r['occupancy']:.0%}",
                _f(r["waves"]),
                _f(r["executed_flops"] / 1e9),
                _f(r["bytes"] / 1e6),
                _f(r["t_compute_us"]),
                _f(r["t_memory_us"]),
                _f(r["t_pred_us"]),
                r["bound"],
            ]
            for r in result["rows"]
        ]
        parts.append(_table(head, body))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- docs/benchmarks.md, README

PAGE = devices.REPO / "docs" / "benchmarks.md"
"""The generated page of every benchmark table."""
README = devices.REPO / "README.md"
"""The README whose summary block ``report.py`` rewrites."""
SUMMARY_BEGIN = "<!-- begin: summary generated by `python bench/report.py`; do not edit by hand -->"
SUMMARY_END = "<!-- end: summary generated by `python bench/report.py` -->"
BENCHMARK_COMMANDS = (
    "`python bench/xattn.py [--quick]`, `python bench/step.py [--quick]`, "
    "`python bench/step.py --presets tiny,small --masking independent --precision fp32 --compile off "
    "--out-dir bench/results/independent`, "
    "`python bench/step.py --presets small,base --tasks pretrain --precision fp32,bf16 --compile off "
    "--rounds 3 --steps 4 --warmup 1 --out-dir bench/results/rounds`, "
    "on a CPU without native bf16 `python bench/step.py --precision fp32 --compile off,on --steps 6 "
    "--warmup 3 --profile small --out-dir bench/results/avx2`, `python bench/xattn.py --quick "
    "--dtype fp32 --rounds 4 --out-dir bench/results/avx2` and `python bench/step_ceiling.py "
    "--precision fp32 --out-dir bench/results/avx2`, "
    "on a CPU with AMX `python bench/step.py --presets small,base --tasks pretrain,encode --precision "
    "fp32,bf16 --compile off --steps 4 --warmup 1 --out-dir bench/results/amx` and `python "
    "bench/step_ceiling.py --presets small,base --precision bf16 --out-dir bench/results/amx`, "
    "`python bench/step_parts.py`, `python bench/step_ceiling.py --presets small,base`, "
    "`python bench/data_read.py`, `python bench/embed.py`, "
    "`python bench/roofline.py`"
)


def _timestamp(data: dict[str, Any]) -> str:
    """When a result was measured (``data_read`` keeps its run header under ``run``)."""
    return (data.get("info") or data.get("run") or {}).get("timestamp", "")


def _results(benchmark: str, folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``<folder>/<benchmark>_*.json`` whose JSON says it is ``benchmark`` (``step_*`` also
    matches ``step_parts_*``), oldest first."""
    found = []
    for path in folder.glob(f"{benchmark}_*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"warning: cannot read {path}: {exc}", file=sys.stderr)
            continue
        if data.get("benchmark") == benchmark:
            found.append((path, data))
    return sorted(found, key=lambda pd: _timestamp(pd[1]))


def _newest(benchmark: str, prefer_full: bool, folder: Path | None = None):
    """The newest result of ``benchmark`` in ``folder`` (default bench/results; with ``prefer_full``:
    the newest full run if there is one), as (path, data), or None."""
    found = _results(benchmark, folder or devices.RESULTS)
    if prefer_full:
        found.sort(key=lambda pd: not pd[1].get("quick"))  # stable: full runs last, each group by time
    return found[-1] if found else None


def _xattn_section(data: dict[str, Any], rel: Path) -> str:
    """The pivot table, and the plot ``bench/xattn.py`` drew beside the JSON when there is one."""
    text = xattn_pivot_markdown(data, details=str(rel.with_suffix(".md")))
    png = rel.with_suffix(".png")
    if (devices.REPO / png).exists():
        text += f"\n\n![p50 per provider, {data['info']['device_name']}](../{png})"
    return text


def _data_read_markdown(data: dict[str, Any], rel: Path) -> str:
    from fusmae_fast.bench.data_read import markdown

    return markdown(data)


def _embed_markdown(data: dict[str, Any], rel: Path) -> str:
    """The table ``bench/embed.py`` prints, and what its images/s count."""
    from fusmae_fast.bench.embed import markdown

    text = markdown(data)
    if data.get("notes"):
        text += f"\n\n{data['notes']}."
    return text


@dataclass(frozen=True)
class PageSection:
    """One measured section of docs/benchmarks.md."""

    title: str
    """Its heading; says "(measured)"."""
    benchmark: str
    """The ``benchmark`` field of its result files, which are named ``<benchmark>_*.json``."""
    render: Callable[[dict[str, Any], Path], str]
    """(result, its path relative to the repository) -> markdown."""
    folder: str = ""
    """Sub-folder of bench/results holding the result files ('' = bench/results itself)."""
    every: bool = False
    """Show every result file (each is another configuration), not only the newest."""


def _step_section(data: dict[str, Any], rel: Path) -> str:
    return step_markdown(data)


def _step_ceiling_section(data: dict[str, Any], rel: Path) -> str:
    return step_ceiling_markdown(data)


PAGE_SECTIONS: tuple[PageSection, ...] = (
    PageSection("Eq. 2 cross-modal attention (measured)", "xattn", _xattn_section),
    PageSection("Whole pretraining step (measured)", "step", _step_section),
    PageSection(
        "Whole pretraining step and encode on a CPU with AMX, with the fraction of the adjacent peak "
        "(measured)",
        "step",
        _step_section,
        folder="amx",
    ),
    PageSection(
        "A bf16 step's ceiling on a CPU with AMX: its matrix work replayed alone (measured)",
        "step_ceiling",
        _step_ceiling_section,
        folder="amx",
    ),
    PageSection(
        "Whole pretraining step, small and base, 3 interleaved rounds (measured)",
        "step",
        _step_section,
        folder="rounds",
    ),
    PageSection(
        "Whole pretraining step, independent masking (measured)",
        "step",
        _step_section,
        folder="independent",
    ),
    PageSection(
        "Whole pretraining step on a CPU without native bf16 (AVX2), fp32 (measured)",
        "step",
        _step_section,
        folder="avx2",
    ),
    PageSection(
        "Eq. 2 cross-modal attention on a CPU without native bf16 (AVX2), fp32 (measured)",
        "xattn",
        _xattn_section,
        folder="avx2",
    ),
    PageSection(
        "Where a step's time goes: the most fusion can gain (measured)",
        "step_parts",
        lambda data, rel: step_parts_markdown(data, detail=True),
    ),
    PageSection(
        "A step's ceiling: its matrix work replayed alone (measured)",
        "step_ceiling",
        _step_ceiling_section,
    ),
    PageSection(
        "Reading data: GeoTIFF folders and the packed store (measured)",
        "data_read",
        _data_read_markdown,
        every=True,
    ),
    PageSection(
        "Embedding export: `fusmae-fast embed` (measured)",
        "embed",
        _embed_markdown,
        every=True,
    ),
)
"""The measured sections of docs/benchmarks.md, in page order."""


def _command(prefer_full: bool) -> str:
    return "python bench/report.py" + (" --prefer-full" if prefer_full else "")


def benchmarks_page(prefer_full: bool = False) -> str:
    """docs/benchmarks.md: every measured table (newest results) and the GPU roofline model."""
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `{_command(prefer_full)}` from the result files in `bench/results/`; do not edit "
        "by hand. To refresh it, run the benchmarks (" + BENCHMARK_COMMANDS + "), then that command "
        "(`--prefer-full`: full runs over newer `--quick` ones). What each benchmark measures and how: "
        "`bench/README.md`; what the targets are: [design.md §6](design.md#6-what-fast-means).",
        "",
        "Every measured table names the device it ran on; the GPU roofline is a model, not a measurement.",
    ]
    for section in PAGE_SECTIONS:
        folder = devices.RESULTS / section.folder
        if section.every:
            shown = _results(section.benchmark, folder)
        else:
            newest = _newest(section.benchmark, prefer_full, folder)
            shown = [newest] if newest is not None else []
        parts += ["", f"## {section.title}"]
        if not shown:
            looked = (folder / f"{section.benchmark}_*.json").relative_to(devices.REPO)
            parts += ["", f"(no results yet: run the benchmark; looked for {looked})"]
        for path, data in shown:
            rel = path.relative_to(devices.REPO)
            parts += ["", f"From `{rel}`.", "", section.render(data, rel)]
    parts += ["", f"## GPU roofline ({ROOFLINE_LABEL})", ""]
    roof = devices.RESULTS / "roofline.json"
    if roof.exists():
        parts.append(roofline_markdown(json.loads(roof.read_text())))
        parts += ["", "Per kernel and config: `bench/results/roofline.md`."]
    else:
        parts.append("(no roofline yet: run `python bench/roofline.py`)")
    return "\n".join(parts) + "\n"


def _source(path: Path, data: dict[str, Any]) -> str:
    """`bench/results/x.json` (timestamp, git sha): where a summary row comes from."""
    info = data["info"]
    sha = ((info.get("git") or {}).get("sha") or "unknown")[:10]
    return f"`{path.relative_to(devices.REPO)}` ({info['timestamp']}, git {sha})"


def readme_summary(prefer_full: bool = False) -> str:
    """The README's one measured table: step throughput of FusMAE and `plain` per preset, masking,
    precision and compile setting, the fraction of the GEMM peak each reaches, their ratio and, for
    eager fp32 steps, Amdahl's bound from ``step_parts`` (which is measured in fp32)."""
    step = _newest("step", prefer_full)
    if step is None:
        return "(no step results yet: run `python bench/step.py`)"
    info = step[1]["info"]
    sources = [step]
    indep = _newest("step", prefer_full, devices.RESULTS / "independent")
    parts_run = _newest("step_parts", prefer_full)
    for extra in (indep, parts_run):
        same_device = extra is not None and extra[1]["info"]["device_name"] == info["device_name"]
        if same_device and extra[1]["info"]["device"] == info["device"]:
            sources.append(extra)
    bounds = {}
    if parts_run in sources:
        for r in parts_run[1]["rows"]:
            bounds[(r["preset"], r["variant"], r["masking"], r["batch"])] = r["ratio_bound"]
    rows = []
    for _, data in [s for s in sources if s is not parts_run]:
        for ours, plain in step_pairs(data):
            ratio = f"{ours['images_per_s'] / plain['images_per_s']:.2f}x"
            unstable = [name for name, row in (("ours", ours), ("plain", plain)) if _unstable(row)]
            if unstable:
                ratio += f" (unstable: {' and '.join(unstable)} p80 > {UNSTABLE_SPREAD:g} x p20)"
            eager_fp32 = not ours["compile"] and ours["precision"] == "fp32"
            bound = bounds.get(tuple(ours[k] for k in STEP_PARTS_KEY)) if eager_fp32 else None
            rows.append(
                [
                    ours["preset"],
                    f"{ours['variant']}/{ours['masking']}",
                    ours["precision"],
                    "on" if ours["compile"] else "off",
                    str(ours["batch"]),
                    _f(ours["images_per_s"]),
                    _f(plain["images_per_s"]),
                    _fraction(ours),
                    _fraction(plain),
                    _adjacent(ours),
                    ratio,
                    "-" if bound is None else f"{bound:.2f}x",
                ]
            )
    rows.sort(key=lambda r: (PRESET_ORDER.get(r[0], len(PRESET_ORDER)), r[1], r[2] != "fp32", r[3] == "on"))
    head = ["preset", "variant/masking", "precision", "compile", "batch", "images/s ours", "images/s plain"]
    head += ["fraction of peak ours", "plain", "of adjacent peak ours", "ours / plain", "bound (eager fp32)"]
    col = head.index("of adjacent peak ours")
    if all(r[col] == "-" for r in rows):  # measured before the probes existed
        head.pop(col)
        rows = [r[:col] + r[col + 1 :] for r in rows]
    th = info.get("threads") or {}
    lines = [
        f"Pretraining step, kernels=torch, measured on **{info['device_name']}** ({info['device']}), "
        f"torch {info['torch']}, {th.get('intra_op', '?')} intra-op threads; from "
        + ", ".join(_source(path, data) for path, data in sources)
        + ".",
        "",
        _table(head, rows),
    ]
    peaks = peaks_line(step[1])
    if peaks:
        lines += ["", peaks]
    return "\n".join(lines)


def replace_summary(readme: str, summary: str) -> str:
    """``readme`` with the text between the summary markers replaced by ``summary``."""
    begin, end = readme.find(SUMMARY_BEGIN), readme.find(SUMMARY_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"the README has no summary block: add the lines\n{SUMMARY_BEGIN}\n{SUMMARY_END}")
    return readme[: begin + len(SUMMARY_BEGIN)] + "\n" + summary + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/report.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(PAGE), help="the benchmarks page to write (docs/benchmarks.md)")
    p.add_argument(
        "--readme", default=str(README), help="README whose summary block is rewritten ('' : leave it)"
    )
    p.add_argument("--prefer-full", action="store_true", help="prefer full runs over newer --quick runs")
    args = p.parse_args(argv)
    page = benchmarks_page(args.prefer_full)
    atomic_write_text(Path(args.out), page)
    print(page)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.readme:
        readme = Path(args.readme)
        atomic_write_text(readme, replace_summary(readme.read_text(), readme_summary(args.prefer_full)))
        print(f"rewrote the summary table in {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
