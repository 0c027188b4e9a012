"""Issue 13, item 7: one line (exit status 2, the file or flag named, no traceback) where a user met
a traceback: a truncated encoder.safetensors (inside a run folder: the newest valid checkpoint is
used, saying so), ``--resume PATH`` to a corrupt file, a task that does not fit the data, float64 /
float16 inputs to the model in Python, ``--kernels triton`` / ``--device cuda`` without CUDA."""

import pytest
import torch
from runs import TINY, cli, one_line_error, pretrain_args

from fusmae_fast import build_model, checkpoint

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder of two steps (checkpoints 1 and 2, encoder.safetensors)."""
    from fusmae_fast.cli import main

    run = tmp_path_factory.mktemp("faults") / "run"
    assert main([*pretrain_args(run, "--save_every", 1, "--max_steps", 2)]) == 0
    return run


def _eval(ckpt, out, *extra):
    return [
        "eval",
        "linear",
        "--ckpt",
        ckpt,
        "--out",
        out,
        "--epochs",
        1,
        "--inputs",
        "s1",
        "--num_workers",
        0,
        "--no-progress",
        *extra,
    ]


def test_truncated_encoder_file_is_one_line(trained_run, tmp_path):
    enc = tmp_path / "encoder.safetensors"
    enc.write_bytes((trained_run / "encoder.safetensors").read_bytes()[:5000])
    rc, _, err = cli(_eval(enc, tmp_path / "eval"))
    assert rc == 2 and one_line_error(err)
    assert f"{enc}: not a readable safetensors file" in err


def test_truncated_encoder_in_a_run_folder_falls_back_to_the_newest_checkpoint(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    enc = run / "encoder.safetensors"
    enc.write_bytes(enc.read_bytes()[:5000])
    rc, _, err = cli(_eval(run, tmp_path / "eval"))
    assert rc == 0, err
    assert "not a readable safetensors file" in err and "using the newest valid checkpoint instead" in err
    assert "Traceback" not in err


def test_resume_from_a_corrupt_file_is_one_line(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    bad = run / "checkpoints" / "ckpt-00000002.pt"
    bad.write_bytes(bad.read_bytes()[:1000])
    rc, _, err = cli(pretrain_args(run, "--resume", bad, "--max_steps", 3))
    assert rc == 2 and one_line_error(err)
    assert f"--resume {bad}" in err and "truncated or altered" in err and "--resume auto" in err
    # and --resume auto passes over it to the previous one
    rc, out, err = cli(pretrain_args(run, "--resume", "auto", "--max_steps", 3))
    assert rc == 0, err
    assert "skipping checkpoint ckpt-00000002.pt" in err and "ckpt-00000001.pt" in out


@pytest.mark.parametrize(
    ("task", "data", "says"),
    [
        ("sen12ms", "sample", "use eval linear or eval finetune"),
        ("linear", "sample:sen12ms", "use eval sen12ms"),
    ],
)
def test_task_that_does_not_fit_the_data_is_one_line(tmp_path, task, data, says):
    args = ["eval", task, "--baseline", "random", "--out", tmp_path, "--epochs", 1, "--num_workers", 0]
    rc, _, err = cli([*args, "--data", data])
    assert rc == 2 and one_line_error(err)
    assert f"eval {task} needs" in err and says in err


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_model_inputs_of_another_dtype_name_the_argument(dtype):
    model = build_model("tiny")
    s1, s2 = torch.zeros(1, 2, 120, 120), torch.zeros(1, 12, 120, 120, dtype=dtype)
    with pytest.raises(TypeError, match=f"s2 is {dtype} but the model's weights are torch.float32"):
        model(s1, s2)
    with pytest.raises(TypeError, match="s2 is"):
        model.encode(None, s2)


@no_cuda
def test_kernels_triton_without_cuda_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    rc, _, err = cli(pretrain_args(tmp_path, "--kernels", "triton"))
    assert rc == 2 and one_line_error(err) and "--kernels triton needs a CUDA device" in err
    rc, _, err = cli(
        ["eval", "linear", "--baseline", "random", "--kernels", "triton", "--out", tmp_path],
    )
    assert rc == 2 and "--kernels triton needs a CUDA device" in err


@no_cuda
def test_device_cuda_without_cuda_is_one_line(tmp_path):
    rc, _, err = cli(["pretrain", *TINY, "--device", "cuda", "--output_dir", tmp_path])
    assert rc == 2 and one_line_error(err) and "--device cuda: no CUDA device" in err
    rc, _, err = cli(["eval", "linear", "--baseline", "random", "--device", "cuda", "--out", tmp_path])
    assert rc == 2 and "--device cuda: no CUDA device" in err
    assert checkpoint.list_checkpoints(tmp_path / "checkpoints") == []
