"""bench/step_ab.py: two forms of a step alternated in one process; the summary counts each pair's A / B
ratio, and a run writes its JSON and table."""

import json

import pytest

from fusmae_fast.bench import step_ab


def test_summary_of_pairs():
    pairs = [{"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}]
    s = step_ab.summary(pairs)
    assert s["ratio_median"] == 1.5 and s["ratio_min"] == 0.5 and s["ratio_max"] == 2.0
    assert s["b_faster_pairs"] == 2 and s["pairs"] == 3
    assert s["a_ms_median"] == 2000.0 and s["b_ms_median"] == 2000.0


def test_pairs_alternate_their_order():
    calls = []
    steps = {side: (lambda side=side: calls.append(side)) for side in "ab"}
    pairs = step_ab.time_pairs(steps, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"] and len(pairs) == 3
    assert all(p.keys() == {"a", "b"} and min(p.values()) >= 0 for p in pairs)


def test_an_a_a_run_writes_its_result(tmp_path):
    argv = ["--preset", "tiny", "--batch", "2", "--precision", "fp32", "--b", "eager", "--pairs", "2"]
    assert step_ab.main([*argv, "--warmup", "0", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "step_ab_cpu.json").read_text())
    assert result["config"]["a"] == result["config"]["b"] == "eager" and len(result["pairs_s"]) == 2
    assert result["summary"]["pairs"] == 2 and result["summary"]["ratio_median"] > 0
    assert "A / B median" in (tmp_path / "step_ab_cpu.md").read_text()


def test_the_rules_form_runs_with_timing_off(monkeypatch):
    """``rules``: the step runs with form timing off, and timing is back on after it."""
    from fusmae_fast import form_timing

    seen = []
    monkeypatch.setattr(
        "fusmae_fast.bench.step.build",
        lambda cfg: (None, lambda: seen.append(form_timing.form_timing_enabled())),
    )
    args = step_ab.parse_args(["--a", "rules", "--b", "eager"])
    steps = step_ab.build_forms(args, 2)
    steps["a"](), steps["b"]()
    assert seen == [False, True] and form_timing.form_timing_enabled()


@pytest.mark.parametrize("bad", [["--pairs", "0"], ["--warmup", "-1"], ["--batch", "0"]])
def test_bad_flags_are_refused(bad):
    with pytest.raises(SystemExit):
        step_ab.parse_args(bad)


def test_the_plain_form_builds_the_plain_model(monkeypatch):
    """``plain``: that side is built with the textbook provider, the other with FusMAE, both eager."""
    built = []
    monkeypatch.setattr("fusmae_fast.bench.step.build", lambda cfg: (built.append(cfg), lambda: None))
    step_ab.build_forms(step_ab.parse_args(["--a", "eager", "--b", "plain"]), 2)
    assert [(c["provider"], c["compile"]) for c in built] == [("fusmae", False), ("plain", False)]
