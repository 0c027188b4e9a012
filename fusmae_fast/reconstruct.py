"""``fusmae-fast reconstruct CKPT --data ... --out PNG``: reconstruction figure of any checkpoint.

CKPT is a training checkpoint (.pt) or a run folder (its newest valid checkpoint): the decoders are
needed, so an exported encoder alone is not enough. The figure shows, for ``--n`` samples of the
chosen split, S2 RGB and S1 VV/VH as original / masked input / reconstruction / reconstruction with
the visible patches pasted, with the masks drawn from ``--seed`` (same seed, same masks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fusmae_fast.checkpoint import latest_valid, load_checkpoint
from fusmae_fast.config import ModelConfig
from fusmae_fast.model import FusMAE


def load_training_checkpoint(ckpt: str | Path) -> FusMAE:
    """The whole model (encoder and decoders) from a checkpoint file or a run folder."""
    path = Path(ckpt)
    if path.is_dir():
        found = latest_valid(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
        if found is None:
            raise FileNotFoundError(f"{ckpt}: no valid training checkpoint found")
        state = found[1]
    elif path.suffix == ".safetensors":
        raise ValueError(f"{ckpt} holds only the encoder; reconstruction needs a training checkpoint (.pt)")
    else:
        state = load_checkpoint(path)
    model = FusMAE(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="training checkpoint (.pt) or run folder")
    p.add_argument("--data", default=None, help="dataset root or packed store (default: built-in sample)")
    p.add_argument("--split", default="val", help="split to draw samples from (default: val)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--n", type=int, default=4, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="masking seed")
    p.add_argument(
        "--masking", choices=("consistent", "independent"), default=None, help="override the masking"
    )


def run(args: argparse.Namespace) -> int:
    from fusmae_fast.data import open_dataset
    from fusmae_fast.plots import plot_reconstructions

    model = load_training_checkpoint(args.ckpt)
    if args.masking:
        model.config = model.config.replace(masking=args.masking)
    ds = open_dataset(args.data, split=args.split, image_size=model.config.img_size)
    n = min(args.n, len(ds))
    if n < 1:
        raise ValueError(f"the {args.split} split is empty")
    items = [ds[i] for i in range(n)]
    s1 = torch.stack([torch.as_tensor(it["s1"]) for it in items]).float()
    s2 = torch.stack([torch.as_tensor(it["s2"]) for it in items]).float()
    seeds = torch.arange(n, dtype=torch.int64) + args.seed * 1000
    out = plot_reconstructions(model, s1, s2, args.out, seeds=seeds, title=f"{Path(args.ckpt).name}")
    print(f"[fusmae-fast] wrote {out}")
    return 0
