"""The CLI reports bad input as one clear line and exit status 2, not a traceback."""

from fusmae_fast.cli import main


def test_missing_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FUSMAE_DEBUG", raising=False)
    missing = tmp_path / "nope"
    assert main(["eval", "linear", "--ckpt", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"fusmae-fast eval: error: no checkpoint or encoder at {missing}" in err
    assert "Traceback" not in err


def test_missing_data_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FUSMAE_DEBUG", raising=False)
    args = [
        "pretrain",
        "--data",
        str(tmp_path / "nodata"),
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--warmup_epochs",
        "0",
        "--output_dir",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "fusmae-fast pretrain: error:" in err and "nodata" in err


def test_debug_env_shows_the_exception(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setenv("FUSMAE_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["eval", "linear", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])


def test_package_warnings_print_as_one_line(monkeypatch, capsys):
    import warnings

    from fusmae_fast import cli

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    passed_on = []
    monkeypatch.setattr(cli, "_PYTHON_SHOWWARNING", lambda msg, cat, fn, ln, *a: passed_on.append((msg, fn)))
    cli.one_line_warnings("eval")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("bf16 is emulated here", UserWarning, str(cli.PACKAGE_DIR / "device.py"), 7)
        warnings.warn_explicit("from elsewhere", UserWarning, "/somewhere/else.py", 3)
    assert capsys.readouterr().err.splitlines() == ["fusmae-fast eval: warning: bf16 is emulated here"]
    assert [(str(m), f) for m, f in passed_on] == [("from elsewhere", "/somewhere/else.py")]
