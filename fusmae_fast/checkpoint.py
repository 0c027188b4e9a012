"""Checkpoints that never lose work: atomic writes, verification, rotation, resume, encoder export.

Layout in a run folder::

    checkpoints/ckpt-00001200.pt        torch.save of the state dict (model, optimizer, scaler, RNGs, ...)
    checkpoints/ckpt-00001200.pt.json   sidecar: step, epoch, byte size and SHA-256 of the .pt file

A checkpoint is written atomically (``fusmae_fast.atomic_write``: a temporary file in the same folder,
flushed and fsync'ed, renamed over its final name, the folder fsync'ed); the sidecar is written the
same way, after the .pt. A crash at any point leaves either the old set of checkpoints or the old
set plus the complete new one. A checkpoint whose sidecar is missing or whose size/hash do not match is
treated as corrupt: ``latest_valid`` skips it with a message and falls back to the previous one.

A sidecar may also say ``"suspect"``: the checkpoint was saved in the last steps before a non-finite
loss (``mark_suspect``), so its weights may already be on the way to diverging; ``latest_valid``
passes over it (saying so) unless asked not to. Rotation keeps the newest ``keep_last`` checkpoints
that are not suspect. Temporary files a killed save left behind (``.ckpt-*.tmp``) are removed by
``remove_stale_temp_files``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch

from fusmae_fast.atomic_write import atomic_write_bytes, atomic_write_text

CKPT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")
TEMP_GLOB = ".ckpt-*.tmp"
"""Temporary files of checkpoint saves (``atomic_write``'s names for ``ckpt-*.pt`` and sidecars)."""


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
        rotate_checkpoints(folder, keep_last)
    return path


def rotate_checkpoints(folder: str | os.PathLike[str], keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints not marked suspect, and the suspect ones newer than
    them (until a resumed run writes over them); delete the rest."""
    good = [p for p in list_checkpoints(folder) if suspect_reason(p) is None]
    kept = good[-keep_last:]
    oldest_kept = step_of(kept[0]) if kept else -1
    for old in list_checkpoints(folder):
        if old in kept or (suspect_reason(old) is not None and step_of(old) > oldest_kept):
            continue
        for p in (old, sidecar_path(old)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    return Path(str(path) + ".json")


def step_of(path: str | os.PathLike[str]) -> int:
    """The step in a checkpoint's file name."""
    m = CKPT_RE.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a checkpoint name (ckpt-<8 digits>.pt)")
    return int(m.group(1))


def suspect_reason(path: str | os.PathLike[str]) -> str | None:
    """Why the checkpoint's sidecar marks it suspect (None: not marked, or no readable sidecar)."""
    try:
        meta = json.loads(sidecar_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    reason = meta.get("suspect") if isinstance(meta, dict) else None
    return str(reason) if reason else None


def mark_suspect(folder: str | os.PathLike[str], after_step: int, reason: str) -> list[Path]:
    """Mark every checkpoint of a step > ``after_step`` suspect in its sidecar (atomically); returns them."""
    marked = []
    for path in list_checkpoints(folder):
        side = sidecar_path(path)
        if step_of(path) <= after_step or not side.is_file():
            continue
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        meta["suspect"] = reason
        atomic_write_text(side, json.dumps(meta, indent=1))
        marked.append(path)
    return marked


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed saves left in ``folder``; returns them. Call it only
    when no save is in progress (a run's rank 0 at its start)."""
    folder = Path(folder)
    stale = sorted(folder.glob(TEMP_GLOB)) if folder.is_dir() else []
    for p in stale:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    return stale


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := CKPT_RE.match(name))]
    return [p for _, p in sorted(found)]


class CorruptCheckpointError(RuntimeError, ValueError):
    """A checkpoint file that is truncated, altered, unreadable, or has no sidecar (a ValueError too,
    so that the command line reports it as one line)."""


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
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise CorruptCheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc


def latest_valid(
    folder: str | os.PathLike[str], map_location: str | torch.device = "cpu", *, skip_suspect: bool = True
) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies and loads; corrupt ones (and, with ``skip_suspect``, those
    marked suspect) are reported and skipped."""
    for path in reversed(list_checkpoints(folder)):
        reason = suspect_reason(path) if skip_suspect else None
        if reason is not None:
            print(
                f"[fusmae-fast] passing over checkpoint {path.name}: marked suspect ({reason})",
                file=sys.stderr,
            )
            continue
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


def export_encoder(model: torch.nn.Module, path: str | os.PathLike[str], *, step: int | None = None) -> Path:
    """Write the encoder weights and the model config (and the optimizer ``step`` they are from, when
    given) to a ``.safetensors`` file, atomically."""
    from safetensors.torch import save

    config = model.config.to_dict()  # type: ignore[attr-defined]
    meta = {"fusmae_fast_config": json.dumps(config), "format": "pt"}
    if step is not None:
        meta["fusmae_fast_step"] = str(step)
    data = save(encoder_state_dict(model), metadata=meta)
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def unreadable_encoder(path: str | os.PathLike[str], exc: Exception) -> ValueError:
    """The one-line error for an encoder file that safetensors cannot read."""
    return ValueError(f"{path}: not a readable safetensors file (truncated or damaged? {exc})")


def encoder_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of an exported encoder file; a ValueError naming it when it cannot be read
    (truncated or damaged)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise unreadable_encoder(path, exc) from exc


def load_encoder(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", **overrides: Any):
    """A FusMAE built from an exported encoder: encoder weights loaded, decoders freshly initialised.

    ``path``: an ``encoder.safetensors`` of :func:`export_encoder`, or a pretrained folder
    (``FusMAE.save_pretrained``; a whole-model folder then loads its decoders too). Use
    ``model.encode(s1, s2)`` (either may be None) for features. ``overrides`` change config fields
    (e.g. ``kernels="triton"``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fusmae_fast.config import ModelConfig
    from fusmae_fast.model import FusMAE

    path = Path(path)
    if path.is_dir():
        return FusMAE.from_pretrained(path, map_location=map_location, **overrides)
    if not path.is_file():
        raise FileNotFoundError(f"no encoder file at {path}")
    meta = encoder_metadata(path)
    if "fusmae_fast_config" not in meta:
        raise ValueError(f"{path} was not written by fusmae_fast.export_encoder (no config in its metadata)")
    cfg = ModelConfig.from_dict({**json.loads(meta["fusmae_fast_config"]), **overrides})
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise unreadable_encoder(path, exc) from exc
    return load_weights(FusMAE(cfg), state, path, encoder_only=True)


def load_weights(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str | os.PathLike[str],
    *,
    encoder_only: bool,
):
    """Load ``state`` into ``model``; returns the model. ``encoder_only``: the weights are the encoder's
    (:data:`ENCODER_MODULES`) and the decoders keep their initialisation.

    Every expected weight must be present with its shape and nothing else may be: else a ValueError
    naming ``source`` (a checkpoint of another architecture than the config says).
    """
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{source}: weights do not match the config: {len(wrong)} of another shape "
            f"(first {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if encoder_only:
        missing = [k for k in missing if k.split(".")[0] in ENCODER_MODULES]
    if missing or unexpected:
        what = "encoder weights" if encoder_only else "weights"
        raise ValueError(
            f"{source}: {what} do not match the config: missing {missing}, unexpected {unexpected}"
        )
    return model
