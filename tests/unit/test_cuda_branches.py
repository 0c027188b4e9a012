"""The CUDA-only branches of pretraining, run where a CPU can run them (issue 14 item 5).

- fp16: ``GradScaler(device.type, enabled=True)`` also works on CPU tensors, so a whole fp16 run (autocast
  + scaler) and its resume run here; the optimizer step's scaler path (unscale, clip, skip on inf) too.
- DDP: on CUDA each rank selects its device before the NCCL group is created (checked with the calls
  recorded, no process group is made).
- memory: the CUDA branch of the peak-memory report reads ``torch.cuda.max_memory_allocated``.

What still needs a GPU (pinned-memory loaders, non_blocking copies overlapping, NCCL itself) runs in
``python bench/gpu_check.py`` (its e2e section).
"""

from __future__ import annotations

import types

import torch
from torch.utils.data import Dataset

from fusmae_fast import checkpoint
from fusmae_fast.pretrain import PretrainConfig, run_pretraining, setup
from fusmae_fast.pretrain.engine import optimizer_step
from fusmae_fast.pretrain.reporting import peak_memory_mb


class _Pairs(Dataset):
    """Seeded Gaussian S1 (2 bands) / S2 (12 bands) images of the tiny preset's size."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"s1": torch.randn(2, 120, 120, generator=g), "s2": torch.randn(12, 120, 120, generator=g)}


def _cfg(out, **kw) -> PretrainConfig:
    base = dict(
        output_dir=str(out),
        epochs=1,
        batch_size=2,
        num_workers=0,
        warmup_epochs=1,
        recon_samples=0,
        log_every=1,
        precision="fp16",
        progress=False,
        device="cpu",
        blr=1e-3,
    )
    return PretrainConfig(**{**base, **kw})


def test_fp16_run_uses_the_grad_scaler_on_cpu_and_resumes(tmp_path):
    first = run_pretraining(_cfg(tmp_path, max_steps=1), train_set=_Pairs())
    assert (
        first.steps == 1 and first.final_loss is not None and torch.isfinite(torch.tensor(first.final_loss))
    )
    _, state = checkpoint.latest_valid(tmp_path / "checkpoints")
    assert state["scaler"].get("scale") is not None, "fp16 must save an enabled GradScaler's state"
    resumed = run_pretraining(_cfg(tmp_path, resume="auto"), train_set=_Pairs())
    assert resumed.steps == 2


def test_optimizer_step_through_an_enabled_scaler_skips_inf_gradients():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)
    run = types.SimpleNamespace(
        model=model, optimizer=opt, scaler=scaler, cfg=types.SimpleNamespace(clip_grad=1.0)
    )
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(model(torch.ones(1, 3)).sum()).backward()
    model.weight.grad[0, 0] = float("inf")
    optimizer_step(run, lr=1.0)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)), (
        "inf step not skipped"
    )
    assert scaler.get_scale() == 4.0
    scaler.scale(model(torch.ones(1, 3)).sum()).backward()
    optimizer_step(run, lr=1.0)
    assert not torch.equal(before[0], model.weight), "a finite step must update the weights"


def test_ddp_selects_the_rank_device_before_the_nccl_group(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(setup.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        setup.dist,
        "init_process_group",
        lambda backend, **kw: calls.append(("group", backend, *(f"{k}={v}" for k, v in kw.items()))),
    )
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    info = setup.init_distributed("cuda")
    assert calls == [("set_device", 1), ("group", "nccl", "device_id=cuda:1")]
    assert (info.rank, info.world, info.local_rank) == (1, 2, 1)
    calls.clear()
    setup.init_distributed("cpu")
    assert calls == [("group", "gloo")]


def test_peak_memory_reads_cuda_stats_on_cuda(monkeypatch):
    seen = []

    def fake(device):
        seen.append(device)
        return 3 * 2**20

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", fake)
    assert peak_memory_mb(torch.device("cuda", 0)) == 3.0
    assert seen == [torch.device("cuda", 0)]
    assert peak_memory_mb(torch.device("cpu")) > 0


def test_cuda_rng_restores_the_devices_present(monkeypatch):
    """A checkpoint saved with 4 GPUs' generator states resumes on a machine with 2: devices 0 and 1
    get theirs, in order, and nothing is set on devices that do not exist."""
    from fusmae_fast.pretrain import state as state_mod

    saved = {**state_mod.rng_state(), "cuda": [torch.full((4,), i, dtype=torch.uint8) for i in range(4)]}
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.append((i, int(s[0]))))
    state_mod.set_rng_state(saved)
    assert restored == [(0, 0), (1, 1)]
