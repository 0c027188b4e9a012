"""bench/step_ceiling.py: every FLOP the step counts is replayed alone, and the tables come out."""

import json

import pytest

from fusmae_fast.bench import step_ceiling


def test_ceiling_replays_all_the_counted_work(tmp_path):
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
