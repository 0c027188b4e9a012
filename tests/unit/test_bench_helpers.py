"""The benchmark helpers tell the truth: baselines compute Eq. 2, the work model counts the kernels'
own block walk, percentiles and GPU peak lookup behave.

(bench/ is installed as ``fusmae_fast.bench``; the test run does not collect its own microbenchmarks.)
"""

import json

import pytest
import torch

from fusmae_fast.bench import devices, roofline, timing
from fusmae_fast.bench import xattn_providers as xp
from fusmae_fast.cost_model import cross_modal_attention_flops
from fusmae_fast.kernels.cross_modal_attention import cross_modal_attention_ref

CPU_EAGER = ["torch-reference", "sdpa-mask", "two-calls+cat"]


@pytest.mark.parametrize("provider", CPU_EAGER)
@pytest.mark.parametrize("splits", [[8, 8, 8], [3, 12, 7], [0, 16, 5]])
def test_providers_compute_eq2(provider, splits):
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(3, 16, 2, 8, generator=g, dtype=torch.float64) for _ in range(4))
    split = torch.tensor(splits)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = xp.FUNCTIONS[provider](q, k, v, split)
    ref = cross_modal_attention_ref(q, k, v, split)
    torch.testing.assert_close(out, ref)
    for a, r in zip(
        torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(ref, (q, k, v), do), strict=True
    ):
        torch.testing.assert_close(a, r)


def test_skip_reasons_name_the_cause():
    kw = dict(b=2, length=16, h=2, d=8, split=torch.tensor([8, 8]), interpret=False, free_bytes=1 << 34)
    cpu = torch.device("cpu")
    assert "CUDA" in xp.skip_reason("fusmae-triton", cpu, torch.float32, "fwd", **kw)
    assert "CUDA" in xp.skip_reason("xformers", cpu, torch.float32, "fwd", **kw)
    assert "backward" in xp.skip_reason("flex", cpu, torch.float32, "bwd", **kw)
    assert xp.skip_reason("flex", cpu, torch.float32, "fwd", **kw) is None
    assert xp.skip_reason("torch-reference", cpu, torch.float32, "fwd+bwd", **kw) is None
    kw["free_bytes"] = 1000
    assert "GiB" in xp.skip_reason("torch-reference", cpu, torch.float32, "fwd", **kw)


