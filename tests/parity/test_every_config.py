"""Every kept config of every autotuned kernel, launched once explicitly (``forced_config``, not
through the autotuner), forward and every gradient against the float64 reference under the parity
rule (``ErrorReport.check``): the configs a GPU's autotuner may pick are all checked, not only the
one a test's timing happens to select.

On a CPU the kernels run in Triton's interpreter at small shapes (each config at the first shape it
is kept for; fp32 and fp16); on CUDA at head dims 32, 40, 64, 80, 128 and L = 113, 450, 1024, token
widths 32 / 256 / 768 and 2- and 12-channel 120 x 120 / P8 patch embeddings (fp32, fp16, bf16).
The sweep itself is ``fusmae_fast.kernels.config_sweep.every_config_runs``.
"""

from __future__ import annotations

import pytest
import torch
from error_report import ErrorReport  # tests/parity is on sys.path under pytest

from fusmae_fast.kernels import config_sweep, triton_runtime
from fusmae_fast.kernels import cross_modal_attention as xattn
from fusmae_fast.kernels import masked_patch_embed as mpe

REPORT = ErrorReport("every kept config: max |error| vs float64 reference:", width=40)
_print_errors = REPORT.fixture()


def _table_configs(kernel: str, esize: int) -> set[tuple[int, ...]]:
    """Every config of ``kernel``'s autotune set for this element size that keep() lets through for
    some shape the op accepts (head dims 16..128; widths and GEMM extents 16..768)."""
    group = triton_runtime.element_size_group(esize)
    family, name = kernel.split("_", 1)
    if family == "xattn":
        return {c for c, pred in xattn._TABLE.rows[(name, group)] if any(map(pred, range(16, 129, 8)))}
    if family == "mpe":
        extents = (16, 64, 128, 768)
        rows = mpe._GEMM_TABLE.rows[(name, group)]
        return {c for c, pred in rows if any(pred(C, R) for C in extents for R in extents)}
    return {c for c in triton_runtime.COPY_CONFIGS if any(triton_runtime.keep_copy(c, C) for C in (16, 768))}


@pytest.mark.parametrize("op", config_sweep.OPS)
def test_every_kept_config_matches_the_fp64_reference(op, device):
    cuda = device.type == "cuda"
    dtypes = (torch.float32, torch.float16, torch.bfloat16) if cuda else (torch.float32, torch.float16)
    launched: dict[tuple[str, int], set] = {}
    size = "gpu" if cuda else "interpreter"
    for run in config_sweep.every_config_runs(device, size=size, dtypes=dtypes, ops=[op]):
        esize = torch.empty((), dtype=run.dtype).element_size()
        launched.setdefault((run.kernel, esize), set()).add(run.config)
        for name, got, ref64, low, factor in run.outputs:
            assert got.shape == ref64.shape and torch.isfinite(got).all(), f"{run.tag} {name}"
            REPORT.check(f"{run.kernel} {name}", got, ref64, low, run.dtype, run.tag, factor=factor)
    assert sum(len(c) for c in launched.values()) == config_sweep.count_runs(size, dtypes, [op])
    for (kernel, esize), confs in launched.items():
        assert confs == _table_configs(kernel, esize), (kernel, esize)


def test_launch_runs_the_forced_config_and_deterministic_mode_pins_the_first_kept(monkeypatch, device):
    seen = []
    launch_options = triton_runtime.ConfigFields.launch_options

    def record(self, conf):
        seen.append(conf)
        return launch_options(self, conf)

    monkeypatch.setattr(triton_runtime.ConfigFields, "launch_options", record)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 20, 1, 32, generator=gen).to(device) for _ in range(3))
    split = torch.tensor([7], device=device)
    conf = xattn.kept_configs("fwd", 32, 4)[-1]
    with torch.no_grad(), triton_runtime.forced_config(xattn._fwd_tuned, conf):
        xattn.cross_modal_attention_triton(q, k, v, split)
    assert seen == [conf]
    for D, dtype in ((32, torch.float32), (40, torch.float16), (80, torch.float16)):
        t = torch.empty(1, dtype=dtype)
        for kernel, tuned in config_sweep._XATTN_KERNELS.items():
            pinned = triton_runtime.pinned_conf(tuned, (t,), {"HEAD_DIM": D}, xattn._FIELDS)
            assert pinned == xattn.kept_configs(kernel, D, t.element_size())[0]
    assert not triton_runtime.deterministic_enabled()  # off unless set (FUSMAE_FAST_DETERMINISTIC=1)
    triton_runtime.set_deterministic(True)
    try:
        assert triton_runtime.deterministic_enabled()
    finally:
        triton_runtime.set_deterministic(False)


