"""Downstream evaluation as in the paper (§4, SPEC §4): linear probe, fine-tuning, SEN12MS transfer.

    fusmae-fast eval linear   --ckpt RUN/encoder.safetensors --data BEN --inputs s1 s2 s1+s2 --baseline random
    fusmae-fast eval finetune --ckpt RUN --data BEN
    fusmae-fast eval sen12ms  --ckpt RUN --data SEN12MS

Protocols
    linear:   encoder and patch projections frozen; features (CLS token, or the mean of the patch tokens
              with ``--pool mean``) are computed once and cached in memory, then a linear head (after a
              non-affine BatchNorm, as MAE's linear probe) is trained for 20 epochs, batch 128, AdamW,
              MultiLabelSoftMarginLoss, on a stratified, seeded 1% subset of the training labels
              (``--label-fraction``; the chosen names are written to ``subset_<task>.txt``).
    finetune: whole encoder trainable, 100% labels, 10 epochs, AdamW with warm-up + cosine,
              MultiLabelSoftMarginLoss, optional layer-wise lr decay (``--layer_decay``).
    sen12ms:  linear probe, 10 epochs, cross-entropy with label smoothing 0.1, simplified IGBP (10).
Inputs: ``s1``, ``s2`` or ``s1+s2``; a single modality uses the model's missing-modality handling
(the absent modality's tokens are not fed; see ``model.py``).
Outputs in ``--out``: ``metrics_<task>.json`` per task, ``results.md`` rendering every task present
(paper's Table 1 and Table 2 shapes), ``ap_per_class_<task>.png``, the label subsets, wall times.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from fusmae_fast.checkpoint import atomic_write_text, latest_valid, load_checkpoint, load_encoder
from fusmae_fast.config import KERNELS, ModelConfig
from fusmae_fast.metrics import classification_report, multilabel_map
from fusmae_fast.model import FusMAE

TASKS = ("linear", "finetune", "sen12ms")
INPUTS = ("s1", "s2", "s1+s2")
BEN19_NAMES = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops", "Pastures",
    "Complex cultivation patterns", "Land principally occupied by agriculture, with significant areas of "
    "natural vegetation", "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas", "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub", "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands",
    "Inland waters", "Marine waters",
)  # fmt: skip
IGBP10_NAMES = (
    "Forest", "Shrubland", "Savanna", "Grassland", "Wetlands", "Croplands", "Urban", "Snow/Ice", "Barren",
    "Water",
)  # fmt: skip
DEFAULTS = {
    "linear": dict(epochs=20, label_fraction=0.01, lr=1e-3, weight_decay=0.0),
    "finetune": dict(epochs=10, label_fraction=1.0, lr=1e-4, weight_decay=0.05),
    "sen12ms": dict(epochs=10, label_fraction=1.0, lr=1e-3, weight_decay=0.0),
}


@dataclass
class EvalConfig:
    """One evaluation run: a task, one checkpoint (plus an optional random-init baseline), some inputs."""

    task: str = "linear"
    """'linear', 'finetune' or 'sen12ms'."""
    ckpt: str | None = None
    """encoder.safetensors, a training checkpoint (.pt) or a run folder; None only with baseline='random'."""
    data: str | None = None
    """Dataset root or packed store (None: the built-in synthetic sample)."""
    inputs: tuple[str, ...] = INPUTS
    """Input modalities to evaluate: any of 's1', 's2', 's1+s2'."""
    output_dir: str = "runs/eval"
    """Where metrics_<task>.json, results.md and the figures go (shared by several tasks)."""
    baseline: str | None = None
    """'random': also evaluate a randomly initialised encoder of the same architecture."""
    preset: str = "tiny"
    """Architecture of the random baseline when no checkpoint is given."""
    label_fraction: float | None = None
    """Fraction of training labels (default: linear 0.01, finetune and sen12ms 1.0)."""
    epochs: int | None = None
    """Training epochs (default: linear 20, finetune 10, sen12ms 10)."""
    batch_size: int = 128
    """Batch size for training and feature extraction."""
    lr: float | None = None
    """Peak learning rate (default: 1e-3 for the probes, 1e-4 for fine-tuning)."""
    weight_decay: float | None = None
    """AdamW weight decay (default: 0 for the probes, 0.05 for fine-tuning)."""
    layer_decay: float | None = None
    """Fine-tuning: layer-wise lr decay factor (e.g. 0.75); None = off."""
    pool: str = "cls"
    """Feature: 'cls' token or 'mean' of the patch tokens."""
    label_smoothing: float = 0.1
    """SEN12MS cross-entropy label smoothing."""
    kernels: str = "torch"
    """Op backend of the encoder."""
    precision: str = "fp32"
    """'fp32', 'bf16' or 'fp16' autocast for the encoder."""
    seed: int = 0
    """Subset selection, head initialisation and shuffling."""
    num_workers: int = 2
    """DataLoader workers."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""
    progress: bool = True
    """tqdm progress bars on a TTY."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"EvalConfig.task must be one of {TASKS}, got {self.task!r}")
        self.inputs = tuple(self.inputs)
        bad = [i for i in self.inputs if i not in INPUTS]
        if bad or not self.inputs:
            raise ValueError(f"EvalConfig.inputs must be a non-empty subset of {INPUTS}, got {self.inputs}")
        if self.ckpt is None and self.baseline is None:
            raise ValueError("give --ckpt, or --baseline random (or both)")
        if self.baseline not in (None, "random"):
            raise ValueError(f"EvalConfig.baseline must be None or 'random', got {self.baseline!r}")
        if self.label_fraction is not None and not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"EvalConfig.label_fraction must lie in (0, 1], got {self.label_fraction}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("EvalConfig.epochs must be >= 1")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"EvalConfig.pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.kernels not in KERNELS:
            raise ValueError(f"EvalConfig.kernels must be one of {KERNELS}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"EvalConfig.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError("EvalConfig.layer_decay must lie in (0, 1]")
        if self.batch_size < 1:
            raise ValueError("EvalConfig.batch_size must be >= 1")

    def setting(self, name: str) -> Any:
        value = getattr(self, name)
        return DEFAULTS[self.task][name] if value is None else value


# ------------------------------------------------------------------------------------ loading
def load_model(
    ckpt: str | os.PathLike[str], map_location: str | torch.device = "cpu", **overrides: Any
) -> FusMAE:
    """A FusMAE from encoder.safetensors, a training checkpoint (.pt) or a run folder."""
    path = Path(ckpt)
    if path.is_dir():
        if (path / "encoder.safetensors").is_file():
            path = path / "encoder.safetensors"
        else:
            found = latest_valid(path / "checkpoints")
            if found is None:
                raise FileNotFoundError(f"{ckpt}: no encoder.safetensors and no valid checkpoint inside")
            path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint or encoder at {path}")
    if path.suffix == ".safetensors":
        return load_encoder(path, map_location, **overrides)
    state = load_checkpoint(path, map_location)
    model = FusMAE(ModelConfig.from_dict({**state["model_config"], **overrides}))
    model.load_state_dict(state["model"])
    return model


def _label_target(label: torch.Tensor, task: str) -> torch.Tensor:
    """A batch of labels as the loss wants them: (B, 19) float, or (B,) class ids for SEN12MS
    (given as ids, or as (B, 10) one-hot/histograms whose argmax is taken)."""
    label = torch.as_tensor(label)
    if task == "sen12ms":
        return label.argmax(-1) if label.dim() == 2 else label.long().reshape(-1)
    return label.float()


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


# ----------------------------------------------------------------------------------- features
def _autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _modalities(batch: dict[str, Any], inputs: str, device: torch.device):
    s1 = batch["s1"].to(device).float() if "s1" in inputs.split("+") else None
    s2 = batch["s2"].to(device).float() if "s2" in inputs.split("+") else None
    return s1, s2


def _features(model: FusMAE, s1, s2, pool: str) -> torch.Tensor:
    f = model.encode(s1, s2)
    return f.cls if pool == "cls" else f.pooled()


def _progress(it, enabled: bool, desc: str, total: int | None = None):
    if not (enabled and sys.stderr.isatty()):
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False, dynamic_ncols=True)


@torch.no_grad()
def extract_features(
    model: FusMAE, ds: Dataset, inputs: str, cfg: EvalConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder features and targets of a whole dataset."""
    model.eval()
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    feats, targets = [], []
    for batch in _progress(loader, cfg.progress, f"features {inputs}"):
        s1, s2 = _modalities(batch, inputs, device)
        with _autocast(device, cfg.precision):
            feats.append(_features(model, s1, s2, cfg.pool).float().cpu())
        targets.append(_label_target(batch["label"], cfg.task))
    return torch.cat(feats), torch.cat(targets)


