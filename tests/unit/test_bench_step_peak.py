"""bench/step.py's fraction-of-peak columns and encode task: peaks measured in the run and next to each
step, fractions from counted FLOPs, compiled rows taking their eager twin's count, and the encode rows
end to end."""

import json

import pytest
import torch

from fusmae_fast.bench import gemm_peak, report, step
from fusmae_fast.bench.flop_count import count_flops
from fusmae_fast.bench.timing import time_cpu
from fusmae_fast.linear import fused_linear_applies, linear, mkldnn_bf16_supported


def test_gemm_peak_is_the_best_product():
    peak = gemm_peak.measure_gemm_peak(torch.device("cpu"), "fp32", reps=1)
    assert set(peak["shapes_gflops"]) == set(gemm_peak.SHAPES)
    assert peak["peak_gflops"] == max(peak["shapes_gflops"].values()) > 0


@pytest.mark.parametrize("backward", [False, True])
def test_cpu_attention_flops_are_counted_like_the_explicit_form(backward):
    """SDPA on a CPU (its flash kernel) is credited with the explicit form's matmul FLOPs, plus the
    score recompute of a flash backward: 4 B H Lq Lk D forward, 2.5x that more backward."""
    b, h, lq, lk, d = 2, 3, 37, 50, 40
    q = torch.randn(b, h, lq, d, requires_grad=backward)
    k, v = (torch.randn(b, h, lk, d, requires_grad=backward) for _ in range(2))

    def attend(fn):
        o = fn(q, k, v)
        if backward:
            o.sum().backward()

    def explicit(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / d**0.5, -1) @ v

    fwd = 4 * b * h * lq * lk * d
    assert count_flops(lambda: attend(explicit)) == (3 * fwd if backward else fwd)
    sdpa = count_flops(lambda: attend(torch.nn.functional.scaled_dot_product_attention))
    assert sdpa == (fwd + 5 * fwd // 2 if backward else fwd)


def test_merge_keeps_the_better_measurement():
    a = {"bf16": {"peak_gflops": 300.0, "shapes_gflops": {"x": 300.0}}}
    b = {"bf16": {"peak_gflops": 400.0, "shapes_gflops": {"x": 400.0}}}
    merged = gemm_peak.merge_peaks(a, b)
    assert merged["bf16"]["peak_gflops"] == 400.0 and merged["bf16"]["samples_gflops"] == [300.0, 400.0]


def test_fraction_of_peak():
    assert gemm_peak.fraction_of_peak(20.0, 10.0, 400.0) == pytest.approx(0.5)
    assert gemm_peak.fraction_of_peak(None, 10.0, 400.0) is None
    assert gemm_peak.fraction_of_peak(20.0, 10.0, None) is None


def test_fraction_of_the_adjacent_peak_pairs_each_step_with_its_neighbours():
    # steps of 1 GFLOP: 100 ms at a probe mean of 20 -> 0.5; 50 ms at (30 + 50) / 2 = 40 -> 0.5; 200 ms
    # at (50 + 10) / 2 = 30 -> 1/6
    got = gemm_peak.fraction_of_adjacent_peak(1.0, [100.0, 50.0, 200.0], [10.0, 30.0, 50.0, 10.0])
    assert got == pytest.approx({"median": 0.5, "min": 1 / 6, "max": 0.5})
    assert gemm_peak.fraction_of_adjacent_peak(None, [100.0], [1.0, 1.0]) is None
    assert gemm_peak.fraction_of_adjacent_peak(1.0, [100.0], [1.0]) is None  # a probe missing


def test_probes_run_around_every_timed_call_untimed():
    calls = []
    timing = time_cpu(
        lambda: calls.append("f"), warmup=1, reps=3, min_reps=3, between=lambda: calls.append("p")
    )
    assert calls == ["f", "p", "f", "p", "f", "p", "f", "p"]
    assert len(timing.in_order_ms) == 3 and timing.between == [None] * 4
    probe = gemm_peak.PeakProbe(torch.device("cpu"), "fp32", reps=1)
    assert probe() > 0 and probe() > 0


def _row(compile_, gflop, ips, precision="bf16"):
    return dict(
        task="pretrain",
        preset="small",
        provider="fusmae",
        kernels="torch",
        precision=precision,
        compile=compile_,
        batch=32,
        variant="xae",
        masking="consistent",
        status="ok",
        gflop_per_image=gflop,
        images_per_s=ips,
    )


@pytest.mark.skipif(not mkldnn_bf16_supported(), reason="oneDNN has no bf16 inner product on this CPU")
@pytest.mark.parametrize("gelu", [False, True])
def test_fused_bf16_linears_are_counted_like_f_linear(gelu):
    """``fusmae_fast.linear``'s oneDNN form (gradient-free bf16 on a CPU) is credited with the product's
    2 M N K, as F.linear is: uncounted, bf16 encode rows read a fraction of peak 6x too low."""
    layer = torch.nn.Linear(40, 24).to(torch.bfloat16)
    x = torch.randn(3, 7, 40, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert fused_linear_applies(x, layer)
        fused = count_flops(lambda: linear(x, layer, gelu=gelu))
        assert fused == count_flops(lambda: layer(x)) == 2 * 21 * 40 * 24


def test_compiled_rows_take_the_eager_count():
    rows = [_row(False, 19.0, 20.0), _row(True, None, 25.0), _row(False, 19.0, 8.0, "fp32")]
    step.add_fractions(rows, {"bf16": {"peak_gflops": 760.0}, "fp32": {"peak_gflops": 190.0}})
    assert [r["fraction_of_peak"] for r in rows] == pytest.approx([0.5, 0.625, 0.8])


def test_encode_and_pretrain_rows_end_to_end(tmp_path):
    argv = ["--presets", "tiny", "--batch", "2", "--precision", "fp32", "--compile", "off"]
    argv += ["--providers", "fusmae", "--steps", "1", "--warmup", "1", "--out-dir", str(tmp_path)]
    assert step.main(argv) == 0
    result = json.loads((tmp_path / "step_cpu.json").read_text())
    rows = {r["task"]: r for r in result["rows"]}
    assert set(rows) == {"pretrain", "encode"}
    for r in rows.values():
        assert r["status"] == "ok" and r["gflop_per_image"] > 0 and 0 < r["fraction_of_peak"] < 1.5
        assert len(r["adjacent_peaks_gflops"]) == len(r["step_ms_in_order"]) + 1 == 2
        assert 0 < r["fraction_of_adjacent_peak"]["median"] < 1.5
    # encode: the forward of all 450 tokens; a step: fwd + bwd of the kept ones and the decoders
    assert rows["encode"]["gflop_per_image"] != rows["pretrain"]["gflop_per_image"]
    assert result["peaks"]["fp32"]["peak_gflops"] > 0
    page = (tmp_path / "step_cpu.md").read_text()
    assert (
        "fraction of peak" in page
        and "of adjacent peak" in page
        and "| encode | tiny | xae/none | fusmae |" in page
    )
    assert report.peaks_line(result) in page


def test_profile_reports_the_rate_of_the_matrix_products_in_place():
    """torch.profiler's counted FLOPs of mm/addmm/bmm over their self time, set against the peak."""
    from torch.profiler import ProfilerActivity, profile

    a, b = torch.randn(256, 128), torch.randn(128, 64)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        torch.mm(a, b)
        torch.addmm(torch.zeros(64), a, b)
        torch.relu(a)
    acc = {e.key: (e.self_cpu_time_total / 1e3, e.count, e.flops or 0) for e in prof.key_averages()}
    mp = step.matrix_products(acc)
    assert mp["ops"] == ["aten::mm", "aten::addmm"]
    assert mp["gflop"] == pytest.approx(2 * 2 * 256 * 128 * 64 / 1e9, rel=0.01)
    assert mp["gflops"] == pytest.approx(mp["gflop"] / (mp["self_ms"] / 1e3))
    ops = [{"op": k, "self_ms": v[0], "calls": v[1]} for k, v in acc.items()]
    prof_result = {
        "what": "test",
        "peak_gflops": 2 * mp["gflops"],
        "providers": {"fusmae (torch)": {"all": ops, "top": ops, "matrix_products": mp}},
    }
    text = report.profile_markdown(prof_result)
    assert f"run at {mp['gflops']:.0f} GFLOP/s in place, 0.50 of the GEMM peak" in text
    assert step.matrix_products({"aten::relu": (1.0, 1, 0)}) == {
        "ops": [],
        "self_ms": 0.0,
        "gflop": 0.0,
        "gflops": 0.0,
    }


def test_rounds_keep_each_configs_own_results(tmp_path):
    """Two rounds (the second in reversed order): every row gets its own two round p50s."""
    argv = [
        "--presets",
        "tiny",
        "--batch",
        "2",
        "--precision",
        "fp32",
        "--compile",
        "off",
        "--tasks",
        "pretrain",
    ]
    argv += ["--steps", "1", "--warmup", "1", "--rounds", "2", "--out-dir", str(tmp_path)]
    assert step.main(argv) == 0
    rows = json.loads((tmp_path / "step_cpu.json").read_text())["rows"]
    assert {r["provider"] for r in rows} == {"fusmae", "plain"}
    for r in rows:
        assert r["status"] == "ok" and len(r["rounds_ms_p50"]) == 2 and r["ms_p50"] == min(r["rounds_ms_p50"])


def test_recount_rewrites_the_counts_and_fractions_of_a_result(tmp_path, monkeypatch):
    """``--recount FILE``: every eager row's GFLOP/image counted again in a fresh worker (a count the
    file got wrong is replaced), the fractions follow, timings stay, the header says so. The workers
    pick attention forms by the rules: a form picked by timing can differ between the run and the
    recount, and SDPA's backward is credited with its recompute."""
    monkeypatch.setenv("FUSMAE_FAST_FORM_TIMING", "0")
    argv = ["--presets", "tiny", "--batch", "2", "--precision", "fp32", "--compile", "off"]
    argv += ["--providers", "fusmae", "--steps", "1", "--warmup", "1", "--out-dir", str(tmp_path)]
    assert step.main(argv) == 0
    path = tmp_path / "step_cpu.json"
    ran = json.loads(path.read_text())
    wrong = json.loads(path.read_text())
    for r in wrong["rows"]:
        r["gflop_per_image"] /= 6
        r["fraction_of_peak"] /= 6
    path.write_text(json.dumps(wrong))
    assert step.main(["--recount", str(path)]) == 0
    fixed = json.loads(path.read_text())
    for before, after in zip(ran["rows"], fixed["rows"], strict=True):
        assert after["gflop_per_image"] == pytest.approx(before["gflop_per_image"], rel=1e-12)
        assert after["fraction_of_peak"] == pytest.approx(before["fraction_of_peak"], rel=1e-12)
        assert after["ms_p50"] == before["ms_p50"]
    assert fixed["info"]["recounted"]["git"] and "recounted at git" in (tmp_path / "step_cpu.md").read_text()


def test_recount_refuses_another_benchmarks_result(tmp_path):
    path = tmp_path / "xattn_cpu.json"
    path.write_text(json.dumps({"benchmark": "xattn", "rows": []}))
    with pytest.raises(SystemExit, match="not a bench/step.py result"):
        step.main(["--recount", str(path)])
    with pytest.raises(SystemExit, match="cannot read .*missing.json"):
        step.main(["--recount", str(tmp_path / "missing.json")])
