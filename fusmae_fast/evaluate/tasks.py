"""What differs between the tasks: labels, loss, metrics, the built-in sample.

BigEarthNet (``linear``, ``finetune``): 19-class multi-hot labels, MultiLabelSoftMarginLoss, macro and
micro mAP (paper Table 1). SEN12MS transfer (``sen12ms``, a linear probe): one simplified-IGBP class
of 10 per sample, cross-entropy with label smoothing, top-1/top-3 accuracy and weighted
precision/recall/F1 (paper Table 2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fusmae_fast.data.labels import BEN19_NAMES, SIMPLIFIED_IGBP_NAMES
from fusmae_fast.metrics import classification_report, multilabel_map


def num_classes(task: str) -> int:
    return len(SIMPLIFIED_IGBP_NAMES) if task == "sen12ms" else len(BEN19_NAMES)


def uses_linear_probe(task: str) -> bool:
    """The protocol of the task: a linear head on frozen features, or fine-tuning of the encoder."""
    return task in ("linear", "sen12ms")


def open_task_dataset(path: str | None, split: str, task: str, image_size: int) -> Dataset:
    """The dataset at ``path``; without a path the built-in sample of the task's kind (BigEarthNet-style,
    or SEN12MS-style for ``sen12ms``). Images are brought to the model's ``image_size``."""
    from fusmae_fast.data import open_dataset

    if path is None and task == "sen12ms":
        path = "sample:sen12ms"
    return open_dataset(path, split=split, image_size=image_size)


def check_task_fits(task: str, dataset: Dataset, path: str | None) -> None:
    """A ValueError saying which task fits when ``dataset``'s kind (BigEarthNet or SEN12MS) is not
    the task's (datasets that do not say their kind pass)."""
    kind = getattr(getattr(dataset, "info", None), "kind", None)
    wanted = "sen12ms" if task == "sen12ms" else "bigearthnet"
    if kind is None or kind == wanted:
        return
    where = path or "the built-in sample"
    if task == "sen12ms":
        raise ValueError(
            f"eval sen12ms needs SEN12MS data (10 simplified-IGBP classes); {where} holds {kind} patches: "
            "use eval linear or eval finetune"
        )
    raise ValueError(
        f"eval {task} needs BigEarthNet data (19 classes); {where} holds {kind} patches: use eval sen12ms"
    )


def label_target(label: torch.Tensor, task: str) -> torch.Tensor:
    """A batch of labels as the loss wants them: (B, 19) float, or (B,) class ids for SEN12MS
    (given as ids, or as (B, 10) one-hot/histograms whose argmax is taken)."""
    label = torch.as_tensor(label)
    if task == "sen12ms":
        return label.argmax(-1) if label.dim() == 2 else label.long().reshape(-1)
    return label.float()


def loss_fn(task: str, label_smoothing: float) -> nn.Module:
    return (
        nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        if task == "sen12ms"
        else nn.MultiLabelSoftMarginLoss()
    )


def score(task: str, logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, Any]:
    if task == "sen12ms":
        return classification_report(targets.numpy(), logits.numpy(), num_classes)
    return multilabel_map(targets.numpy(), logits.numpy())


def headline(task: str, m: dict[str, Any]) -> str:
    """The one-line summary of a result printed as it is computed."""
    if task == "sen12ms":
        return f"top-1 {100 * m['top1']:.2f}  top-3 {100 * m['top3']:.2f}  F1 {100 * m['f1_weighted']:.2f}"
    return f"mAP macro {100 * m['map_macro']:.2f}  micro {100 * m['map_micro']:.2f}"