# -------------------------------------------------------------------------------------- heads
def _loss_fn(task: str, label_smoothing: float) -> nn.Module:
    return (
        nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        if task == "sen12ms"
        else nn.MultiLabelSoftMarginLoss()
    )


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_linear_head(
    train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, cfg: EvalConfig
) -> nn.Module:
    """BatchNorm (no affine) + Linear on cached features, AdamW with a cosine schedule."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    head = nn.Sequential(
        nn.BatchNorm1d(train_x.shape[1], affine=False), nn.Linear(train_x.shape[1], num_classes)
    )
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.setting("lr"), weight_decay=cfg.setting("weight_decay"))
    loss_fn = _loss_fn(cfg.task, cfg.label_smoothing)
    n = train_x.shape[0]
    bs = min(cfg.batch_size, n)
    per_epoch = max(1, n // bs)
    total = per_epoch * cfg.setting("epochs")
    step = 0
    head.train()
    for _ in range(cfg.setting("epochs")):
        perm = torch.randperm(n, generator=g)
        for i in range(per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            if idx.numel() < 2:  # BatchNorm needs two samples
                continue
            for group in opt.param_groups:
                group["lr"] = cfg.setting("lr") * _cosine(step, total, 0)
            loss = loss_fn(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return head.eval()


class FineTuneClassifier(nn.Module):
    """The encoder of a FusMAE (decoders dropped) with a linear head on CLS or the mean token."""

    def __init__(self, model: FusMAE, num_classes: int, pool: str) -> None:
        super().__init__()
        model = copy.deepcopy(model)
        for name in ("decoder_s1", "decoder_s2", "xattn_decoder"):
            if hasattr(model, name):
                delattr(model, name)
        self.encoder = model
        self.pool = pool
        self.head = nn.Linear(model.config.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, s1: torch.Tensor | None, s2: torch.Tensor | None) -> torch.Tensor:
        return self.head(_features(self.encoder, s1, s2, self.pool))


def layer_decay_groups(clf: FineTuneClassifier, lr: float, weight_decay: float, decay: float | None):
    """AdamW groups with MAE's layer-wise lr decay (embeddings = layer 0, head = last)."""
    enc = clf.encoder
    offset = 1 if enc.config.variant == "xae" else 0
    num_layers = len(enc.blocks) + offset + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in clf.named_parameters():
        if name.startswith("encoder.patch_embed") or name.startswith("encoder.cls_token"):
            layer = 0
        elif name.startswith("encoder.xattn_encoder"):
            layer = 1
        elif name.startswith("encoder.blocks."):
            layer = int(name.split(".")[2]) + 1 + offset
        else:
            layer = num_layers
        no_wd = p.ndim <= 1 or name.endswith("_token")
        scale = 1.0 if decay is None else decay ** (num_layers - layer)
        key = (layer, no_wd)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_wd else weight_decay, "lr_scale": scale}
        groups[key]["params"].append(p)
    return [{**g, "lr": lr * g["lr_scale"]} for g in groups.values()]


