"""bench/step_ceiling.py: every FLOP the step counts is replayed alone, and the tables come out."""

import json

import pytest

from fusmae_fast import form_timing
from fusmae_fast.bench import step_ceiling


def sdpa_form(forms):
    """A stand-in for form_timing's timing that picks an SDPA form where there is one: which attention
    kernels the step runs then does not depend on which form a busy machine times fastest."""
    name = next((n for n in sorted(forms) if "sdpa" in n), sorted(forms)[0])
    return name, forms[name]()


@pytest.fixture
def sdpa_forms(monkeypatch):
    """No picks left by earlier tests of this process; forms picked by ``sdpa_form`` during the test."""
    form_timing.set_form_timing(form_timing.form_timing_enabled())
    monkeypatch.setattr(form_timing, "_time_forms", sdpa_form)
    yield
    form_timing.set_form_timing(form_timing.form_timing_enabled())


def test_ceiling_replays_all_the_counted_work(tmp_path, sdpa_forms):
    assert (
        step_ceiling.main(
            ["--presets", "tiny", "--precision", "fp32", "--reps", "1", "--out-dir", str(tmp_path)]
        )
        == 0
    )
    result = json.loads((tmp_path / "step_ceiling_cpu.json").read_text())
    (row,) = result["rows"]
    # the recorded matrix products and attention kernels carry exactly the FLOPs the step is credited with
    assert sum(op["gflop"] for op in row["ops"].values()) == pytest.approx(row["gflop_per_step"], rel=1e-9)
    assert {"mm", "addmm", "sdpa (CPU flash)", "sdpa backward (CPU flash)"} <= set(row["ops"])
    assert 0 < row["matrix_ms_alone"] and 0 < row["ceiling"]
    assert row["rest_ms"] == pytest.approx(row["recorded_step_ms"] - row["matrix_ms_in_place"])
    md = (tmp_path / "step_ceiling_cpu.md").read_text()
    assert "| tiny | fp32 | 32 |" in md and "`sdpa backward (CPU flash)`" in md


def test_unknown_preset_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        step_ceiling.main(["--presets", "huge"])
    assert exc.value.code == 2
    assert "--presets: unknown preset 'huge'" in capsys.readouterr().err
