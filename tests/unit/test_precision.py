"""--precision against this machine: 'auto' takes bf16 only where it is native, and an explicit bf16 /
fp16 on a CPU without the matrix instructions warns (it runs, emulated, many times slower)."""

import warnings

import pytest
import torch

from fusmae_fast import device as device_mod
from fusmae_fast.device import cpu_has_native, emulated_precision, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture
def cpuinfo(monkeypatch, tmp_path):
    """Point cpu_has_native at a fake /proc/cpuinfo with the given flags."""

    def use(flags: str) -> None:
        fake = tmp_path / "cpuinfo"
        fake.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 fma {flags}\n")
        real = device_mod.Path
        monkeypatch.setattr(device_mod, "Path", lambda p: real(fake) if p == "/proc/cpuinfo" else real(p))

    return use


def test_auto_takes_bf16_only_on_a_cpu_with_native_bf16(cpuinfo):
    cpuinfo("avx512f avx512_bf16")
    assert cpu_has_native("bf16") and not cpu_has_native("fp16")
    assert resolve_precision("auto", CPU) == "bf16"
    cpuinfo("amx_tile amx_bf16")
    assert resolve_precision("auto", CPU) == "bf16"
    cpuinfo("avx512f")  # AVX-512 without its bf16 extension: still emulated
    assert not cpu_has_native("bf16")
    assert resolve_precision("auto", CPU) == "fp32"


def test_flags_are_whole_words(cpuinfo):
    cpuinfo("xavx512_bf16y")
    assert not cpu_has_native("bf16")


def test_explicit_low_precision_without_native_support_warns_once_and_runs(cpuinfo):
    cpuinfo("")
    for precision in ("bf16", "fp16"):
        with pytest.warns(UserWarning, match=rf"--precision {precision}: .*torch emulates them"):
            assert resolve_precision(precision, CPU) == precision
    assert "AVX512-BF16 / AMX-BF16" in emulated_precision("bf16", CPU)


def test_no_warning_where_the_choice_is_native_or_fp32(cpuinfo):
    cpuinfo("avx512_bf16 amx_fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU) == "bf16"
        assert resolve_precision("fp16", CPU) == "fp16"
        assert resolve_precision("fp32", CPU) == "fp32"
    assert emulated_precision("bf16", torch.device("cuda")) is None
    assert emulated_precision("fp32", CPU) is None


def test_unreadable_cpuinfo_means_not_native(monkeypatch):
    class Missing:
        def __init__(self, path):
            pass

        def read_text(self):
            raise OSError("no /proc here")

    monkeypatch.setattr(device_mod, "Path", Missing)
    assert not cpu_has_native("bf16")
    assert resolve_precision("auto", CPU) == "fp32"
