"""Fine-tuning (``finetune``): the whole encoder trainable, a linear head, MAE's layer-wise lr decay.

AdamW with a warm-up (a tenth of the steps, at most one epoch) and a cosine schedule, on 100% of the
labels by default; ``--layer_decay`` scales each layer's lr by decay^(depth from the top).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fusmae_fast.evaluate.config import EvalConfig
from fusmae_fast.evaluate.encoder import autocast, modalities, pooled_features
from fusmae_fast.evaluate.linear import cosine_factor
from fusmae_fast.evaluate.tasks import label_target, loss_fn
from fusmae_fast.model import FusMAE
from fusmae_fast.optim import adamw
from fusmae_fast.progress import progress_bar


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
        return self.head(pooled_features(self.encoder, s1, s2, self.pool))


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
    """A classifier fine-tuned from ``model`` on ``train`` with the ``inputs`` modalities."""
    torch.manual_seed(cfg.seed)
    clf = FineTuneClassifier(model, num_classes, cfg.pool).to(device)
    lr = cfg.setting("lr")
    opt = adamw(layer_decay_groups(clf, lr, cfg.setting("weight_decay"), cfg.layer_decay))
    criterion = loss_fn(cfg.task, cfg.label_smoothing)
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
        for batch in progress_bar(loader, enabled=cfg.progress, desc=f"finetune {inputs} epoch {epoch}"):
            s1, s2 = modalities(batch, inputs, device)
            y = label_target(batch["label"], cfg.task).to(device)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"] * cosine_factor(step, total, warmup)
            with autocast(device, cfg.precision):
                logits = clf(s1, s2)
            loss = criterion(logits.float(), y)
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
    """The classifier's logits and the targets of a whole dataset."""
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    logits, targets = [], []
    for batch in loader:
        s1, s2 = modalities(batch, inputs, device)
        with autocast(device, cfg.precision):
            logits.append(clf(s1, s2).float().cpu())
        targets.append(label_target(batch["label"], cfg.task))
    return torch.cat(logits), torch.cat(targets)
