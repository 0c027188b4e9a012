"""Pretraining: exact resume, atomic checkpoints, the NaN guard, DDP equivalence, outputs."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from pairs import RandomPairs  # noqa: E402  (tests/e2e is on sys.path under pytest)

from fusmae_fast import FusMAE, checkpoint, load_encoder
from fusmae_fast.pretrain import NonFiniteLossError, PretrainConfig, lr_at, run_pretraining


def _cfg(tmp, **kw):
    base = dict(
        output_dir=str(tmp),
        epochs=2,
        batch_size=4,
        num_workers=0,
        warmup_epochs=1,
        recon_samples=0,
        log_every=1,
        precision="fp32",
        progress=False,
        device="cpu",
        blr=1e-3,
    )
    base.update(kw)
    return PretrainConfig(**base)


def _losses(folder):
    with open(os.path.join(folder, "log.jsonl")) as fh:
        return {r["step"]: r["loss"] for r in map(json.loads, fh) if "loss" in r}


def _weights(folder):
    path, state = checkpoint.latest_valid(os.path.join(folder, "checkpoints"))
    return state["model"]


@pytest.mark.parametrize("masking", ["consistent", "independent"])
def test_resume_is_bit_exact(tmp_path, masking):
    data = RandomPairs(12)
    full = run_pretraining(_cfg(tmp_path / "full", masking=masking), train_set=data)
    assert full.steps == 6 and full.epochs_done == 2
    # stop mid-epoch 1 (step 4 = epoch 1, iteration 1), then resume to the end
    part = run_pretraining(_cfg(tmp_path / "part", masking=masking, max_steps=4), train_set=data)
    assert part.steps == 4
    resumed = run_pretraining(_cfg(tmp_path / "part", masking=masking, resume="auto"), train_set=data)
    assert resumed.steps == 6
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _losses(tmp_path / "full") == _losses(tmp_path / "part")


def test_resume_runs_the_forms_the_checkpoint_recorded(tmp_path, monkeypatch):
    """A resumed run (in a new process nothing is recorded) adopts the checkpoint's form picks instead of
    timing the torch path's forms afresh, which could pick other forms and round differently."""
    from fusmae_fast import form_timing

    data = RandomPairs(12)
    form_timing.set_form_timing(True)
    part = run_pretraining(_cfg(tmp_path, max_steps=4), train_set=data)
    assert part.steps == 4 and form_timing.picks()
    recorded = form_timing.picks()
    form_timing.set_form_timing(True)  # forget them, as a new process would

    def timed_again(forms):
        raise AssertionError(f"timed again: {list(forms)}")

    monkeypatch.setattr(form_timing, "_time_forms", timed_again)
    resumed = run_pretraining(_cfg(tmp_path, resume="auto"), train_set=data)
    assert resumed.steps == 6 and form_timing.picks() == recorded


def test_outputs_and_loss_falls(tmp_path):
    data = RandomPairs(8)
    res = run_pretraining(
        _cfg(tmp_path, epochs=6, batch_size=4, recon_samples=2, blr=5e-3, warmup_epochs=1),
        train_set=data,
        val_set=data,
    )
    for name in (
        "log.jsonl",
        "config.json",
        "loss.png",
        "recon_epoch000.png",
        "recon_epoch005.png",
        "encoder.safetensors",
    ):
        assert (tmp_path / name).is_file(), name
    losses = _losses(tmp_path)
    first, last = losses[min(losses)], losses[max(losses)]
    assert last < first, (first, last)
    rec = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    for key in (
        "step",
        "epoch",
        "lr",
        "loss",
        "loss_s1",
        "loss_s2",
        "images_per_s",
        "data_wait_frac",
        "peak_mem_mb",
    ):
        assert key in rec
    assert len(checkpoint.list_checkpoints(tmp_path / "checkpoints")) == 3  # keep_last
    enc = load_encoder(tmp_path / "encoder.safetensors")
    s = data[0]
    assert torch.isfinite(enc.encode(s["s1"][None], s["s2"][None]).cls).all()
    assert res.final_loss == last


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data = RandomPairs(8)
    run_pretraining(_cfg(tmp_path, epochs=1), train_set=data)
    ckpts = checkpoint.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt-00000002.pt"]

    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith(".pt"):
            raise KeyboardInterrupt("simulated crash mid-save")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run_pretraining(_cfg(tmp_path, epochs=2, resume="auto"), train_set=data)
    monkeypatch.setattr(os, "replace", real_replace)
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert names == ["ckpt-00000002.pt", "ckpt-00000002.pt.json"]  # no temp file, no partial checkpoint
    path, state = checkpoint.latest_valid(tmp_path / "checkpoints")
    assert state["step"] == 2


