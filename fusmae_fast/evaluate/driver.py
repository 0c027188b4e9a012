"""``run_evaluation``: the models, the datasets, the labelled subset, each protocol per input, outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.config import ModelConfig
from fusmae_fast.device import resolve_device, resolve_precision
from fusmae_fast.evaluate.config import EvalConfig
from fusmae_fast.evaluate.encoder import load_model
from fusmae_fast.evaluate.finetune import finetune, predict
from fusmae_fast.evaluate.linear import extract_features, train_linear_head
from fusmae_fast.evaluate.report import write_results_md
from fusmae_fast.evaluate.tasks import (
    check_task_fits,
    headline,
    num_classes,
    open_task_dataset,
    score,
    uses_linear_probe,
)
from fusmae_fast.model import FusMAE
from fusmae_fast.plots import plot_ap_per_class


def run_evaluation(
    cfg: EvalConfig, *, train_set: Dataset | None = None, test_set: Dataset | None = None
) -> dict[str, Any]:
    """Evaluate the checkpoint (and the random baseline) on every requested input; write the outputs."""
    device = resolve_device(cfg.device, cfg.kernels)
    resolve_precision(cfg.precision, device)  # warns where bf16 / fp16 would run emulated
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    classes = num_classes(cfg.task)
    models = models_to_evaluate(cfg)
    image_size = models[0][1].config.img_size
    if train_set is None:
        train_set = open_task_dataset(cfg.data, "train", cfg.task, image_size)
    if test_set is None:
        test_set = open_task_dataset(cfg.data, "test", cfg.task, image_size)
    check_task_fits(cfg.task, train_set, cfg.data)
    train_sub = labelled_subset(train_set, cfg, out_dir)

    rows: dict[str, dict[str, Any]] = {}
    for name, model in models:
        model = model.to(device).set_kernels(cfg.kernels)
        rows[name] = {}
        for inputs in cfg.inputs:
            metrics = evaluate_inputs(model, train_sub, test_set, inputs, classes, cfg, device)
            rows[name][inputs] = metrics
            print(f"[fusmae-fast] {cfg.task} {name} {inputs}: {headline(cfg.task, metrics)}", file=sys.stderr)

    result = {
        "task": cfg.task,
        "config": dataclasses.asdict(cfg),
        "train_size": len(train_set),  # type: ignore[arg-type]
        "train_labels_used": len(train_sub),
        "test_size": len(test_set),  # type: ignore[arg-type]
        "device": str(device),
        "wall_seconds": time.perf_counter() - t_start,
        "results": rows,
    }
    atomic_write_text(out_dir / f"metrics_{cfg.task}.json", json.dumps(result, indent=1))
    write_results_md(out_dir)
    if cfg.task != "sen12ms":
        plot_ap_per_class(result, out_dir / f"ap_per_class_{cfg.task}.png")
    return result


def models_to_evaluate(cfg: EvalConfig) -> list[tuple[str, FusMAE]]:
    """(name, model): the checkpoint's (named after its file or folder), then the random baseline's
    (the checkpoint's architecture, else ``cfg.preset``; seeded)."""
    models: list[tuple[str, FusMAE]] = []
    if cfg.ckpt is not None:
        ckpt = Path(cfg.ckpt)
        models.append((ckpt.name if ckpt.is_dir() else ckpt.stem, load_model(cfg.ckpt)))
    if cfg.baseline == "random":
        arch = models[0][1].config if models else ModelConfig.from_name(cfg.preset)
        torch.manual_seed(cfg.seed + 12345)
        models.append(("random-init", FusMAE(arch)))
    return models


def evaluate_inputs(
    model: FusMAE,
    train_sub: Dataset,
    test_set: Dataset,
    inputs: str,
    classes: int,
    cfg: EvalConfig,
    device: torch.device,
) -> dict[str, Any]:
    """The task's protocol on one input ('s1', 's2' or 's1+s2'): its metrics and wall times."""
    t0 = time.perf_counter()
    if uses_linear_probe(cfg.task):
        tx, ty = extract_features(model, train_sub, inputs, cfg, device)
        vx, vy = extract_features(model, test_set, inputs, cfg, device)
        t_feat = time.perf_counter() - t0
        head = train_linear_head(tx, ty, classes, cfg)
        with torch.no_grad():
            logits = head(vx)
        metrics = score(cfg.task, logits, vy, classes)
        metrics["feature_seconds"] = t_feat
    else:
        clf = finetune(model, train_sub, classes, inputs, cfg, device)
        logits, vy = predict(clf, test_set, inputs, cfg, device)
        metrics = score(cfg.task, logits, vy, classes)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


# ---------------------------------------------------------------------------- labelled subset
def labelled_subset(train_set: Dataset, cfg: EvalConfig, out_dir: Path) -> Subset:
    """The training samples whose labels are used (``subset_<task>.txt`` lists their names)."""
    labels = dataset_labels(train_set, cfg.task)
    subset = stratified_subset(labels, cfg.setting("label_fraction"), cfg.seed)
    names = getattr(train_set, "names", None)
    subset_lines = [str(names[i]) if names is not None else str(int(i)) for i in subset]
    atomic_write_text(out_dir / f"subset_{cfg.task}.txt", "\n".join(subset_lines) + "\n")
    return Subset(train_set, subset.tolist())


def dataset_labels(ds: Dataset, task: str) -> np.ndarray:
    """All labels of a dataset, from its ``labels`` attribute when it has one (no image reads)."""
    labels = getattr(ds, "labels", None)
    if labels is None:
        labels = np.stack([np.asarray(ds[i]["label"]) for i in range(len(ds))])  # type: ignore[arg-type]
    labels = np.asarray(labels)
    if task == "sen12ms" and labels.ndim == 2:
        labels = labels.argmax(1)
    return labels


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded, greedy rarest-class-first stratified subset of ceil(fraction * n) sample indices.

    labels: (n, classes) multi-hot, or (n,) class ids. Classes are visited from the rarest; each gets
    about ``fraction`` of its samples (at least one) while the budget lasts; the rest of the budget is
    filled at random. The same (labels, fraction, seed) always give the same subset (sorted indices).
    """
    n = labels.shape[0]
    if labels.ndim == 1:
        classes = int(labels.max()) + 1 if n else 0
        onehot = np.zeros((n, classes), dtype=bool)
        onehot[np.arange(n), labels.astype(np.int64)] = True
    else:
        onehot = labels.astype(bool)
    budget = min(n, max(1, math.ceil(fraction * n)))
    if budget >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    chosen = np.zeros(n, dtype=bool)
    counts = onehot.sum(0)
    for c in np.argsort(counts, kind="stable"):
        if counts[c] == 0:
            continue
        want = max(1, round(fraction * counts[c]))
        have = int((chosen & onehot[:, c]).sum())
        for i in order[onehot[order, c] & ~chosen[order]]:
            if have >= want or chosen.sum() >= budget:
                break
            chosen[i] = True
            have += 1
    rest = order[~chosen[order]][: budget - int(chosen.sum())]
    chosen[rest] = True
    return np.nonzero(chosen)[0]