def test_launches_run_on_the_cuda_device_of_their_tensors(monkeypatch):
    """Every launch goes through on_device_of: with tensors on cuda:1 the kernel runs with cuda:1 current
    (whichever device is current), without CUDA tensors under no device guard. CUDA tensors are
    FakeTensors here (no GPU needed) and torch.cuda.device is replaced by a recorder."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    current = [None]

    class Guard:
        def __init__(self, device):
            self.device = torch.device(device)

        def __enter__(self):
            self.before, current[0] = current[0], self.device

        def __exit__(self, *exc):
            current[0] = self.before

    monkeypatch.setattr(torch.cuda, "device", Guard)
    ran_on = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **meta: ran_on.append(current[0])

    with FakeTensorMode():
        on_cuda1 = torch.empty(4, device="cuda:1")
    cpu = torch.empty(4)
    triton_runtime.launch_fixed(Kernel(), (1,), cpu, on_cuda1, 3, BLOCK=4)
    triton_runtime.launch_fixed(Kernel(), (1,), cpu, 3, BLOCK=4)
    fields = xattn._FIELDS
    conf = xattn.kept_configs("fwd", 32, 4)[0]

    class Tuned:
        fn = Kernel()

    tuned = Tuned()
    with triton_runtime.forced_config(tuned, conf):
        triton_runtime.launch(tuned, lambda meta: (1,), (on_cuda1, cpu), {}, fields, conf)
    assert ran_on == [torch.device("cuda:1"), None, torch.device("cuda:1")]


def test_value_checks_fuse_into_one_flag(device, debug_checks):
    """raise_if_any: the first failing check's error (CPU, or CUDA with debug checks); none if all pass."""
    ids = torch.tensor([[0, 2, 2], [1, 0, 3]], device=device)
    ok = torch.zeros((), dtype=torch.bool, device=device)
    triton_runtime.raise_if_any([(ok, lambda: ValueError("never"))])
    with pytest.raises(ValueError, match="ids repeats an index"):
        checks = [(ok, lambda: ValueError("never")), *triton_runtime.repeats_check("ids", ids)]
        triton_runtime.raise_if_any(checks)


@pytest.mark.parametrize("size", config_sweep.SIZES)
def test_a_sample_of_the_sweep_takes_each_kernels_first_configs(size):
    """``per_kernel`` (the GPU check's rehearsal) keeps each kernel's first configs of the full plan,
    in its order, and every kernel of every op still runs."""
    for op in config_sweep.OPS:
        full, sample = ({}, {})
        for plan, per_kernel in ((full, None), (sample, 2)):
            for _, steps in config_sweep.sweep_plan(op, size, 2, per_kernel):
                for kernel, confs in steps:
                    plan.setdefault(kernel, []).extend(confs)
        assert sample.keys() == full.keys() == config_sweep._SWEEPS[op].kernels.keys()
        assert sample == {kernel: confs[:2] for kernel, confs in full.items()}, op
    counts = [config_sweep.count_runs(size, [torch.float16], per_kernel=n) for n in (1, 2, None)]
    kernels = sum(len(s.kernels) for s in config_sweep._SWEEPS.values())
    assert counts[0] == kernels and kernels < counts[1] < counts[2]


@pytest.mark.parametrize("size", config_sweep.SIZES)
def test_sweep_launches_list_every_launch_in_order(size):
    """``sweep_launches`` names exactly the launches of ``every_config_runs``, in its order (what a
    worker process of the GPU check is handed, one at a time)."""
    dtypes = [torch.float32, torch.bfloat16]
    launches = config_sweep.sweep_launches(size, dtypes)
    assert len(launches) == config_sweep.count_runs(size, dtypes) == len(set(launches))
    order = [
        (op, dtype, shape, kernel, conf)
        for op in config_sweep.OPS
        for dtype in ("fp32", "bf16")
        for shape, steps in config_sweep.sweep_plan(op, size, 4 if dtype == "fp32" else 2)
        for kernel, confs in steps
        for conf in confs
    ]
    assert [(x.op, x.dtype, x.shape, x.kernel, x.config) for x in launches] == order


def test_one_launch_alone_is_the_sweeps_launch(device):
    """``run_launch`` on its own gives the inputs, references and results the whole sweep gives that
    launch (each shape's inputs are seeded from the shape alone), bit for bit."""
    size = "gpu" if device.type == "cuda" else "interpreter"
    runs = list(config_sweep.every_config_runs(device, size=size, dtypes=(torch.float32,), per_kernel=1))
    launches = config_sweep.sweep_launches(size, [torch.float32], per_kernel=1)
    assert len(runs) == len(launches)
    for run, launch in zip(runs, launches, strict=True):
        alone = config_sweep.run_launch(device, launch)
        assert (alone.kernel, alone.config, alone.shape) == (run.kernel, run.config, run.shape)
        for (name, got, ref, _, _), (_, got1, ref1, _, _) in zip(run.outputs, alone.outputs, strict=True):
            assert torch.equal(got, got1) and torch.equal(ref, ref1), f"{run.tag} {name}"