def test_corrupt_checkpoint_falls_back(tmp_path, capsys):
    data = RandomPairs(8)
    run_pretraining(_cfg(tmp_path, epochs=2), train_set=data)
    newest = checkpoint.list_checkpoints(tmp_path / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    path, state = checkpoint.latest_valid(tmp_path / "checkpoints")
    assert state["step"] == 2 and path.name == "ckpt-00000002.pt"
    assert "skipping checkpoint ckpt-00000004.pt" in capsys.readouterr().err
    with pytest.raises(checkpoint.CorruptCheckpointError):
        checkpoint.load_checkpoint(newest)


def test_nonfinite_loss_stops_without_saving(tmp_path):
    data = RandomPairs(8, poison=tuple(range(8)))
    with pytest.raises(NonFiniteLossError, match="optimizer step 0"):
        run_pretraining(_cfg(tmp_path, epochs=1, batch_size=4), train_set=data)
    assert checkpoint.list_checkpoints(tmp_path / "checkpoints") == []


def test_nonfinite_loss_skip_option(tmp_path):
    data = RandomPairs(8, poison=(0, 1, 2, 3, 4, 5, 6, 7))
    res = run_pretraining(_cfg(tmp_path, epochs=1, on_nonfinite="skip"), train_set=data)
    assert res.skipped_batches == 2 and res.steps == 0 and res.epochs_done == 1


def test_lr_schedule_and_config_checks():
    cfg = PretrainConfig(epochs=10, warmup_epochs=2, min_lr=0.0)
    assert lr_at(cfg, 1.0, 1.0) == pytest.approx(0.5)
    assert lr_at(cfg, 1.0, 2.0) == pytest.approx(1.0)
    assert lr_at(cfg, 1.0, 6.0) == pytest.approx(0.5)
    assert lr_at(cfg, 1.0, 10.0) == pytest.approx(0.0)
    # paper: 1.5625e-4 at batch 200 is our default blr x 200 / 256
    assert PretrainConfig().blr * 200 / 256 == pytest.approx(1.5625e-4)
    with pytest.raises(ValueError, match="precision"):
        PretrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="warmup_epochs"):
        PretrainConfig(epochs=2, warmup_epochs=3)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    run_pretraining(_cfg(out, epochs=1, max_steps=1, batch_size=2), train_set=RandomPairs(8))
    torch.distributed.destroy_process_group()


def test_two_process_gloo_equals_one_process_double_batch(tmp_path):
    torch.set_num_threads(1)
    single = tmp_path / "single"
    run_pretraining(_cfg(single, epochs=1, max_steps=1, batch_size=4), train_set=RandomPairs(8))
    ddp = tmp_path / "ddp"
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(ddp)), nprocs=2, start_method="spawn")
    a, b = _weights(single), _weights(ddp)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=1e-5, msg=k)
    # and the step really moved the weights
    torch.manual_seed(0)
    init = FusMAE(_cfg(single).model_config())
    assert not torch.equal(init.state_dict()["blocks.0.mlp.fc1.weight"], a["blocks.0.mlp.fc1.weight"])


def test_three_steps_triton_equal_torch(tmp_path):
    """--kernels triton (interpreter on a CPU) follows --kernels torch for 3 steps (fp32, rel. 1e-4)."""
    data = RandomPairs(6)
    run_pretraining(_cfg(tmp_path / "t", epochs=1, batch_size=2, kernels="torch"), train_set=data)
    run_pretraining(_cfg(tmp_path / "k", epochs=1, batch_size=2, kernels="triton"), train_set=data)
    a, b = _losses(tmp_path / "t"), _losses(tmp_path / "k")
    assert sorted(a) == [1, 2, 3]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4)


def test_masked_projection_gives_the_same_losses(tmp_path):
    """--masked-projection (decoders project masked rows only) changes no loss of a short run."""
    data = RandomPairs(8, size=120)
    runs = {}
    for flag in (False, True):
        out = tmp_path / f"mp{int(flag)}"
        run_pretraining(_cfg(out, masking="consistent", masked_projection=flag, epochs=1), train_set=data)
        runs[flag] = _losses(out)
    assert runs[False].keys() == runs[True].keys() and len(runs[False]) >= 2
    for step, loss in runs[False].items():
        assert abs(runs[True][step] - loss) <= 1e-5 * abs(loss), (step, loss, runs[True][step])
