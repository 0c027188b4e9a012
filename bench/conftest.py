"""pytest-benchmark set-up for ``pytest bench --benchmark-only``: threads pinned, load recorded.

The repository's test run (``python -m pytest``, testpaths = tests) never collects this folder.
"""

import pytest

from fusmae_fast.bench import devices


def pytest_configure(config: pytest.Config) -> None:
    threads = devices.pin_threads(None)
    config._fusmae_threads = threads  # reported in the header below and in the saved JSON


def pytest_report_header(config: pytest.Config) -> str:
    t = getattr(config, "_fusmae_threads", {})
    return f"fusmae_fast bench: {devices.cpu_name()}, torch intra-op threads {t.get('intra_op')}"


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info["fusmae_threads"] = getattr(config, "_fusmae_threads", None)


@pytest.fixture(autouse=True)
def _record_load(benchmark):
    """The machine's load average next to each result (extra_info: not part of the machine check)."""
    benchmark.extra_info["loadavg_before"] = devices.loadavg()
    yield
    benchmark.extra_info["loadavg_after"] = devices.loadavg()
