"""The linear probe (``linear`` and ``sen12ms``): frozen-encoder features, then a linear head.

Encoder and patch projections are frozen; the features of the labelled subset and of the test set
are computed once and kept in memory; the head is a non-affine BatchNorm + Linear (MAE's linear
probe) trained with AdamW on a cosine schedule.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fusmae_fast.evaluate.config import EvalConfig
from fusmae_fast.evaluate.encoder import autocast, modalities, pooled_features
from fusmae_fast.evaluate.tasks import label_target, loss_fn
from fusmae_fast.model import FusMAE
from fusmae_fast.optim import adamw
from fusmae_fast.progress import progress_bar


@torch.no_grad()
def extract_features(
    model: FusMAE, ds: Dataset, inputs: str, cfg: EvalConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder features and targets of a whole dataset."""
    model.eval()
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    feats, targets = [], []
    for batch in progress_bar(loader, enabled=cfg.progress, desc=f"features {inputs}"):
        s1, s2 = modalities(batch, inputs, device)
        with autocast(device, cfg.precision):
            feats.append(pooled_features(model, s1, s2, cfg.pool).float().cpu())
        targets.append(label_target(batch["label"], cfg.task))
    return torch.cat(feats), torch.cat(targets)


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """The lr multiplier at ``step`` of ``total``: linear warm-up over ``warmup`` steps, then cosine."""
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
    opt = adamw(head.parameters(), lr=cfg.setting("lr"), weight_decay=cfg.setting("weight_decay"))
    criterion = loss_fn(cfg.task, cfg.label_smoothing)
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
                group["lr"] = cfg.setting("lr") * cosine_factor(step, total, 0)
            loss = criterion(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return head.eval()
