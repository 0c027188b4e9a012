"""bench/gpu_check.py: the rehearsal of the GPU check runs its whole plan on a CPU, a parity mismatch
fails the run, and a section the budget cannot fit is skipped with a note.

The first test is how CI runs ``python bench/gpu_check.py --rehearse --out DIR`` (a subprocess, as a
user runs it), so the script cannot rot; the others call ``main()`` in this process, which needs the
interpreter this conftest selects on a machine without CUDA.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fusmae_fast.bench import gpu_check

SCRIPT = Path(gpu_check.__file__).resolve()
ON_CPU = pytest.mark.skipif(
    torch.cuda.is_available(), reason="in-process rehearsal needs the interpreter selected at import"
)


def test_rehearse_runs_every_section(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rehearse", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "# gpu_check plan" in proc.stdout and "Triton compiles" in proc.stdout
    assert "# gpu_check summary" in proc.stdout
    result = json.loads((out / "gpu_check.json").read_text())
    assert [r["name"] for r in result["plan"]] == list(gpu_check.SECTIONS)
    assert {name: s["status"] for name, s in result["sections"].items()} == dict.fromkeys(
        gpu_check.SECTIONS, "ok"
    )
    parity = result["sections"]["parity"]
    assert parity["checks"] > 50 and not parity["failed"]
    assert parity["launches_run"] == parity["launches_planned"] and parity["workers"] >= 1
    assert {r["op"] for r in parity["records"]} == {
        "cross_modal_attention",
        "masked_patch_embed",
        "gather_tokens",
        "scatter_tokens",
        "masked_mse",
    }
    assert result["sections"]["e2e"]["last_step"] == 2 * gpu_check.E2E_STEPS[True]
    assert (out / "gpu_check.md").read_text().startswith("# gpu_check rehearsal")
    assert (out / "xattn" / "xattn_cpu.png").exists()
    assert (out / "step" / "tiny" / "step_cpu.json").exists()
    # the torch row is measured on every CPU (bf16 where native, else fp32); triton needs CUDA
    assert {(r["preset"], r["kernels"]) for r in result["sections"]["step"]["table"]} == {("tiny", "torch")}


@ON_CPU
def test_parity_mismatch_fails_the_run(tmp_path, monkeypatch, capsys):
    """A kernel off by one ulp-scale step is caught by the bit-exact / tolerance checks: exit 1."""
    from fusmae_fast.kernels import config_sweep, token_gather

    real = token_gather.gather_tokens_triton

    def off(x, ids, pos=None):
        out = real(x, ids, pos)
        return out + 1e-2 * out.detach().abs().amax().clamp_min(1.0)

    monkeypatch.setattr(token_gather, "gather_tokens_triton", off)
    monkeypatch.setattr(config_sweep, "sweep_launches", lambda *a, **k: [])  # op cases only
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    # in this process (the patched kernel is not in a spawned worker); the rehearsal above runs workers
    status = gpu_check.main(["--rehearse", "--out", str(tmp_path), "--sections", "parity", "--workers", "1"])
    assert status == 1
    parity = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["parity"]
    assert parity["status"] == "failed"
    assert {f["op"] for f in parity["failed"]} == {"gather_tokens"}
    assert "PARITY FAIL gather_tokens" in capsys.readouterr().out


@ON_CPU
def test_budget_skips_a_section_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    status = gpu_check.main(
        ["--rehearse", "--out", str(tmp_path), "--sections", "env,e2e", "--budget-s", "2"]
    )
    assert status == 0
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert sections["env"]["status"] == "ok"
    assert sections["e2e"]["status"] == "skipped" and "budget" in sections["e2e"]["note"]
    assert "| e2e |" in (tmp_path / "gpu_check.md").read_text()


@ON_CPU
def test_parity_in_workers_gives_the_same_records(monkeypatch):
    """Spread over spawned workers, the parity launches give the records of a run in this process,
    in the same order."""
    from fusmae_fast.bench import gpu_parity

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the workers inherit it
    cpu, deadline = torch.device("cpu"), time.monotonic() + 300
    runs = [
        gpu_parity.run_parity(cpu, "rehearse", [torch.float32], [torch.float32], deadline, workers=w)
        for w in (1, 2)
    ]
    assert runs[1]["workers"] == 2 and runs[1]["worker_start_errors"] == []
    assert runs[0]["launches_run"] == runs[0]["launches_planned"] == runs[1]["launches_run"]
    assert runs[0]["records"] == runs[1]["records"] and runs[0]["max_err"] == runs[1]["max_err"]
    assert not runs[0]["failed"]


def test_plan_takes_its_compile_seconds_from_the_stored_report(tmp_path, monkeypatch):
    per_compile, source = gpu_check.compile_cost()  # the report kept in bench/results
    assert 0 < per_compile < 60 and "measured by compile_check" in source
    report = tmp_path / "report.json"
    rows = [{"ok": True, "compile_s": 1.0}, {"ok": True, "compile_s": 3.0}, {"ok": False, "compile_s": 50}]
    report.write_text(json.dumps({"triton": "3.9.0", "targets": ["sm_90"], "rows": rows}))
    monkeypatch.setattr(gpu_check, "COMPILE_TIMES", report)
    per_compile, source = gpu_check.compile_cost()
    assert per_compile == 2.0 and "mean of 2 compiles" in source  # failed compiles do not count
    args = gpu_check.parse_args(["--out", str(tmp_path), "--workers", "4"])
    parity = {r["name"]: r for r in gpu_check.build_plan(args)}["parity"]
    assert parity["gpu_s"] == int(parity["compiles"] * 2.0 / 4 + gpu_check.WORKER_START_S) + 30
    report.write_text("{ truncated")
    assert gpu_check.compile_cost() == (
        gpu_check.COMPILE_S,
        f"{gpu_check.COMPILE_S:.1f} s per cold compile assumed (report.json unreadable)",
    )


@ON_CPU
def test_e2e_sample_is_brought_to_a_machine_without_rasterio(tmp_path, monkeypatch, capsys):
    """Without rasterio and with an empty sample cache, e2e is skipped with a note saying how to bring
    the sample; ``--prepare-sample`` writes it into $FUSMAE_CACHE, after which the e2e section finds it
    there with rasterio missing."""
    from fusmae_fast.data import builtin

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("FUSMAE_CACHE", str(tmp_path / "cache"))
    real_generate = builtin._generate

    def without_rasterio(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'rasterio'", name="rasterio")

    monkeypatch.setattr(builtin, "_generate", without_rasterio)
    check = ["--rehearse", "--out", str(tmp_path / "check"), "--sections", "env,e2e"]
    assert gpu_check.main(check) == 0
    e2e = json.loads((tmp_path / "check" / "gpu_check.json").read_text())["sections"]["e2e"]
    assert e2e["status"] == "skipped" and "rasterio" in e2e["note"] and "--prepare-sample" in e2e["note"]
    assert gpu_check.main(["--prepare-sample"]) == 2
    assert "--prepare-sample needs rasterio" in capsys.readouterr().out

    monkeypatch.setattr(builtin, "_generate", real_generate)
    assert gpu_check.main(["--prepare-sample"]) == 0
    out = capsys.readouterr().out
    n_train, n_val, n_test = gpu_check.E2E_SAMPLE
    assert f"-{n_train}-{n_val}-{n_test}-seed0" in out and str(tmp_path / "cache") in out

    monkeypatch.setattr(builtin, "_generate", without_rasterio)
    monkeypatch.setitem(sys.modules, "rasterio", None)  # `import rasterio` fails from here on
    assert gpu_check.main(check) == 0
    e2e = json.loads((tmp_path / "check" / "gpu_check.json").read_text())["sections"]["e2e"]
    assert e2e["status"] == "ok" and e2e["last_step"] == 2 * gpu_check.E2E_STEPS[True]


def test_out_is_required_but_for_prepare_sample(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--rehearse"])
    assert exc.value.code == 2 and "--out is required" in capsys.readouterr().err
