"""Issue 13, item 4: every numeric flag of pretrain and eval is checked (finite, in range); the error
is one line naming the flag, exit status 2, and nothing is trained or written."""

import pytest
from runs import TINY, cli, one_line_error

PRETRAIN_BAD = [
    ("--lr", "nan"),
    ("--lr", "0"),
    ("--blr", "inf"),
    ("--blr", "-1e-3"),
    ("--min_lr", "nan"),
    ("--min_lr", "-1"),
    ("--warmup_epochs", "nan"),
    ("--warmup_epochs", "-1"),
    ("--warmup_epochs", "3"),  # longer than --epochs 2
    ("--weight_decay", "inf"),
    ("--weight_decay", "-0.1"),
    ("--clip_grad", "-1"),
    ("--clip_grad", "nan"),
    ("--mask_ratio", "nan"),
    ("--mask_ratio", "1"),
    ("--epochs", "0"),
    ("--batch_size", "0"),
    ("--accum_iter", "0"),
    ("--seed", "-1"),
    ("--num_workers", "-1"),
    ("--save_every", "-1"),
    ("--keep_last", "-1"),
    ("--log_every", "0"),
    ("--max_steps", "0"),
    ("--max_skips", "0"),
    ("--suspect_steps", "0"),
    ("--recon_samples", "-1"),
]


@pytest.mark.parametrize(("flag", "value"), PRETRAIN_BAD, ids=[f"{f}={v}" for f, v in PRETRAIN_BAD])
def test_pretrain_flag_out_of_range(tmp_path, flag, value):
    out_dir = tmp_path / "run"
    args = ["pretrain", *TINY, "--epochs", "2", "--output_dir", out_dir, f"{flag}={value}"]
    rc, _, err = cli(args)
    assert rc == 2
    assert one_line_error(err) and f"({flag})" in err, err
    assert not out_dir.exists()


EVAL_BAD = [
    ("--lr", "nan"),
    ("--lr", "-1"),
    ("--weight_decay", "inf"),
    ("--weight_decay", "-1"),
    ("--label-fraction", "nan"),
    ("--label-fraction", "0"),
    ("--layer_decay", "nan"),
    ("--layer_decay", "1.5"),
    ("--epochs", "0"),
    ("--batch_size", "0"),
    ("--seed", "-1"),
    ("--num_workers", "-1"),
]


@pytest.mark.parametrize(("flag", "value"), EVAL_BAD, ids=[f"{f}={v}" for f, v in EVAL_BAD])
def test_eval_flag_out_of_range(tmp_path, flag, value):
    out_dir = tmp_path / "eval"
    args = ["eval", "linear", "--baseline", "random", "--out", out_dir, f"{flag}={value}"]
    rc, _, err = cli(args)
    assert rc == 2
    assert one_line_error(err) and f"({flag})" in err, err
    assert not out_dir.exists()
