"""``results.md``: every ``metrics_<task>.json`` of an output folder as the paper's tables.

BigEarthNet tasks (fine-tune, linear) share one Table 1-shaped table, mAP % macro (micro), one column
per task and input; SEN12MS gets the Table 2 shape (top-1, top-3, weighted precision, recall, F1).
The AP-per-class figure is ``fusmae_fast.plots.plot_ap_per_class``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.evaluate.config import INPUTS, TASKS


def write_results_md(out_dir: str | os.PathLike[str]) -> Path:
    """Render every metrics_<task>.json in ``out_dir`` as the paper's Table 1 / Table 2 shapes."""
    out_dir = Path(out_dir)
    tables = {
        t: json.loads((out_dir / f"metrics_{t}.json").read_text())
        for t in TASKS
        if (out_dir / f"metrics_{t}.json").is_file()
    }
    lines = ["# Fus-MAE evaluation", ""]
    ben = [t for t in ("finetune", "linear") if t in tables]
    if ben:
        lines += bigearthnet_table(tables, ben)
    if "sen12ms" in tables:
        lines += sen12ms_table(tables["sen12ms"])
    path = out_dir / "results.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def bigearthnet_table(tables: dict[str, dict[str, Any]], tasks: list[str]) -> list[str]:
    """Table 1 shape: a row per model, a column per (task, input), and a line per task on its data."""
    lines = ["## BigEarthNet-MM, mAP % macro (micro) — Table 1 shape", ""]
    models = list(dict.fromkeys(m for t in tasks for m in tables[t]["results"]))
    header = ["Model"]
    for t in tasks:
        frac = tables[t]["train_labels_used"] / max(1, tables[t]["train_size"])
        label = "Fine-tune" if t == "finetune" else f"Linear ({100 * frac:.3g}% labels)"
        header += [f"{label} {i.upper()}" for i in INPUTS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        cells = [m]
        for t in tasks:
            for i in INPUTS:
                r = tables[t]["results"].get(m, {}).get(i)
                cells.append(f"{100 * r['map_macro']:.2f} ({100 * r['map_micro']:.2f})" if r else "—")
        lines.append("| " + " | ".join(cells) + " |")
    for t in tasks:
        lines.append("")
        lines.append(
            f"{t}: {tables[t]['train_labels_used']} of {tables[t]['train_size']} training labels, "
            f"{tables[t]['test_size']} test samples, "
            f"{tables[t]['wall_seconds']:.1f} s on {tables[t]['device']}."
        )
    lines.append("")
    return lines


def sen12ms_table(t: dict[str, Any]) -> list[str]:
    """Table 2 shape: a row per (model, input), then a line on the data."""
    lines = ["## SEN12MS linear evaluation — Table 2 shape (%)", ""]
    lines += [
        "| Model | Inputs | Top-1 | Top-3 | Precision | Recall | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, per in t["results"].items():
        for i, r in per.items():
            lines.append(
                f"| {m} | {i.upper()} | {100 * r['top1']:.2f} | {100 * r['top3']:.2f} | "
                f"{100 * r['precision_weighted']:.2f} | {100 * r['recall_weighted']:.2f} | "
                f"{100 * r['f1_weighted']:.2f} |"
            )
    lines += [
        "",
        f"{t['train_labels_used']} training labels, {t['test_size']} test samples, "
        f"{t['wall_seconds']:.1f} s on {t['device']}.",
        "",
    ]
    return lines
