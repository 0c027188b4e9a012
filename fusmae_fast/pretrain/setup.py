"""Set-up of a pretraining run: device, DDP, precision, run folder, datasets, model, optimizer.

``set_up`` builds a :class:`PretrainRun` in a fixed order (the global RNG is seeded just before the
model is made, so the initial weights depend only on the run seed); ``wrap_for_training`` adds DDP
and ``torch.compile`` once the checkpoint (if any) is loaded into the bare model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.device import resolve_device, resolve_precision
from fusmae_fast.model import FusMAE
from fusmae_fast.optim import adamw
from fusmae_fast.pretrain.config import PretrainConfig
from fusmae_fast.pretrain.sampling import IndexedDataset, ResumableSampler
from fusmae_fast.pretrain.trajectory import run_settings


@dataclass
class DistInfo:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 when not distributed)."""

    rank: int = 0
    """Global rank."""
    world: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this machine (selects the GPU)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class PretrainRun:
    """What set-up builds: everything a run needs besides its position (``TrainState``)."""

    cfg: PretrainConfig
    """The run's settings."""
    device: torch.device
    """Where the model runs (this rank's GPU under DDP)."""
    dist: DistInfo
    """Rank and world size."""
    precision: str
    """'fp32', 'bf16' or 'fp16' ('auto' resolved for the device)."""
    out_dir: Path
    """The run folder."""
    train_set: Dataset
    """Pretraining samples (items with ``s1`` and ``s2``)."""
    val_set: Dataset | None
    """Samples of the reconstruction figures (None: the training set's)."""
    model: FusMAE
    """The bare model (not wrapped in DDP or compiled): checkpoints and figures use it."""
    optimizer: torch.optim.Optimizer
    """AdamW over ``param_groups``."""
    scaler: torch.amp.GradScaler
    """Loss scaler (enabled for fp16 only)."""
    base_lr: float
    """Peak lr: ``cfg.lr``, or ``cfg.blr`` x effective batch / 256."""
    sampler: ResumableSampler
    """This rank's share of each epoch's order."""
    iters_per_epoch: int
    """Batches per epoch and rank (a whole number of optimizer steps)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What determines the run's course (``trajectory.run_settings``): recorded in every checkpoint."""

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def epoch_loader(self, epoch: int, iter_in_epoch: int) -> DataLoader:
        """The batches of ``epoch`` from its iteration ``iter_in_epoch`` on (items carry ``index``)."""
        self.sampler.set_epoch(epoch, start=iter_in_epoch * self.cfg.batch_size)
        return DataLoader(
            IndexedDataset(self.train_set),
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )


def set_up(cfg: PretrainConfig, train_set: Dataset | None, val_set: Dataset | None) -> PretrainRun:
    """Everything but the run's position; datasets given here replace those ``cfg.data`` names."""
    device, distinfo = select_device(cfg.device, cfg.kernels)
    precision = resolve_precision(cfg.precision, device)
    out_dir = Path(cfg.output_dir)
    if distinfo.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out_dir / "config.json", json.dumps({**cfg.to_dict(), "precision_resolved": precision}, indent=1)
        )
    train_set, val_set = open_datasets(cfg, train_set, val_set)

    torch.manual_seed(cfg.seed)
    model = FusMAE(cfg.model_config()).to(device)
    optimizer = adamw(param_groups(model, cfg.weight_decay), lr=0.0, betas=(cfg.beta1, cfg.beta2))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    eff_batch = cfg.batch_size * cfg.accum_iter * distinfo.world
    base_lr = cfg.lr if cfg.lr is not None else cfg.blr * eff_batch / 256

    sampler = ResumableSampler(len(train_set), seed=cfg.seed, rank=distinfo.rank, world=distinfo.world)  # type: ignore[arg-type]
    settings = run_settings(cfg, distinfo.world, precision, base_lr, train_set)
    return PretrainRun(
        cfg=cfg,
        device=device,
        dist=distinfo,
        precision=precision,
        out_dir=out_dir,
        train_set=train_set,
        val_set=val_set,
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        base_lr=base_lr,
        sampler=sampler,
        iters_per_epoch=iterations_per_epoch(cfg, len(sampler)),
        settings=settings,
    )


def wrap_for_training(run: PretrainRun) -> torch.nn.Module:
    """The model the steps call: DDP over ranks when distributed, then ``torch.compile`` if asked."""
    train_model: torch.nn.Module = run.model
    if run.dist.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
    if run.cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


# ------------------------------------------------------------------------------- device and DDP
def select_device(choice: str, kernels: str = "torch") -> tuple[torch.device, DistInfo]:
    """The device ``choice`` names ('auto': cuda when available; checked against the machine and
    ``kernels``), joined to DDP under torchrun."""
    device = resolve_device(choice, kernels)
    distinfo = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", distinfo.local_rank)
    return device, distinfo


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_kind == "cuda":
            # before the group, and named to it: NCCL binds each rank's communicator to its device
            # (no guessing from the current device, no barrier on the wrong GPU)
            torch.cuda.set_device(local)
            dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group(backend="gloo")
    elif device_kind == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(rank=rank, world=world, local_rank=local)


# ------------------------------------------------------------------------------------- datasets
def resolve_dataset(path: str | None, split: str, image_size: int = 120) -> Dataset:
    """The dataset at ``path`` (packed store or raw root), or the built-in sample when None, with
    images brought to the model's ``image_size``."""
    from fusmae_fast.data import open_dataset

    return open_dataset(path, split=split, image_size=image_size)


def open_datasets(
    cfg: PretrainConfig, train_set: Dataset | None, val_set: Dataset | None
) -> tuple[Dataset, Dataset | None]:
    """The training set and the reconstruction figures' set (the validation split, else training)."""
    if train_set is None:
        image_size = cfg.model_config().img_size
        train_set = resolve_dataset(cfg.data, "train", image_size)
        if val_set is None and cfg.recon_samples:
            try:
                val_set = resolve_dataset(cfg.data, "validation", image_size)
            except (FileNotFoundError, ValueError, KeyError):
                val_set = train_set
    if len(train_set) == 0:  # type: ignore[arg-type]
        raise ValueError("the training set is empty")
    return train_set, val_set


def iterations_per_epoch(cfg: PretrainConfig, samples_per_rank: int) -> int:
    """Batches per epoch and rank, cut to a whole number of optimizer steps."""
    iters = samples_per_rank // cfg.batch_size
    if iters < cfg.accum_iter:
        raise ValueError(
            f"{samples_per_rank} samples per rank give {iters} batches of {cfg.batch_size}, fewer than "
            f"accum_iter={cfg.accum_iter}: lower --batch_size"
        )
    return iters // cfg.accum_iter * cfg.accum_iter


# ---------------------------------------------------------------------------------------- model
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms (1-d parameters) and the learned tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith("_token") or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
