"""Issue 13, item 1: a short run works with the default warm-up (clamped to the run, said in one line)."""

from runs import TINY, cli

from fusmae_fast.pretrain import PretrainConfig, lr_at


def test_one_epoch_with_the_default_warmup(tmp_path):
    args = ["pretrain", *TINY, "--epochs", "1", "--batch_size", "8", "--max_steps", "1"]
    rc, out, err = cli([*args, "--output_dir", tmp_path])
    assert rc == 0, err
    assert "warm-up: the default 5 epochs is longer than the run; warming up over all 1 epoch(s)" in out
    assert (tmp_path / "encoder.safetensors").is_file()


def test_default_warmup_clamps_to_the_run_and_explicit_one_is_checked():
    assert PretrainConfig(epochs=2).warmup == 2.0
    assert PretrainConfig(epochs=100).warmup == 5.0 and PretrainConfig(epochs=100).warmup_note() is None
    cfg = PretrainConfig(epochs=2)
    assert lr_at(cfg, 1.0, 1.0) == 0.5 and lr_at(cfg, 1.0, 2.0) == 1.0
    try:
        PretrainConfig(epochs=2, warmup_epochs=3)
    except ValueError as exc:
        assert "--warmup_epochs" in str(exc)
    else:
        raise AssertionError("an explicit warm-up longer than the run must be refused")