def finetune(
    model: FusMAE, train: Dataset, num_classes: int, inputs: str, cfg: EvalConfig, device: torch.device
) -> FineTuneClassifier:
    torch.manual_seed(cfg.seed)
    clf = FineTuneClassifier(model, num_classes, cfg.pool).to(device)
    lr = cfg.setting("lr")
    opt = torch.optim.AdamW(layer_decay_groups(clf, lr, cfg.setting("weight_decay"), cfg.layer_decay))
    loss_fn = _loss_fn(cfg.task, cfg.label_smoothing)
    g = torch.Generator().manual_seed(cfg.seed)
    bs = min(cfg.batch_size, len(train))  # type: ignore[arg-type]
    loader = DataLoader(
        train, batch_size=bs, shuffle=True, generator=g, num_workers=cfg.num_workers, drop_last=True
    )
    total = len(loader) * cfg.setting("epochs")
    warmup = min(len(loader), total // 10)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    step = 0
    clf.train()
    for epoch in range(cfg.setting("epochs")):
        for batch in _progress(loader, cfg.progress, f"finetune {inputs} epoch {epoch}"):
            s1, s2 = _modalities(batch, inputs, device)
            y = _label_target(batch["label"], cfg.task).to(device)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"] * _cosine(step, total, warmup)
            with _autocast(device, cfg.precision):
                logits = clf(s1, s2)
            loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"non-finite fine-tuning loss at step {step}; lower --lr or use --precision fp32"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
    return clf.eval()


@torch.no_grad()
def predict(clf: FineTuneClassifier, ds: Dataset, inputs: str, cfg: EvalConfig, device: torch.device):
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    logits, targets = [], []
    for batch in loader:
        s1, s2 = _modalities(batch, inputs, device)
        with _autocast(device, cfg.precision):
            logits.append(clf(s1, s2).float().cpu())
        targets.append(_label_target(batch["label"], cfg.task))
    return torch.cat(logits), torch.cat(targets)


def score(task: str, logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, Any]:
    if task == "sen12ms":
        return classification_report(targets.numpy(), logits.numpy(), num_classes)
    return multilabel_map(targets.numpy(), logits.numpy())


# ---------------------------------------------------------------------------------------- run
def _open(path: str | None, split: str, task: str, image_size: int) -> Dataset:
    """The dataset at ``path``; without a path the built-in sample of the task's kind (BigEarthNet-style,
    or SEN12MS-style for ``sen12ms``). Images are brought to the model's ``image_size``."""
    from fusmae_fast.data import open_dataset

    if path is None and task == "sen12ms":
        path = "sample:sen12ms"
    return open_dataset(path, split=split, image_size=image_size)


def run_evaluation(
    cfg: EvalConfig, *, train_set: Dataset | None = None, test_set: Dataset | None = None
) -> dict[str, Any]:
    """Evaluate the checkpoint (and the random baseline) on every requested input; write the outputs."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    num_classes = 10 if cfg.task == "sen12ms" else 19

    models: list[tuple[str, FusMAE]] = []
    if cfg.ckpt is not None:
        models.append(
            (Path(cfg.ckpt).name if Path(cfg.ckpt).is_dir() else Path(cfg.ckpt).stem, load_model(cfg.ckpt))
        )
    if cfg.baseline == "random":
        arch = models[0][1].config if models else ModelConfig.from_name(cfg.preset)
        torch.manual_seed(cfg.seed + 12345)
        models.append(("random-init", FusMAE(arch)))

    image_size = models[0][1].config.img_size
    train_set = train_set if train_set is not None else _open(cfg.data, "train", cfg.task, image_size)
    test_set = test_set if test_set is not None else _open(cfg.data, "test", cfg.task, image_size)
    labels = dataset_labels(train_set, cfg.task)
    subset = stratified_subset(labels, cfg.setting("label_fraction"), cfg.seed)
    names = getattr(train_set, "names", None)
    subset_lines = [str(names[i]) if names is not None else str(int(i)) for i in subset]
    atomic_write_text(out_dir / f"subset_{cfg.task}.txt", "\n".join(subset_lines) + "\n")
    train_sub = Subset(train_set, subset.tolist())

    rows: dict[str, dict[str, Any]] = {}
    for name, model in models:
        model = model.to(device).set_kernels(cfg.kernels)
        rows[name] = {}
        for inputs in cfg.inputs:
            t0 = time.perf_counter()
            if cfg.task in ("linear", "sen12ms"):
                tx, ty = extract_features(model, train_sub, inputs, cfg, device)
                vx, vy = extract_features(model, test_set, inputs, cfg, device)
                t_feat = time.perf_counter() - t0
                head = train_linear_head(tx, ty, num_classes, cfg)
                with torch.no_grad():
                    logits = head(vx)
                metrics = score(cfg.task, logits, vy, num_classes)
                metrics["feature_seconds"] = t_feat
            else:
                clf = finetune(model, train_sub, num_classes, inputs, cfg, device)
                logits, vy = predict(clf, test_set, inputs, cfg, device)
                metrics = score(cfg.task, logits, vy, num_classes)
            metrics["seconds"] = time.perf_counter() - t0
            rows[name][inputs] = metrics
            print(
                f"[fusmae-fast] {cfg.task} {name} {inputs}: {_headline(cfg.task, metrics)}", file=sys.stderr
            )

    result = {
        "task": cfg.task,
        "config": dataclasses.asdict(cfg),
        "train_size": len(train_set),  # type: ignore[arg-type]
        "train_labels_used": int(len(subset)),
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


def _headline(task: str, m: dict[str, Any]) -> str:
    if task == "sen12ms":
        return f"top-1 {100 * m['top1']:.2f}  top-3 {100 * m['top3']:.2f}  F1 {100 * m['f1_weighted']:.2f}"
    return f"mAP macro {100 * m['map_macro']:.2f}  micro {100 * m['map_micro']:.2f}"


def write_results_md(out_dir: str | os.PathLike[str]) -> Path:
    """Render every metrics_<task>.json in ``out_dir`` as the paper's Table 1 / Table 2 shapes."""
    out_dir = Path(out_dir)
    lines = ["# Fus-MAE evaluation", ""]
    tables = {
        t: json.loads((out_dir / f"metrics_{t}.json").read_text())
        for t in TASKS
        if (out_dir / f"metrics_{t}.json").is_file()
    }
    ben = [t for t in ("finetune", "linear") if t in tables]
    if ben:
        lines += ["## BigEarthNet-MM, mAP % macro (micro) — Table 1 shape", ""]
        models = list(dict.fromkeys(m for t in ben for m in tables[t]["results"]))
        header = ["Model"]
        for t in ben:
            frac = tables[t]["train_labels_used"] / max(1, tables[t]["train_size"])
            label = "Fine-tune" if t == "finetune" else f"Linear ({100 * frac:.3g}% labels)"
            header += [f"{label} {i.upper()}" for i in INPUTS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for m in models:
            cells = [m]
            for t in ben:
                for i in INPUTS:
                    r = tables[t]["results"].get(m, {}).get(i)
                    cells.append(f"{100 * r['map_macro']:.2f} ({100 * r['map_micro']:.2f})" if r else "—")
            lines.append("| " + " | ".join(cells) + " |")
        for t in ben:
            lines.append("")
            lines.append(
                f"{t}: {tables[t]['train_labels_used']} of {tables[t]['train_size']} training labels, "
                f"{tables[t]['test_size']} test samples, "
                f"{tables[t]['wall_seconds']:.1f} s on {tables[t]['device']}."
            )
        lines.append("")
    if "sen12ms" in tables:
        t = tables["sen12ms"]
        lines += ["## SEN12MS linear evaluation — Table 2 shape (%)", ""]
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
        lines += ["", f"{t['train_labels_used']} training labels, {t['test_size']} test samples, "
                  f"{t['wall_seconds']:.1f} s on {t['device']}.", ""]  # fmt: skip
    path = out_dir / "results.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def plot_ap_per_class(result: dict[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """Per-class AP bars: one panel per input, one bar colour per model."""
    from fusmae_fast.plots import _pyplot, _save

    plt = _pyplot()
    rows = result["results"]
    inputs = list(next(iter(rows.values())).keys())
    fig, axes = plt.subplots(len(inputs), 1, figsize=(12, 3.2 * len(inputs)), squeeze=False)
    width = 0.8 / max(1, len(rows))
    x = np.arange(19)
    for ax, inp in zip(axes[:, 0], inputs, strict=True):
        for j, (model, per) in enumerate(rows.items()):
            ax.bar(x + j * width, 100 * np.asarray(per[inp]["ap_per_class"]), width, label=model)
        ax.set_title(f"{result['task']} — {inp.upper()}: AP per class (%)", fontsize=10)
        ax.set_xticks(x + width * (len(rows) - 1) / 2)
        ax.set_xticklabels([n[:22] for n in BEN19_NAMES], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=TASKS)
    p.add_argument("--ckpt", default=None, help="encoder.safetensors, checkpoint .pt or run folder")
    p.add_argument("--data", default=None, help="dataset root or packed store (default: built-in sample)")
    p.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    p.add_argument("--out", "--output_dir", dest="output_dir", default=EvalConfig.output_dir)
    p.add_argument("--baseline", choices=("random",), default=None)
    p.add_argument("--preset", default="tiny", choices=("tiny", "small", "base"))
    p.add_argument("--label-fraction", "--label_fraction", dest="label_fraction", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight_decay", "--weight-decay", dest="weight_decay", type=float, default=None)
    p.add_argument("--layer_decay", "--layer-decay", dest="layer_decay", type=float, default=None)
    p.add_argument("--pool", choices=("cls", "mean"), default="cls")
    p.add_argument("--kernels", choices=KERNELS, default="torch")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", "--num-workers", dest="num_workers", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    cfg = EvalConfig(**{k: v for k, v in vars(args).items() if k in names})
    result = run_evaluation(cfg)
    print((Path(cfg.output_dir) / "results.md").read_text())
    print(f"[fusmae-fast] {cfg.task} done in {result['wall_seconds']:.1f} s; outputs in {cfg.output_dir}")
    return 0


__all__ = ["EvalConfig", "load_model", "run_evaluation", "stratified_subset"]
