"""What a run reports: ``log.jsonl``, the progress bar, the loss curve and reconstruction figures.

``log.jsonl`` gets one line per ``log_every`` optimizer steps (and at each epoch end and the last
step) with the mean losses since the previous line (averaged over ranks), the lr, throughput, the
fraction of time spent waiting for data, peak memory and the precision; skipped batches and resumes
get an ``event`` line. A run that starts at step S first cuts the log to what happened up to S (a
killed run's later lines go), so that each step is logged once. Only rank 0 writes files; every rank
takes part in the averaging.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.model import FusMAEOutput
from fusmae_fast.pretrain.setup import PretrainRun
from fusmae_fast.pretrain.state import Resumed, TrainState
from fusmae_fast.progress import progress_bar


@dataclass
class LossWindow:
    """Sums over the batches trained on since the last log line."""

    loss: float = 0.0
    """Sum of the batches' total losses."""
    loss_s1: float = 0.0
    """Sum of their S1 losses."""
    loss_s2: float = 0.0
    """Sum of their S2 losses."""
    n: int = 0
    """Batches summed."""
    images: int = 0
    """Images seen by all ranks."""
    wait: float = 0.0
    """Seconds spent waiting for the next batch."""
    t0: float = field(default_factory=time.perf_counter)
    """When the window opened."""

    def add(self, out: FusMAEOutput, images: int) -> None:
        self.loss += float(out.loss.detach())
        self.loss_s1 += float(out.loss_s1.detach())
        self.loss_s2 += float(out.loss_s2.detach())
        self.n += 1
        self.images += images


class RunReport:
    """The run's log, progress bar and figures; ``final_loss`` is the last loss logged."""

    def __init__(self, run: PretrainRun) -> None:
        self.run = run
        self.log_path = run.out_dir / "log.jsonl"
        self.show_bar = run.cfg.progress and run.dist.is_main and sys.stderr.isatty()
        self.recon = (
            fixed_batch(run.val_set or run.train_set, run.cfg.recon_samples, run.device)
            if run.dist.is_main
            else None
        )
        self.window = LossWindow()
        self.final_loss: float | None = None

    def start_at(self, resumed: Resumed, notes: list[str]) -> None:
        """Cut log.jsonl to the resumed step, then say where the run starts (rank 0: printed and, for a
        resume, an ``event`` line)."""
        if not self.run.dist.is_main:
            return
        step = resumed.pos.step
        dropped = truncate_log(self.log_path, step)
        lines = [*resumed.notes, *notes]
        if dropped:
            lines.append(
                f"log.jsonl: removed {dropped} line(s) written after step {step} by an interrupted run"
            )
        for line in lines:
            print(f"[fusmae-fast] {line}")
        self.final_loss = last_logged_loss(self.log_path)
        if resumed.source is not None:
            self.log({"event": "resumed", "step": step, "from": str(resumed.source), "notes": lines})

    def progress(self, pos: TrainState) -> Iterable[int]:
        """The iterations left in ``pos``'s epoch, with a progress bar when one is shown."""
        iters = self.run.iters_per_epoch
        return progress_bar(
            range(pos.iter_in_epoch, iters),
            enabled=self.show_bar,
            desc=f"epoch {pos.epoch}",
            total=iters - pos.iter_in_epoch,
        )

    def log(self, rec: dict[str, Any]) -> None:
        """Append ``rec`` as one line of log.jsonl (rank 0)."""
        if self.run.dist.is_main:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    def log_step(self, pos: TrainState, lr: float, *, end_of_epoch: bool, bar: Iterable[int]) -> None:
        """The window's line (all ranks call it: the losses are averaged over ranks); a new window."""
        w, run = self.window, self.run
        elapsed = time.perf_counter() - w.t0
        stats = torch.tensor([w.loss, w.loss_s1, w.loss_s2]) / w.n
        if run.dist.world > 1:
            stats = stats.to(run.device)
            dist.all_reduce(stats)
            stats = stats.cpu() / run.dist.world
        self.final_loss = float(stats[0])
        self.log(
            {
                "step": pos.step,
                "epoch": pos.epoch if not end_of_epoch else pos.epoch - 1,
                "lr": lr,
                "loss": self.final_loss,
                "loss_s1": float(stats[1]),
                "loss_s2": float(stats[2]),
                "images_per_s": w.images / max(elapsed, 1e-9),
                "data_wait_frac": w.wait / max(elapsed, 1e-9),
                "peak_mem_mb": peak_memory_mb(run.device),
                "precision": run.precision,
                "time": time.time(),
            }
        )
        if self.show_bar:
            bar.set_postfix(loss=f"{self.final_loss:.4f}", lr=f"{lr:.2e}")  # type: ignore[attr-defined]
        self.window = LossWindow()

    def epoch_figures(self, epoch: int) -> None:
        """loss.png so far and recon_epoch<epoch>.png of the fixed samples (rank 0)."""
        from fusmae_fast.plots import plot_reconstructions

        self.loss_curve()
        if self.recon is not None:
            s1, s2 = self.recon
            out_png = self.run.out_dir / f"recon_epoch{epoch:03d}.png"
            plot_reconstructions(self.run.model, s1, s2, out_png, title=f"epoch {epoch}")

    def loss_curve(self) -> None:
        """loss.png from log.jsonl, once it has lines."""
        from fusmae_fast.plots import plot_loss_curve

        if self.log_path.exists():
            plot_loss_curve(self.log_path, self.run.out_dir / "loss.png")


def truncate_log(path: Path, step: int) -> int:
    """Keep the loss lines of steps <= ``step`` and the events before it; returns the lines removed."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            dropped += 1
            continue
        s = rec.get("step", 0)
        if s < step or (s == step and "event" not in rec):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


def last_logged_loss(path: Path) -> float | None:
    """The loss of the last loss line of log.jsonl (None: none)."""
    if not path.is_file():
        return None
    losses = [rec["loss"] for rec in map(json.loads, path.read_text().splitlines()) if "loss" in rec]
    return losses[-1] if losses else None


def fixed_batch(dataset: Dataset, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first ``n`` samples of ``dataset`` as (s1, s2) on ``device``; None when there are none."""
    if n <= 0 or len(dataset) == 0:  # type: ignore[arg-type]
        return None
    items = [dataset[i] for i in range(min(n, len(dataset)))]  # type: ignore[arg-type]
    s1 = torch.stack([torch.as_tensor(it["s1"]) for it in items]).to(device)
    s2 = torch.stack([torch.as_tensor(it["s2"]) for it in items]).to(device)
    return s1, s2


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