@pytest.mark.parametrize("length,bm,bn", [(112, 32, 32), (112, 64, 32), (128, 32, 64), (257, 128, 64)])
def test_walk_covers_every_useful_pair(length, bm, bn):
    """Executed score entries >= useful ones for every split, and equal when the split and L align."""
    for s in range(length + 1):
        blocks = -(-length // bm)
        trips = sum(roofline.walk_trips(i * bm, s, length, bm, bn) for i in range(blocks))
        assert trips * bm * bn >= 2 * s * (length - s), (s, trips)
    trips = sum(roofline.walk_trips(i * 32, 64, 128, 32, 32) for i in range(4))
    assert trips * 32 * 32 == 2 * 64 * 64


def test_kernel_work_matches_useful_flops_when_aligned():
    shape = roofline.Shape("t", 2, 128, 3, 64, (64, 64))
    work = roofline.kernel_work("xattn_fwd", 32, 32, 64, shape, 2)
    assert work["flops"] == cross_modal_attention_flops([64, 64], 128, 3, 64)
    assert work["programs"] == 4 * 2 * 3


def test_occupancy_limits():
    gpu = next(g for g in devices.GPU_PEAKS if g.cc == 86)
    assert roofline.resident_blocks(gpu, regs=255, smem=0, warps=8) == 1  # 255 regs -> 256 x 32 x 8
    assert roofline.resident_blocks(gpu, regs=32, smem=0, warps=4) == 12  # 48 warps per SM
    assert roofline.resident_blocks(gpu, regs=32, smem=50 * 1024, warps=1) == 1  # 100 KB per SM


def test_percentiles_and_peaks():
    assert timing.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert timing.percentile([1.0, 2.0], 0.2) == pytest.approx(1.2)
    t = timing.time_cpu(lambda: None, warmup=1, reps=5)
    assert t.samples == 5 and t.p20 <= t.p50 <= t.p80
    assert devices.gpu_peak("NVIDIA GeForce RTX 3090").sms == 82
    assert devices.gpu_peak("NVIDIA GeForce RTX 3090 Ti") is None
    assert devices.gpu_peak("NVIDIA A100-SXM4-40GB").cc == 80
    assert devices.gpu_peak("NVIDIA A100-SXM4-80GB") is None  # 2039 GB/s, not the 40 GB card's 1555
    assert devices.gpu_peak("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert devices.gpu_peak("NVIDIA H100 PCIe") is None
    assert devices.gpu_peak("NVIDIA H200").name == "H200 SXM"
    assert devices.gpu_peak("NVIDIA H200 NVL") is None  # lower clocks than the SXM part
    assert devices.gpu_peak("Tesla T4") is None


def test_step_parts_bound_is_consistent_and_tabulated(tmp_path):
    from fusmae_fast.bench import report, step_parts

    row = step_parts.measure_parts("tiny", 2, "independent", "xae", torch.device("cpu"), seed=0, reps=1)
    assert set(row["step_ms"]) == {"fusmae", "plain"}
    assert row["shared_total_ms"] == pytest.approx(sum(row["shared_ms"].values()))
    assert row["ratio_bound"] == pytest.approx(row["step_ms"]["plain"] / row["shared_total_ms"])
    assert row["ratio_measured"] == pytest.approx(row["step_ms"]["plain"] / row["step_ms"]["fusmae"])
    assert all(v > 0 for v in row["shared_ms"].values())
    assert set(row["own_ms"]) == {"patch embedding (S1 + S2)", "cross-modal block", "loss (S1 + S2)"}
    info = devices.run_info(torch.device("cpu"), devices.pin_threads(None))
    table = report.step_parts_markdown({"benchmark": "step_parts", "info": info, "rows": [row]})
    assert "| tiny | xae/independent | 2 |" in table and "shared: AdamW step" in table


def test_step_ratio_flags_unsteady_rows():
    from fusmae_fast.bench import report

    def row(provider, p20, p50, p80):
        return {
            "status": "ok",
            "preset": "tiny",
            "variant": "xae",
            "masking": "independent",
            "precision": "fp32",
            "compile": True,
            "batch": 32,
            "provider": provider,
            "kernels": "torch",
            "ms_p20": p20,
            "ms_p50": p50,
            "ms_p80": p80,
            "images_per_s": 32e3 / p50,
        }

    steady = report.step_ratios({"rows": [row("fusmae", 100, 110, 120), row("plain", 140, 150, 160)]})
    assert steady[0]["ratio"] == pytest.approx(150 / 110) and steady[0]["unstable"] == []
    storm = report.step_ratios({"rows": [row("fusmae", 100, 110, 120), row("plain", 139, 19670, 46150)]})
    assert storm[0]["unstable"] == ["plain"]


def test_step_table_shows_each_rounds_p50_only_for_several_rounds():
    from fusmae_fast.bench import report

    info = devices.run_info(torch.device("cpu"), {"intra_op": 2})
    row = dict(preset="small", variant="xae", masking="consistent", precision="fp32", batch=32, status="ok")
    row |= dict(provider="fusmae", kernels="torch", compile=False, images_per_s=6.0)
    row |= dict(ms_p20=5300.0, ms_p50=5400.0, ms_p80=5500.0)
    one = report.step_markdown({"info": info, "rows": [row | dict(rounds_ms_p50=[5400.0])]})
    assert "p50 of each round" not in one
    three = report.step_markdown({"info": info, "rows": [row | dict(rounds_ms_p50=[5400.0, 6100.0, 5800.0])]})
    assert "p50 of each round, ms |" in three and "| 5400, 6100, 5800 |" in three


def test_report_writes_the_page_and_the_readme_summary(tmp_path, monkeypatch):
    """report.py: docs/benchmarks.md holds the step table of the newest full run (with --prefer-full),
    and the README's summary block (only it) is replaced by the ratios, fractions of peak and, for eager
    fp32 rows, Amdahl's bound."""
    from fusmae_fast.bench import report

    info = devices.run_info(torch.device("cpu"), {"intra_op": 2})
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(devices, "REPO", tmp_path)
    monkeypatch.setattr(devices, "RESULTS", results)

    def step_row(provider, ms, precision="fp32", fraction=None):
        key = dict(preset="tiny", variant="xae", masking="consistent", precision=precision, batch=32)
        run = dict(provider=provider, kernels="torch", compile=False, status="ok", images_per_s=32e3 / ms)
        return key | run | dict(ms_p20=ms, ms_p50=ms, ms_p80=ms, fraction_of_peak=fraction)

    full = {"benchmark": "step", "quick": False, "info": info | {"timestamp": "2026-01-01T00:00:00"}}
    full["rows"] = [step_row("fusmae", 100.0), step_row("plain", 150.0)]
    full["rows"] += [step_row("fusmae", 50.0, "bf16", 0.61), step_row("plain", 100.0, "bf16", 0.305)]
    full["peaks"] = {"bf16": {"peak_gflops": 700.0, "samples_gflops": [690.0, 700.0]}}
    quick = {"benchmark": "step", "quick": True, "info": info | {"timestamp": "2026-01-02T00:00:00"}}
    quick["rows"] = [step_row("fusmae", 100.0), step_row("plain", 120.0)]
    parts = {"benchmark": "step_parts", "info": info, "rows": []}
    parts_row = dict(preset="tiny", variant="xae", masking="consistent", batch=32, ratio_bound=2.5)
    parts_row |= dict(step_ms={"plain": 150.0, "fusmae": 100.0}, shared_total_ms=60.0, ratio_measured=1.5)
    parts["rows"] = [parts_row | dict(shared_fraction_of_plain=0.4, shared_ms={}, own_ms={})]
    for name, data in (("step_cpu", full), ("step_cpu_quick", quick), ("step_parts_cpu", parts)):
        devices.write_json_atomic(results / f"{name}.json", data)

    page = report.benchmarks_page(prefer_full=True)
    assert "From `bench/results/step_cpu.json`." in page and report.step_markdown(full) in page
    assert "From `bench/results/step_cpu_quick.json`." in report.benchmarks_page(prefer_full=False)
    summary = report.readme_summary(prefer_full=True)
    assert "| tiny | xae/consistent | fp32 | off | 32 | 320 | 213 | - | - | 1.50x | 2.50x |" in summary
    assert "| tiny | xae/consistent | bf16 | off | 32 | 640 | 320 | 0.61 | 0.30 | 2.00x | - |" in summary
    assert "bf16 700 GFLOP/s (before / after the matrix: 690, 700)" in summary
    readme = f"intro\n{report.SUMMARY_BEGIN}\nold table\n{report.SUMMARY_END}\nrest\n"
    new = report.replace_summary(readme, summary)
    assert new == f"intro\n{report.SUMMARY_BEGIN}\n{summary}\n{report.SUMMARY_END}\nrest\n"
    with pytest.raises(SystemExit, match="no summary block"):
        report.replace_summary("a README without markers\n", summary)


def test_xattn_command_line_settings_win_over_quick():
    from fusmae_fast.bench import xattn

    quick = xattn.parse_args(["--quick"])
    assert (quick.rounds, quick.reps, quick.budget) == (2, 10, 2.0)
    assert xattn.parse_args(["--quick", "--rounds", "4", "--reps", "7"]).rounds == 4
    assert xattn.parse_args(["--quick", "--reps", "7"]).reps == 7
    full = xattn.parse_args([])
    assert (full.rounds, full.reps, full.warmup, full.budget) == (1, 30, 3, 8.0)
    with pytest.raises(SystemExit):
        xattn.parse_args(["--rounds", "0"])


def test_xattn_same_round_ratios_pair_each_round():
    """The fastest other form over ours per round (forms timed in turn within a round), median and
    range over the rounds; the plain ratio keeps each provider's fastest round."""
    from fusmae_fast.bench import report

    def row(provider, rounds):
        return dict(
            status="ok", case="B2-L8-consistent", dtype="fp32", mode="fwd", provider=provider,
            ms_p20=min(rounds), ms_p50=min(rounds), ms_p80=min(rounds), rounds_ms_p50=rounds, check_ok=True,
        )  # fmt: skip

    result = {"rows": [row("torch-reference", [10.0, 20.0, 12.0]), row("literal", [9.0, 24.0, 12.0])]}
    result["rows"].append(row("sdpa-mask", [11.0, 30.0, 10.8]))
    (best,) = [r for r in report.xattn_vs_fastest(result) if r["mode"] == "fwd"]
    assert best["vs"] == "literal" and best["ratio"] == 0.9  # fastest rounds: 9 / 10
    assert best["paired_rounds"] == [0.9, 1.2, 0.9]  # per round the faster of literal and sdpa-mask
    info = json.loads((devices.RESULTS / "xattn_cpu_quick.json").read_text())["info"]  # a real header
    text = report.xattn_markdown({"rows": result["rows"], "info": info, "quick": False})
    assert "0.90x (0.90 - 1.20)" in text
    result["rows"][1]["rounds_ms_p50"] = [9.0]  # a provider without every round: no paired figure
    (best,) = [r for r in report.xattn_vs_fastest(result) if r["mode"] == "fwd"]
    assert "paired_rounds" not in best


def test_xattn_noise_floor_is_the_twin_over_what_it_repeats():
    """The A/A control never counts as a form ours is compared with; its own table gives its ratio to
    two-calls+cat per round."""
    from fusmae_fast.bench import report
    from fusmae_fast.bench import xattn_providers as xp

    assert xp.FUNCTIONS[xp.CONTROL] is xp.FUNCTIONS[xp.CONTROL_OF]

    def row(provider, rounds):
        return dict(
            status="ok", case="B2-L8-consistent", dtype="fp32", mode="fwd", provider=provider,
            ms_p20=min(rounds), ms_p50=min(rounds), ms_p80=min(rounds), rounds_ms_p50=rounds, check_ok=True,
        )  # fmt: skip

    rows = [
        row("torch-reference", [10.0, 10.0]),
        row("two-calls+cat", [12.0, 11.0]),
        row("twin", [6.0, 13.2]),
    ]
    result = {"rows": rows}
    (best,) = report.xattn_vs_fastest(result)
    assert best["vs"] == "two-calls+cat"  # the twin, faster in its best round, is not a competitor
    (floor,) = report.xattn_noise_floor(result)
    assert floor["ratio"] == 6.0 / 11.0 and floor["round_ratios"] == [0.5, 1.2]
    info = json.loads((devices.RESULTS / "xattn_cpu_quick.json").read_text())["info"]
    text = report.xattn_markdown({"rows": rows, "info": info, "quick": False})
    assert "Noise floor" in text and "0.85x (0.50 - 1.20)" in text
    assert report.xattn_noise_floor({"rows": rows[:2]}) == []


def test_round_order_alternates():
    items = ["a", "b", "c"]
    assert [devices.round_order(items, r) for r in range(3)] == [items, ["c", "b", "a"], items]
    assert devices.round_order([], 1) == []
