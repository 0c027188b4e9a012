"""Checkpoints that never lose work: atomic writes, verification, rotation, resume, encoder export.

Layout in a run folder::

    checkpoints/ckpt-00001200.pt        torch.save of the state dict (model, optimizer, scaler, RNGs, ...)
    checkpoints/ckpt-00001200.pt.json   sidecar: step, epoch, byte size and SHA-256 of the .pt file

A checkpoint is written atomically (``fusmae_fast.atomic_write``: a temporary file in the same folder,
flushed and fsync'ed, renamed over its final name, the folder fsync'ed); the sidecar is written the
same way, after the .pt. A crash at any point leaves either the old set of checkpoints or the old
set plus the complete new one. A checkpoint whose sidecar is missing or whose size/hash do not match is
treated as corrupt: ``latest_valid`` skips it with a message and falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from fusmae_fast.atomic_write import atomic_write_bytes, atomic_write_text

CKPT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_path(folder: str | os.PathLike[str], step: int) -> Path:
    return Path(folder) / f"ckpt-{step:08d}.pt"


def save_checkpoint(
    folder: str | os.PathLike[str], step: int, state: dict[str, Any], keep_last: int = 3
) -> Path:
    """Serialise ``state`` to ``folder/ckpt-<step>.pt`` atomically with its sidecar; keep the newest K."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = checkpoint_path(folder, step)
    atomic_write_bytes(path, data)
    meta = {
        "step": step,
        "epoch": state.get("epoch"),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_text(str(path) + ".json", json.dumps(meta, indent=1))
    if keep_last > 0:
        for old in list_checkpoints(folder)[:-keep_last]:
            for p in (old, Path(str(old) + ".json")):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
    return path


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := CKPT_RE.match(name))]
    return [p for _, p in sorted(found)]


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated, altered, or has no sidecar."""


def verify_checkpoint(path: str | os.PathLike[str]) -> bytes:
    """Return the checkpoint's bytes after checking them against the sidecar; raise if they differ."""
    path = Path(path)
    side = Path(str(path) + ".json")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not side.is_file():
        raise CorruptCheckpointError(f"{path}: no sidecar {side.name} (the save did not complete)")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"{side}: unreadable sidecar ({exc})") from exc
    data = path.read_bytes()
    if len(data) != meta.get("bytes") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise CorruptCheckpointError(
            f"{path}: size or SHA-256 differ from its sidecar (truncated or altered: {len(data)} bytes, "
            f"expected {meta.get('bytes')})"
        )
    return data


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a verified checkpoint (raises CorruptCheckpointError when it fails verification)."""
    data = verify_checkpoint(path)
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)


def latest_valid(
    folder: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies and loads; corrupt ones are reported and skipped."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path, map_location)
        except (CorruptCheckpointError, RuntimeError, EOFError, OSError) as exc:
            print(f"[fusmae-fast] skipping checkpoint {path.name}: {exc}", file=sys.stderr)
    return None


ENCODER_MODULES = ("patch_embed_s1", "patch_embed_s2", "cls_token", "xattn_encoder", "blocks", "norm")
"""Top-level FusMAE attributes that make up the encoder (what downstream tasks use)."""


def encoder_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k.split(".")[0] in ENCODER_MODULES
    }


def export_encoder(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write the encoder weights and the model config to a ``.safetensors`` file, atomically."""
    from safetensors.torch import save

    config = model.config.to_dict()  # type: ignore[attr-defined]
    data = save(
        encoder_state_dict(model), metadata={"fusmae_fast_config": json.dumps(config), "format": "pt"}
    )
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def load_encoder(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", **overrides: Any):
    """A FusMAE built from an exported encoder: encoder weights loaded, decoders freshly initialised.

    Use ``model.encode(s1, s2)`` (either may be None) for features. ``overrides`` change config fields
    (e.g. ``kernels="triton"``).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fusmae_fast.config import ModelConfig
    from fusmae_fast.model import FusMAE

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no encoder file at {path}")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "fusmae_fast_config" not in meta:
        raise ValueError(f"{path} was not written by fusmae_fast.export_encoder (no config in its metadata)")
    cfg = ModelConfig.from_dict({**json.loads(meta["fusmae_fast_config"]), **overrides})
    model = FusMAE(cfg)
    missing, unexpected = model.load_state_dict(load_file(str(path), device=str(map_location)), strict=False)
    missing_enc = [k for k in missing if k.split(".")[0] in ENCODER_MODULES]
    if missing_enc or unexpected:
        raise ValueError(
            f"{path}: encoder weights do not match the config: missing {missing_enc}, unexpected {unexpected}"
        )
    return model
