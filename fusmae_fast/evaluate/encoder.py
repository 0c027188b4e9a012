"""The encoder under evaluation: loaded from a checkpoint, fed the chosen modalities, pooled.

A single-modality input (``s1`` or ``s2``) uses the model's missing-modality handling: the absent
modality's tokens are not fed (see ``fusmae_fast.model``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from fusmae_fast.checkpoint import (
    encoder_metadata,
    latest_valid,
    list_checkpoints,
    load_checkpoint,
    load_encoder,
    step_of,
    suspect_reason,
)
from fusmae_fast.config import ModelConfig
from fusmae_fast.model import FusMAE
from fusmae_fast.pretrained import is_pretrained_folder


def checkpoint_file(ckpt: str | os.PathLike[str]) -> Path:
    """What ``ckpt`` names: a pretrained folder (``FusMAE.save_pretrained``) as it is, a run folder's
    encoder.safetensors (else, or when it is unreadable or older than the newest checkpoint, its newest
    valid checkpoint, saying so), or the given .safetensors / .pt file."""
    path = Path(ckpt)
    if path.is_dir():
        if is_pretrained_folder(path):
            return path
        if (path / "encoder.safetensors").is_file() and current_encoder(path):
            return path / "encoder.safetensors"
        found = latest_valid(path / "checkpoints")
        if found is None:
            raise FileNotFoundError(
                f"{ckpt}: no encoder.safetensors, no valid checkpoint and no pretrained model inside"
            )
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint or encoder at {path}")
    return path


def current_encoder(run: Path) -> bool:
    """True when the run folder's encoder.safetensors is readable and not older than its newest
    checkpoint (not marked suspect); else says why the checkpoint is used instead."""
    encoder = run / "encoder.safetensors"
    try:
        step = encoder_metadata(encoder).get("fusmae_fast_step")
    except ValueError as exc:
        print(f"[fusmae-fast] {exc}: using the newest valid checkpoint instead", file=sys.stderr)
        return False
    ckpts = [p for p in list_checkpoints(run / "checkpoints") if suspect_reason(p) is None]
    if not ckpts:
        return True
    newest = ckpts[-1]
    stale = (
        step_of(newest) > int(step) if step is not None else newest.stat().st_mtime > encoder.stat().st_mtime
    )
    if stale:
        print(
            f"[fusmae-fast] {encoder} (step {step or '?'}) is older than {newest.name}: evaluating the "
            "newest valid checkpoint instead",
            file=sys.stderr,
        )
    return not stale


def load_model(
    ckpt: str | os.PathLike[str], map_location: str | torch.device = "cpu", **overrides: Any
) -> FusMAE:
    """A FusMAE from encoder.safetensors, a training checkpoint (.pt), a run folder or a pretrained folder."""
    path = checkpoint_file(ckpt)
    if path.is_dir() or path.suffix == ".safetensors":
        return load_encoder(path, map_location, **overrides)
    state = load_checkpoint(path, map_location)
    model = FusMAE(ModelConfig.from_dict({**state["model_config"], **overrides}))
    model.load_state_dict(state["model"])
    return model


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast to bf16/fp16 as ``precision`` says (disabled for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def modalities(
    batch: dict[str, Any], inputs: str, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(s1, s2) of a batch on ``device``, None for a modality ``inputs`` ('s1', 's2', 's1+s2') leaves out."""
    s1 = batch["s1"].to(device).float() if "s1" in inputs.split("+") else None
    s2 = batch["s2"].to(device).float() if "s2" in inputs.split("+") else None
    return s1, s2


def pooled_features(
    model: FusMAE, s1: torch.Tensor | None, s2: torch.Tensor | None, pool: str
) -> torch.Tensor:
    """The encoder's CLS token (``pool='cls'``) or the mean of its patch tokens (``'mean'``)."""
    f = model.encode(s1, s2)
    return f.cls if pool == "cls" else f.pooled()
