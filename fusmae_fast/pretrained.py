"""Pretrained folders: a model's config and weights as two files, the layout of the Hugging Face Hub.

A pretrained folder holds::

    config.json         the ModelConfig fields, plus "fusmae_fast": {"format", "weights", "version"}
    model.safetensors   the weights: the whole model's state dict (weights "model") or the encoder's
                        alone (weights "encoder": the modules of ``checkpoint.ENCODER_MODULES``)

``FusMAE.save_pretrained`` / ``FusMAE.from_pretrained`` write and read it (this module does the file
work, the model builds itself). A folder is read from local disk without any network access; a name
that is not a local folder is taken as a Hub repository id, which needs ``huggingface_hub`` installed
(then the two files are downloaded into its cache, and read as a local folder). Both files are written
atomically: a folder is either the old pair, or the old config with the new weights while a save is
under way, never a truncated file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fusmae_fast.atomic_write import atomic_write_bytes, atomic_write_text
from fusmae_fast.config import ModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "fusmae-fast-pretrained"
WEIGHTS = ("model", "encoder")
"""What ``model.safetensors`` holds: the whole FusMAE, or its encoder alone."""


@dataclass
class Pretrained:
    """What a pretrained folder holds, as read by :func:`read_pretrained`."""

    config: ModelConfig
    """The architecture (the config.json fields that are ModelConfig fields, with overrides applied)."""
    state_dict: dict[str, torch.Tensor]
    """The weights in model.safetensors."""
    weights: str
    """'model' (every module) or 'encoder' (the encoder's modules only; decoders are to be initialised)."""
    weights_file: Path
    """The model.safetensors file read (local path, in the Hub cache for a repository id)."""


def is_pretrained_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a local folder holding config.json and model.safetensors."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def write_pretrained(
    folder: str | os.PathLike[str], config: ModelConfig, state_dict: dict[str, torch.Tensor], weights: str
) -> Path:
    """Write config.json and model.safetensors into ``folder`` (created if needed); returns the folder."""
    from safetensors.torch import save

    from fusmae_fast import __version__

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "weights": weights, "version": __version__}
    atomic_write_bytes(folder / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    config_json = {**config.to_dict(), "fusmae_fast": meta}
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    return folder


def resolve_pretrained(source: str | os.PathLike[str], revision: str | None = None) -> Path:
    """The local folder of ``source``: a local pretrained folder, or a Hub repository id downloaded."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path}: a pretrained model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: not a pretrained folder ({' and '.join(missing)} missing)")
        return path
    name = str(source)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{name}: no such pretrained folder (nor a Hub repository id 'owner/name')")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise FileNotFoundError(
            f"{name}: no such local folder; loading a Hub repository id needs huggingface_hub "
            "(pip install huggingface_hub)"
        ) from None
    config_file = hf_hub_download(name, CONFIG_NAME, revision=revision)
    hf_hub_download(name, WEIGHTS_NAME, revision=revision)
    return Path(config_file).parent


def read_pretrained(
    source: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
    **overrides: Any,
) -> Pretrained:
    """Read a pretrained folder (or Hub repository id); ``overrides`` change ModelConfig fields."""
    from safetensors.torch import load_file

    folder = resolve_pretrained(source, revision)
    config_path = folder / CONFIG_NAME
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_path}: unreadable config ({exc})") from exc
    meta = raw.get("fusmae_fast") if isinstance(raw, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("weights") not in WEIGHTS:
        raise ValueError(f"{config_path}: not written by FusMAE.save_pretrained (no 'fusmae_fast' entry)")
    config = ModelConfig.from_dict({**raw, **overrides})
    weights_file = folder / WEIGHTS_NAME
    try:
        state = load_file(str(weights_file), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{weights_file}: unreadable weights ({exc})") from exc
    return Pretrained(config=config, state_dict=state, weights=meta["weights"], weights_file=weights_file)
