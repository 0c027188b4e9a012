"""Fus-MAE pretraining (paper §4, docs/design.md §4): single process or ``torchrun`` DDP.

    fusmae-fast pretrain --preset tiny --epochs 2                    # built-in sample, CPU
    fusmae-fast pretrain --data STORE --preset base --kernels triton --batch_size 200
    torchrun --nproc_per_node=8 -m fusmae_fast.pretrain --data STORE --preset base

Learning rate: MAE's rule ``lr = blr * effective_batch / 256`` with effective batch = batch_size x
accum_iter x world size. The paper's 1.5625e-4 at batch 200 is the *absolute* lr; it equals
blr = 2e-4 under that rule, which is our default blr (so batch 200 gives the paper's lr exactly).

Exactness: every sample's mask is drawn from a seed derived from (run seed, epoch, dataset index), the
sampler's order from (run seed, epoch), and checkpoints hold model, optimizer, scaler, step, epoch,
position in the epoch, all RNG states and the settings that determine the run's course (a resume
with other settings stops, listing them, unless ``--allow_changes`` names them). On the CPU, N steps
+ resume + N steps is bit-identical to 2N steps (tested). Checkpoints are written atomically (see
``fusmae_fast.checkpoint``), never from non-finite weights; those saved just before a non-finite loss
are marked suspect and ``--resume auto`` passes over them.

The parts, in the order a run meets them:

    config.py      PretrainConfig and its checks
    setup.py       device, DDP, precision, run folder, datasets, model, optimizer (PretrainRun)
    sampling.py    the resumable sampler, dataset indices, per-sample mask seeds
    state.py       the run's position and RNG states; checkpoint state out (save) and in (resume)
    trajectory.py  what determines the run's course: recorded in checkpoints, compared on resume
    engine.py      train_one_epoch and its steps; the lr schedule; the non-finite loss guard
    reporting.py   log.jsonl, the progress bar, loss curve and reconstruction figures
    driver.py      run_pretraining: set up, resume, epochs, export the encoder
    cli.py         fusmae-fast pretrain / python -m fusmae_fast.pretrain
"""

from fusmae_fast.device import resolve_precision
from fusmae_fast.pretrain.cli import add_arguments, config_from_args, main, run
from fusmae_fast.pretrain.config import PRECISIONS, PretrainConfig
from fusmae_fast.pretrain.driver import PretrainResult, run_pretraining
from fusmae_fast.pretrain.engine import NonFiniteLossError, lr_at, train_one_epoch
from fusmae_fast.pretrain.reporting import peak_memory_mb
from fusmae_fast.pretrain.sampling import IndexedDataset, ResumableSampler, sample_seeds
from fusmae_fast.pretrain.setup import DistInfo, init_distributed, param_groups, resolve_dataset
from fusmae_fast.pretrain.state import rng_state, set_rng_state

__all__ = [
    "PRECISIONS",
    "DistInfo",
    "IndexedDataset",
    "NonFiniteLossError",
    "PretrainConfig",
    "PretrainResult",
    "ResumableSampler",
    "add_arguments",
    "config_from_args",
    "init_distributed",
    "lr_at",
    "main",
    "param_groups",
    "peak_memory_mb",
    "resolve_dataset",
    "resolve_precision",
    "rng_state",
    "run",
    "run_pretraining",
    "sample_seeds",
    "set_rng_state",
    "train_one_epoch",
]
