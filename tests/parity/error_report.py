"""Shared by the parity tests: max |error| helpers and an end-of-module table of the largest errors."""

from __future__ import annotations

import pytest
import torch


def max_abs_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float64 on the CPU (0 for empty tensors)."""
    return (a.double().cpu() - b.double().cpu()).abs().max().item() if a.numel() else 0.0


class ErrorReport:
    """The largest error seen per key; printed under ``title`` once the test module has run."""

    def __init__(self, title: str, width: int = 34) -> None:
        self.title, self.width = title, width
        self.max_err: dict[str, float] = {}

    def record(self, key: str, err: float) -> None:
        self.max_err[key] = max(self.max_err.get(key, 0.0), err)

    def fixture(self):
        """A module-scoped autouse fixture that prints the table after the module's tests."""

        @pytest.fixture(scope="module", autouse=True)
        def _print_errors(request):
            yield
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            if reporter is None or capture is None or not self.max_err:
                return
            with capture.global_and_fixture_disabled():
                reporter.write_line("")
                reporter.write_line(self.title)
                for key in sorted(self.max_err):
                    reporter.write_line(f"  {key:<{self.width}s} {self.max_err[key]:.3e}")

        return _print_errors
