"""Figures people would rather look at than read: the loss curve, reconstruction grids, AP per class.

matplotlib runs headless (Agg). Images are shown in the normalised space the model sees, each panel
stretched between its own 2nd and 98th percentiles (S2: RGB = B04, B03, B02; S1: VV and VH in grey).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusmae_fast.atomic_write import atomic_write_bytes
from fusmae_fast.data.labels import BEN19_NAMES

S2_RGB = (3, 2, 1)  # B04, B03, B02 in the B01..B08, B8A, B09, B11, B12 order


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike[str]) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_loss_curve(log_path: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path | None:
    """Loss, loss_s1, loss_s2 and the learning rate against the optimizer step, from ``log.jsonl``."""
    rows = []
    with open(log_path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if "loss" in rec and "step" in rec:
                    rows.append(rec)
    if not rows:
        return None
    plt = _pyplot()
    steps = [r["step"] for r in rows]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=[3, 1])
    for key, style in (("loss", "-"), ("loss_s1", "--"), ("loss_s2", ":")):
        ax.plot(steps, [r[key] for r in rows], style, label=key)
    ax.set_ylabel("masked-patch MSE")
    ax.legend()
    ax.grid(alpha=0.3)
    ax_lr.plot(steps, [r["lr"] for r in rows], color="gray")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    fig.suptitle("Fus-MAE pretraining")
    return _save(fig, out_png)


def _stretch(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [2, 98])
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def _masked_view(img: np.ndarray, mask: np.ndarray, patch: int) -> np.ndarray:
    """Grey out masked patches of an (H, W[, 3]) image; mask is (N,) raster."""
    out = img.copy()
    g = img.shape[0] // patch
    for n in np.nonzero(mask)[0]:
        r, c = divmod(int(n), g)
        out[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = 0.5
    return out


@torch.no_grad()
def plot_reconstructions(
    model: torch.nn.Module,
    s1: torch.Tensor,
    s2: torch.Tensor,
    out_png: str | os.PathLike[str],
    seeds: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Rows: per sample S2 RGB, S1 VV, S1 VH; columns: original, masked input, reconstruction,
    reconstruction with the visible patches pasted from the input."""
    was_training = model.training
    model.eval()
    if seeds is None:
        seeds = torch.arange(s1.shape[0], dtype=torch.int64)
    out = model(s1, s2, seeds=seeds)
    rec = model.reconstruct(out, s1, s2)
    model.train(was_training)
    p = model.config.patch_size
    plt = _pyplot()
    b = s1.shape[0]
    cols = ["original", "masked input", "reconstruction", "recon. + visible"]
    fig, axes = plt.subplots(3 * b, 4, figsize=(8, 6 * b + 0.4), squeeze=False, layout="constrained")
    for i in range(b):
        panels = []
        m1, m2 = out.mask_s1[i].cpu().numpy(), out.mask_s2[i].cpu().numpy()
        rgb = [
            t[i, list(S2_RGB)].float().cpu().permute(1, 2, 0).numpy()
            for t in (s2, rec["s2"], rec["s2_pasted"])
        ]
        rgb = [_stretch(x) for x in rgb]
        panels.append(("S2 RGB", [rgb[0], _masked_view(rgb[0], m2, p), rgb[1], rgb[2]]))
        for band, name in ((0, "S1 VV"), (1, "S1 VH")):
            imgs = [_stretch(t[i, band].float().cpu().numpy()) for t in (s1, rec["s1"], rec["s1_pasted"])]
            panels.append((name, [imgs[0], _masked_view(imgs[0], m1, p), imgs[1], imgs[2]]))
        for r, (name, row) in enumerate(panels):
            for c, img in enumerate(row):
                ax = axes[3 * i + r, c]
                ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"#{i} {name}", fontsize=8)
                if 3 * i + r == 0:
                    ax.set_title(cols[c], fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)


def plot_ap_per_class(result: dict[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """Per-class AP bars of an evaluation's ``metrics_<task>.json`` content (BigEarthNet's 19 classes):
    one panel per input, one bar colour per model."""
    plt = _pyplot()
    rows = result["results"]
    inputs = list(next(iter(rows.values())).keys())
    fig, axes = plt.subplots(len(inputs), 1, figsize=(12, 3.2 * len(inputs)), squeeze=False)
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(BEN19_NAMES))
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
