"""Evaluation metrics, with scikit-learn's definitions (tests compare against sklearn).

- ``average_precision``: sklearn's ``average_precision_score`` for one binary problem:
  AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds (no interpolation). A class with
  no positive gets AP 0 (sklearn warns and returns 0 as well).
- ``multilabel_map``: macro (mean of the per-class APs, every class counted) and micro (AP of all
  (sample, class) pairs pooled) average precision, plus the per-class APs. BigEarthNet papers report
  both; DINO-MM/DeCUR report micro.
- ``classification_report``: top-1 and top-3 accuracy, and support-weighted precision, recall and F1
  (sklearn's ``average="weighted"`` with ``zero_division=0``).
"""

from __future__ import annotations

import numpy as np


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """AP of one binary problem; y_true in {0, 1}, y_score real, both 1-d of the same length."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score differ in shape: {y_true.shape} vs {y_score.shape}")
    if y_true.size == 0:
        raise ValueError("average_precision of an empty set")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("y_score holds NaN/Inf")
    order = np.argsort(-y_score, kind="mergesort")
    y = y_true[order]
    s = y_score[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    if tps[-1] == 0:
        return 0.0
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def multilabel_map(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, object]:
    """Macro and micro mAP and per-class AP of (n_samples, n_classes) arrays."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(
            f"expected two (n, classes) arrays of one shape, got {y_true.shape} and {y_score.shape}"
        )
    per_class = [average_precision(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])]
    return {
        "map_macro": float(np.mean(per_class)),
        "map_micro": average_precision(y_true.ravel(), y_score.ravel()),
        "ap_per_class": per_class,
    }


def classification_report(y_true: np.ndarray, logits: np.ndarray, num_classes: int) -> dict[str, float]:
    """Top-1/top-3 accuracy and weighted precision/recall/F1 of single-label predictions."""
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (y_true.size, num_classes):
        raise ValueError(f"logits must be ({y_true.size}, {num_classes}), got {logits.shape}")
    ranked = np.argsort(-logits, axis=1, kind="mergesort")
    pred = ranked[:, 0]
    top3 = np.any(ranked[:, : min(3, num_classes)] == y_true[:, None], axis=1)
    support = np.bincount(y_true, minlength=num_classes).astype(np.float64)
    predicted = np.bincount(pred, minlength=num_classes).astype(np.float64)
    correct = np.bincount(y_true[pred == y_true], minlength=num_classes).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, correct / predicted, 0.0)
        recall = np.where(support > 0, correct / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    weights = support / max(support.sum(), 1.0)
    return {
        "top1": float(np.mean(pred == y_true)),
        "top3": float(np.mean(top3)),
        "precision_weighted": float(np.sum(weights * precision)),
        "recall_weighted": float(np.sum(weights * recall)),
        "f1_weighted": float(np.sum(weights * f1)),
    }
