"""Fus-MAE pretraining (paper §4, SPEC §4): single process or ``torchrun`` DDP.

    fusmae-fast pretrain --preset tiny --epochs 2                    # built-in sample, CPU
    fusmae-fast pretrain --data STORE --preset base --kernels triton --batch_size 200
    torchrun --nproc_per_node=8 -m fusmae_fast.pretrain --data STORE --preset base

Learning rate: MAE's rule ``lr = blr * effective_batch / 256`` with effective batch = batch_size x
accum_iter x world size. The paper's 1.5625e-4 at batch 200 is the *absolute* lr; it equals
blr = 2e-4 under that rule, which is our default blr (so batch 200 gives the paper's lr exactly).

Exactness: every sample's mask is drawn from a seed derived from (run seed, epoch, dataset index), the
sampler's order from (run seed, epoch), and checkpoints hold model, optimizer, scaler, step, epoch,
position in the epoch and all RNG states. On the CPU, N steps + resume + N steps is bit-identical to
2N steps (tested). Checkpoints are written atomically (see ``checkpoint.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from fusmae_fast.checkpoint import (
    atomic_write_text,
    export_encoder,
    latest_valid,
    load_checkpoint,
    save_checkpoint,
)
from fusmae_fast.config import KERNELS, MASKINGS, VARIANTS, XATTN_WEIGHTS, ModelConfig
from fusmae_fast.masking import random_masking
from fusmae_fast.model import FusMAE

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; saved as ``config.json`` and inside every checkpoint."""

    data: str | None = None
    """Packed store or raw dataset root; None = the built-in synthetic sample (made once, cached)."""
    output_dir: str = "runs/pretrain"
    """Run folder: log.jsonl, config.json, checkpoints/, loss.png, recon_epochNNN.png, encoder.safetensors."""
    preset: str = "tiny"
    """Model preset: tiny, small or base."""
    variant: str = "xae"
    """'xae' or 'xad'."""
    masking: str = "consistent"
    """'consistent' or 'independent'."""
    xattn_weights: str = "shared"
    """'shared' or 'per_direction' cross-attention weights."""
    mask_ratio: float = 0.75
    """Fraction of the 2N patches masked."""
    norm_pix_loss: bool = True
    """Per-patch normalised targets."""
    kernels: str = "torch"
    """'torch' or 'triton'."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    masked_projection: bool = False
    """Decoders project only the masked patches (``FusMAE.forward(loss_only=True)``, consistent masking):
    25% fewer projection FLOPs, paid for with a gather and a scatter pass. Off by default: measured on
    this project's CPU it is slower (tiny +16%, small +0.7% per fwd+bwd), and the byte model predicts the
    same on GPUs (bench/fusion_savings.py, fusion 5)."""
    precision: str = "auto"
    """'fp32', 'bf16' (autocast), 'fp16' (autocast + GradScaler) or 'auto' (bf16 where the device
    supports it natively: CUDA with bf16, CPUs with AVX512-BF16/AMX; else fp16 on CUDA, fp32 on CPU)."""
    epochs: int = 100
    """Epochs (paper: 100)."""
    batch_size: int = 200
    """Images per process per iteration (paper: 200)."""
    accum_iter: int = 1
    """Iterations accumulated per optimizer step."""
    blr: float = 2.0e-4
    """Base lr: lr = blr x effective batch / 256 (2e-4 gives the paper's 1.5625e-4 at batch 200)."""
    lr: float | None = None
    """Absolute lr; overrides blr when given."""
    min_lr: float = 0.0
    """Floor of the cosine schedule."""
    warmup_epochs: float = 5.0
    """Linear warm-up length in epochs (per-iteration schedule)."""
    weight_decay: float = 0.05
    """AdamW weight decay (not on norms, biases, tokens)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    clip_grad: float | None = None
    """Clip the gradient norm to this value (off when None)."""
    seed: int = 0
    """Run seed: sampler order, masks, initialisation."""
    num_workers: int = 2
    """DataLoader worker processes per rank."""
    save_every: int = 0
    """Also checkpoint every N optimizer steps (0: only at epoch ends)."""
    keep_last: int = 3
    """Checkpoints kept."""
    resume: str | None = None
    """'auto' (newest valid checkpoint in output_dir, if any) or a checkpoint path."""
    on_nonfinite: str = "stop"
    """Non-finite loss: 'stop' (raise, saving nothing) or 'skip' (drop the batch, count it)."""
    log_every: int = 10
    """Write a log.jsonl line every N optimizer steps (and at each epoch end)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in all (smoke tests, benchmarks)."""
    recon_samples: int = 4
    """Fixed validation samples drawn in recon_epochNNN.png (0: no reconstruction figures)."""
    progress: bool = True
    """tqdm progress bars (only on rank 0 and a TTY)."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""

    def __post_init__(self) -> None:
        checks = [
            ("variant", VARIANTS),
            ("masking", MASKINGS),
            ("kernels", KERNELS),
            ("xattn_weights", XATTN_WEIGHTS),
            ("precision", PRECISIONS),
            ("on_nonfinite", ("stop", "skip")),
            ("device", ("auto", "cpu", "cuda")),
        ]
        for name, choices in checks:
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"PretrainConfig.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )
        for name in ("epochs", "batch_size", "accum_iter", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "save_every", "keep_last", "recon_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"PretrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError("PretrainConfig.blr / lr must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("PretrainConfig.max_steps must be >= 1 when given")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(
                f"PretrainConfig.warmup_epochs must lie in [0, epochs], got {self.warmup_epochs}"
            )
        self.model_config()  # validates the model fields

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_name(
            self.preset,
            variant=self.variant,
            masking=self.masking,
            xattn_weights=self.xattn_weights,
            mask_ratio=self.mask_ratio,
            norm_pix_loss=self.norm_pix_loss,
            kernels=self.kernels,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; nothing was saved over the last good checkpoint."""


# ------------------------------------------------------------------------------------------- data
class IndexedDataset(Dataset):
    """Adds ``index`` (the dataset position) to each item so that masks can be seeded per sample."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        return {"s1": item["s1"], "s2": item["s2"], "index": i}


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffling, sharded over ranks (equal counts, tail dropped), skippable start.

    Rank r of W takes positions r, r + W, ... of the epoch's permutation, so that W ranks x batch b see
    the same samples per step as 1 rank x batch W*b.
    """

    def __init__(self, size: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        if size < world:
            raise ValueError(f"dataset of {size} samples is smaller than the world size {world}")
        self.size, self.seed, self.rank, self.world, self.shuffle = size, seed, rank, world, shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` samples of this rank."""
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = (self.size // self.world) * self.world
        return order[self.rank : total : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return self.size // self.world - self.start


def sample_seeds(run_seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """One masking seed per sample from (run seed, epoch, dataset index)."""
    return (run_seed * 1_000_003 + epoch) * 10_000_019 + index.to(torch.int64)


def resolve_dataset(path: str | None, split: str, image_size: int = 120) -> Dataset:
    """The dataset at ``path`` (packed store or raw root), or the built-in sample when None, with
    images brought to the model's ``image_size``."""
    from fusmae_fast.data import open_dataset

    return open_dataset(path, split=split, image_size=image_size)


# ---------------------------------------------------------------------------------- environment
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    if device_kind == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(rank=rank, world=world, local_rank=local)


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def lr_at(cfg: PretrainConfig, base_lr: float, epoch_float: float) -> float:
    """MAE's per-iteration schedule: linear warm-up, then half-cycle cosine to min_lr."""
    if epoch_float < cfg.warmup_epochs:
        return base_lr * epoch_float / cfg.warmup_epochs
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-12)
    t = min((epoch_float - cfg.warmup_epochs) / span, 1.0)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


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


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------------------- loop
@dataclass
class PretrainResult:
    output_dir: Path
    steps: int
    epochs_done: int
    final_loss: float | None
    skipped_batches: int


def _fixed_batch(dataset: Dataset, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    if n <= 0 or len(dataset) == 0:  # type: ignore[arg-type]
        return None
    items = [dataset[i] for i in range(min(n, len(dataset)))]  # type: ignore[arg-type]
    s1 = torch.stack([torch.as_tensor(it["s1"]) for it in items]).to(device)
    s2 = torch.stack([torch.as_tensor(it["s2"]) for it in items]).to(device)
    return s1, s2


def run_pretraining(
    cfg: PretrainConfig,
    *,
    train_set: Dataset | None = None,
    val_set: Dataset | None = None,
) -> PretrainResult:
    """Pretrain as ``cfg`` says. Datasets may be given directly (items with ``s1`` and ``s2``)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    distinfo = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", distinfo.local_rank)
    precision = resolve_precision(cfg.precision, device)
    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    if distinfo.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out_dir / "config.json", json.dumps({**cfg.to_dict(), "precision_resolved": precision}, indent=1)
        )

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

    torch.manual_seed(cfg.seed)
    model = FusMAE(cfg.model_config()).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=0.0, betas=(cfg.beta1, cfg.beta2))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    eff_batch = cfg.batch_size * cfg.accum_iter * distinfo.world
    base_lr = cfg.lr if cfg.lr is not None else cfg.blr * eff_batch / 256

    sampler = ResumableSampler(len(train_set), seed=cfg.seed, rank=distinfo.rank, world=distinfo.world)  # type: ignore[arg-type]
    iters_per_epoch = len(sampler) // cfg.batch_size
    if iters_per_epoch < cfg.accum_iter:
        raise ValueError(
            f"{len(sampler)} samples per rank give {iters_per_epoch} batches of {cfg.batch_size}, fewer than "
            f"accum_iter={cfg.accum_iter}: lower --batch_size"
        )
    steps_per_epoch = iters_per_epoch // cfg.accum_iter
    iters_per_epoch = steps_per_epoch * cfg.accum_iter

    step, epoch, iter_in_epoch, skipped = 0, 0, 0, 0
    if cfg.resume:
        found = None
        if cfg.resume == "auto":
            found = latest_valid(ckpt_dir)
        else:
            found = (Path(cfg.resume), load_checkpoint(cfg.resume))
        if found is not None:
            path, state = found
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            step, epoch, iter_in_epoch = state["step"], state["epoch"], state["iter_in_epoch"]
            skipped = state.get("skipped_batches", 0)
            set_rng_state(state["rng"])
            if distinfo.is_main:
                print(
                    f"[fusmae-fast] resumed from {path} "
                    f"(step {step}, epoch {epoch}, iteration {iter_in_epoch})"
                )
        elif distinfo.is_main:
            print("[fusmae-fast] --resume auto: no checkpoint yet, starting from scratch")

    train_model: torch.nn.Module = model
    if distinfo.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model)

    recon = _fixed_batch(val_set or train_set, cfg.recon_samples, device) if distinfo.is_main else None
    log_path = out_dir / "log.jsonl"
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    show_bar = cfg.progress and distinfo.is_main and sys.stderr.isatty()

    def state_dict_for_save() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,
            "iter_in_epoch": iter_in_epoch,
            "skipped_batches": skipped,
            "rng": rng_state(),
            "config": cfg.to_dict(),
            "model_config": model.config.to_dict(),
        }

    def save() -> None:
        if distinfo.is_main:
            save_checkpoint(ckpt_dir, step, state_dict_for_save(), keep_last=cfg.keep_last)

    def log(rec: dict[str, Any]) -> None:
        if distinfo.is_main:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    window = {
        "loss": 0.0,
        "loss_s1": 0.0,
        "loss_s2": 0.0,
        "n": 0,
        "images": 0,
        "wait": 0.0,
        "t0": time.perf_counter(),
    }
    final_loss = None
    done = cfg.max_steps is not None and step >= cfg.max_steps
    model.train()
    while epoch < cfg.epochs and not done:
        sampler.set_epoch(epoch, start=iter_in_epoch * cfg.batch_size)
        loader = DataLoader(
            IndexedDataset(train_set),
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        batches = iter(loader)
        bar = _progress(
            range(iter_in_epoch, iters_per_epoch), iters_per_epoch - iter_in_epoch, show_bar, f"epoch {epoch}"
        )
        for it in bar:
            t_wait = time.perf_counter()
            batch = next(batches)
            window["wait"] += time.perf_counter() - t_wait
            s1 = batch["s1"].to(device, non_blocking=True).float()
            s2 = batch["s2"].to(device, non_blocking=True).float()
            seeds = sample_seeds(cfg.seed, epoch, batch["index"])
            ctx = (
                torch.autocast(device.type, dtype=autocast_dtype)
                if autocast_dtype
                else contextlib.nullcontext()
            )
            with ctx:
                # the masking is drawn eagerly (per-sample seeded host RNG), so that a compiled model
                # is one graph without breaks
                mcfg = model.config
                masking = random_masking(
                    s1.shape[0], mcfg.num_patches, mcfg.mask_ratio, mcfg.masking, seeds=seeds, device=device
                )
                out = train_model(s1, s2, masking=masking, loss_only=cfg.masked_projection)
            loss = out.loss
            finite = torch.isfinite(loss.detach()).to(torch.float32)
            if distinfo.world > 1:
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not bool(finite):
                if cfg.on_nonfinite == "stop":
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss.item()}) at optimizer step {step}, epoch {epoch}, "
                        f"iteration {it}; "
                        f"nothing was saved over the last good checkpoint in {ckpt_dir}. Lower the lr, use "
                        f"--precision fp32, check the data, or pass --on_nonfinite skip."
                    )
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                log({"event": "skipped_nonfinite", "step": step, "epoch": epoch, "iteration": it})
                iter_in_epoch = it + 1
                continue
            scaler.scale(loss / cfg.accum_iter).backward()
            window["loss"] += float(out.loss.detach())
            window["loss_s1"] += float(out.loss_s1.detach())
            window["loss_s2"] += float(out.loss_s2.detach())
            window["n"] += 1
            window["images"] += s1.shape[0] * distinfo.world
            iter_in_epoch = it + 1
            if iter_in_epoch % cfg.accum_iter:
                continue
            lr = lr_at(cfg, base_lr, epoch + iter_in_epoch / iters_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if cfg.clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            end_of_epoch = iter_in_epoch == iters_per_epoch
            if iter_in_epoch == iters_per_epoch:
                epoch, iter_in_epoch = epoch + 1, 0
            done = cfg.max_steps is not None and step >= cfg.max_steps
            if window["n"] and (step % cfg.log_every == 0 or end_of_epoch or done):
                elapsed = time.perf_counter() - window["t0"]
                stats = torch.tensor([window["loss"], window["loss_s1"], window["loss_s2"]]) / window["n"]
                if distinfo.world > 1:
                    stats = stats.to(device)
                    dist.all_reduce(stats)
                    stats = stats.cpu() / distinfo.world
                final_loss = float(stats[0])
                rec = {
                    "step": step,
                    "epoch": epoch if not end_of_epoch else epoch - 1,
                    "lr": lr,
                    "loss": final_loss,
                    "loss_s1": float(stats[1]),
                    "loss_s2": float(stats[2]),
                    "images_per_s": window["images"] / max(elapsed, 1e-9),
                    "data_wait_frac": window["wait"] / max(elapsed, 1e-9),
                    "peak_mem_mb": peak_memory_mb(device),
                    "precision": precision,
                    "time": time.time(),
                }
                log(rec)
                if show_bar:
                    bar.set_postfix(loss=f"{final_loss:.4f}", lr=f"{lr:.2e}")
                window.update(
                    loss=0.0, loss_s1=0.0, loss_s2=0.0, n=0, images=0, wait=0.0, t0=time.perf_counter()
                )
            if end_of_epoch or (cfg.save_every and step % cfg.save_every == 0) or done:
                save()
            if end_of_epoch and distinfo.is_main:
                _epoch_figures(model, out_dir, log_path, recon, epoch - 1)
            if done or end_of_epoch:
                break
        else:  # the epoch's last iterations were skipped (non-finite loss): the epoch is over all the same
            epoch, iter_in_epoch = epoch + 1, 0
        del batches, loader
    if distinfo.is_main:
        export_encoder(model, out_dir / "encoder.safetensors")
        if log_path.exists():
            from fusmae_fast.plots import plot_loss_curve

            plot_loss_curve(log_path, out_dir / "loss.png")
    if distinfo.world > 1:
        dist.barrier()
    return PretrainResult(out_dir, step, epoch, final_loss, skipped)


def _epoch_figures(model: FusMAE, out_dir: Path, log_path: Path, recon, epoch: int) -> None:
    from fusmae_fast.plots import plot_loss_curve, plot_reconstructions

    if log_path.exists():
        plot_loss_curve(log_path, out_dir / "loss.png")
    if recon is not None:
        s1, s2 = recon
        plot_reconstructions(model, s1, s2, out_dir / f"recon_epoch{epoch:03d}.png", title=f"epoch {epoch}")


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = PretrainConfig()
    p.add_argument("--data", default=None, help="packed store or dataset root (default: built-in sample)")
    p.add_argument("--output_dir", "--output-dir", "--out", dest="output_dir", default=d.output_dir)
    p.add_argument("--preset", default=d.preset, choices=("tiny", "small", "base"))
    p.add_argument("--variant", default=d.variant, choices=VARIANTS)
    p.add_argument("--masking", default=d.masking, choices=MASKINGS)
    p.add_argument(
        "--xattn_weights",
        "--xattn-weights",
        dest="xattn_weights",
        default=d.xattn_weights,
        choices=XATTN_WEIGHTS,
    )
    p.add_argument("--mask_ratio", "--mask-ratio", dest="mask_ratio", type=float, default=d.mask_ratio)
    p.add_argument(
        "--norm_pix_loss",
        "--norm-pix-loss",
        dest="norm_pix_loss",
        action=argparse.BooleanOptionalAction,
        default=d.norm_pix_loss,
    )
    p.add_argument("--kernels", default=d.kernels, choices=KERNELS)
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--masked-projection", "--masked_projection", dest="masked_projection", action="store_true",
        help="decoders project only the masked patches (consistent masking; fewer FLOPs, more passes)",
    )
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=d.batch_size)
    p.add_argument("--accum_iter", "--accum-iter", dest="accum_iter", type=int, default=d.accum_iter)
    p.add_argument("--blr", type=float, default=d.blr, help="base lr: lr = blr * effective batch / 256")
    p.add_argument("--lr", type=float, default=None, help="absolute lr (overrides --blr)")
    p.add_argument("--min_lr", "--min-lr", dest="min_lr", type=float, default=d.min_lr)
    p.add_argument(
        "--warmup_epochs", "--warmup-epochs", dest="warmup_epochs", type=float, default=d.warmup_epochs
    )
    p.add_argument(
        "--weight_decay", "--weight-decay", dest="weight_decay", type=float, default=d.weight_decay
    )
    p.add_argument("--clip_grad", "--clip-grad", dest="clip_grad", type=float, default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num_workers", "--num-workers", dest="num_workers", type=int, default=d.num_workers)
    p.add_argument("--save_every", "--save-every", dest="save_every", type=int, default=d.save_every)
    p.add_argument("--keep_last", "--keep-last", dest="keep_last", type=int, default=d.keep_last)
    p.add_argument("--resume", default=None, help="'auto' or a checkpoint path")
    p.add_argument(
        "--on_nonfinite",
        "--on-nonfinite",
        dest="on_nonfinite",
        default=d.on_nonfinite,
        choices=("stop", "skip"),
    )
    p.add_argument("--log_every", "--log-every", dest="log_every", type=int, default=d.log_every)
    p.add_argument("--max_steps", "--max-steps", dest="max_steps", type=int, default=None)
    p.add_argument(
        "--recon_samples", "--recon-samples", dest="recon_samples", type=int, default=d.recon_samples
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    return PretrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        result = run_pretraining(cfg)
    except NonFiniteLossError as exc:
        print(f"[fusmae-fast] {exc}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"[fusmae-fast] done: {result.steps} steps, {result.epochs_done} epochs, final loss "
            f"{result.final_loss if result.final_loss is None else round(result.final_loss, 4)}; "
            f"outputs in {result.output_dir}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fusmae_fast.pretrain", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
