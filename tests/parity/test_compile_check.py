"""compile_check: every kernel compiles for real GPU targets without a GPU, within sm_86's limits.

compile_check is always run in a subprocess: it must not share a process with the interpreter-mode
kernels of the other tests (its ``collect_specs`` removes TRITON_INTERPRET so that ``@triton.jit``
gives compilable functions). The full run (every spec, sm_80/sm_86/sm_90) is long and is done by
``python -m fusmae_fast.kernels.compile_check --jobs 2``; here the run covers, for sm_86, every fp16
spec of the token/loss modules and, of the attention, every kernel at the head dims and dtypes that
stress it most (fp16/bf16 at D=64 and D=72, fp32 at D=128, every dtype at D=40), plus one fp16 config
per kernel on sm_80 and sm_90 (``--per-kernel 1``). Two fixture packages check that the tool fails when
it must (a module with ``@triton.jit`` kernels but no ``compile_specs()``; a config over the
shared-memory limit and one that spills registers on sm_86).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ATTN_STRESS = (
    r"^(?!xattn_).*-fp16$|xattn_.*-D(64|72)-.*-(fp16|bf16)$|xattn_.*-D128-.*-fp32$"
    r"|xattn_.*-D40-"  # a head dim off the multiples of 16, padded to 64 in the kernel: every dtype
)


def _run(
    args: list[str], tmp_path, extra_path: str | None = None, cache_dir=None
) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if cache_dir is not None:
        env["TRITON_CACHE_DIR"] = str(cache_dir)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    out_json = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusmae_fast.kernels.compile_check",
            *args,
            "--json",
            str(out_json),
            "--jobs",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    report = json.loads(out_json.read_text()) if out_json.exists() else {}
    return proc, report


def test_compile_check_sm86(tmp_path):
    proc, report = _run(["--targets", "86", "--only", ATTN_STRESS], tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report["ok"] and not report["errors"]
    rows = report["rows"]
    kernels = {r["kernel"] for r in rows}
    assert {"xattn_fwd", "xattn_dq", "xattn_dkdv", "xattn_bwd_preprocess"} <= kernels
    assert {"mpe_fwd", "mpe_dimg", "mpe_dw", "gather_fwd", "scatter_bwd", "mse_fwd", "mse_bwd"} <= kernels
    for r in rows:
        assert r["ok"] and r["target"] == "sm_86"
        assert r["regs"] > 0 and r["spill_stores"] == 0 and r["spill_loads"] == 0
        assert 0 <= r["smem"] <= 101376
        assert 0 < r["compile_s"] <= r["seconds"]  # triton.compile alone, within the whole check
        # fp16/bf16 attention dots must run on tensor cores
        if r["kernel"] in ("xattn_fwd", "xattn_dq", "xattn_dkdv") and not r["config"].endswith("fp32"):
            assert r["mma"] > 0, r
    assert "kernel" in proc.stdout and "smem" in proc.stdout  # the table is printed


def test_compile_check_sm80_sm90(tmp_path):
    only = (
        r"^(?!xattn_).*-fp16$|xattn_(fwd|dq|dkdv)/BM32-BN32-D64-w4-s2-fp16$"
        r"|xattn_bwd_preprocess/.*-D64-.*fp16$"
    )
    proc, report = _run(["--targets", "80,90", "--only", only, "--per-kernel", "1"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    targets = {r["target"] for r in report["rows"]}
    assert targets == {"sm_80", "sm_90"}
    per_kernel: dict[tuple[str, str], int] = {}
    for r in report["rows"]:
        per_kernel[(r["kernel"], r["target"])] = per_kernel.get((r["kernel"], r["target"]), 0) + 1
    assert set(per_kernel.values()) == {1}, per_kernel  # --per-kernel 1
    assert len(per_kernel) >= 2 * 12
    assert all(r["ok"] and r["smem"] <= 101376 for r in report["rows"])


def test_resources_come_from_the_compile_then_from_the_store(tmp_path):
    """From an empty Triton cache the figures are read from the ptxas report of Triton's own compile; a
    second run finds them stored under the kernel's hash; with the store gone (the compile still
    cached) ptxas is re-run. All three give the same registers, spills and mma count."""
    from fusmae_fast.kernels.compile_check import RESOURCES_DIR

    cache = tmp_path / "triton-cache"
    args = [
        "--targets",
        "86",
        "--only",
        r"^gather_fwd/|^xattn_fwd/BM32-BN32-D64-w4-s2-fp16$",
        "--per-kernel",
        "1",
    ]
    figures, sources = [], []
    for step in ("cold", "stored", "store removed"):
        if step == "store removed":
            shutil.rmtree(cache / RESOURCES_DIR)
        proc, report = _run(args, tmp_path, cache_dir=cache)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        rows = sorted(report["rows"], key=lambda r: r["kernel"])
        assert [r["kernel"] for r in rows] == ["gather_fwd", "xattn_fwd"]
        figures.append([(r["regs"], r["spill_stores"], r["spill_loads"], r["mma"]) for r in rows])
        sources.append({r["resources_from"] for r in rows})
    assert sources == [{"triton's ptxas"}, {"stored"}, {"ptxas rerun"}]
    assert figures[0] == figures[1] == figures[2]
    assert figures[0][0][0] > 0 and figures[0][1][3] > 0  # registers counted; the fp16 dots are mma


BAD_PACKAGE = {
    "__init__.py": "",
    "nospecs.py": """
        import triton
        import triton.language as tl

        @triton.jit
        def copy_kernel(X, Y, N, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(Y + offs, tl.load(X + offs, mask=offs < N), mask=offs < N)
    """,
    "toobig.py": """
        from fusmae_fast.kernels.cross_modal_attention import _xattn_fwd_kernel, compile_specs as _specs

        def compile_specs():
            base = next(s for s in _specs() if s["kernel"] == "xattn_fwd" and s["config"].endswith("fp32"))
            out = []
            for bm, bn, d in ((64, 64, 128), (64, 32, 64)):
                spec = dict(base)
                spec["config"] = f"BM{bm}-BN{bn}-D{d}-w4-s2-fp32"
                spec["constexprs"] = dict(base["constexprs"], BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=d, HEAD_DIM=d)
                spec["num_warps"], spec["num_stages"] = 4, 2
                out.append(spec)
            return out
    """,
}


@pytest.fixture
def bad_package(tmp_path):
    pkg = tmp_path / "ccbad"
    pkg.mkdir()
    for name, text in BAD_PACKAGE.items():
        (pkg / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_compile_check_fails_without_compile_specs(bad_package, tmp_path):
    proc, report = _run(
        ["--targets", "86", "--package", "ccbad", "--modules", "nospecs"], tmp_path, str(bad_package)
    )
    assert proc.returncode != 0
    assert "nospecs: defines @triton.jit functions ['copy_kernel'] but no compile_specs()" in proc.stdout
    assert not report["ok"]


def test_compile_check_fails_on_smem_and_spills(bad_package, tmp_path):
    proc, report = _run(
        ["--targets", "86", "--package", "ccbad", "--modules", "toobig"], tmp_path, str(bad_package)
    )
    assert proc.returncode != 0, proc.stdout
    problems = {r["config"]: r["problems"] for r in report["rows"]}
    assert any("shared memory" in p for p in problems["BM64-BN64-D128-w4-s2-fp32"])
    assert any("spills on sm_86" in p for p in problems["BM64-BN32-D64-w4-s2-fp32"])


OFFSETS_SCRIPT = r"""
import re, sys
from fusmae_fast.kernels import compile_check

specs, errors = compile_check.collect_specs(["cross_modal_attention"])
assert not errors, errors
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

wanted = {"xattn_fwd", "xattn_dq", "xattn_dkdv", "xattn_bwd_preprocess"}
muli = re.compile(r"arith\.muli .*: tensor<[0-9x]*x(i\d+)>")
for _, spec in specs:
    if spec["kernel"] not in wanted or not re.search(r"-D64-.*fp16$", spec["config"]):
        continue
    wanted.discard(spec["kernel"])
    src = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"],
                    attrs=compile_check._attrs(spec))
    opts = {"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]}
    ttir = triton.compile(src, target=GPUTarget("cuda", 86, 32), options=opts).asm["ttir"]
    types = muli.findall(ttir)
    print(spec["kernel"], sorted(set(types)))
    assert types and set(types) == {"i64"}, (spec["kernel"], types)
assert not wanted, wanted
"""


def test_attention_tensor_offsets_are_64_bit():
    """The attention kernels multiply row indices by row strides in int64: in their Triton IR (sm_86,
    fp16, D = 64, each kernel) every integer multiply of a tensor is i64 (before the fix, the row
    offsets ``rows * stride_l`` were i32 and wrapped once stride x L passed 2^31 elements). This checks
    the type of the offset arithmetic in the compiled IR, not a launch on such a view: a tensor that
    large does not fit the interpreter's tests."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", OFFSETS_SCRIPT], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("['i64']") == 4, proc.stdout
