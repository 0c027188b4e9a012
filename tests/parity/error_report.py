"""The parity tests' tolerance rule (``fusmae_fast.kernels.parity_rule``, shared with the gpu_check
bench) and an end-of-module table of the largest errors.

The rule (CONTRIBUTING.md, "Adding a kernel"): fp32 results must satisfy
|got - ref64| <= atol + rtol |ref64| for every element (fixed atol, rtol); fp16 / bf16 results follow
the flash-attention rule, max error vs the fp64 reference <= factor x the max error of the torch path
run on the same low-precision inputs + LOW_ATOL (factor 2 for outputs, 3 for gradients).
"""

from __future__ import annotations

import pytest

from fusmae_fast.kernels import parity_rule
from fusmae_fast.kernels.parity_rule import FP32_ATOL, FP32_RTOL, LOSS_ATOL, LOW_ATOL, max_abs_error

__all__ = ["FP32_ATOL", "FP32_RTOL", "LOSS_ATOL", "LOW_ATOL", "ErrorReport", "max_abs_error"]


class ErrorReport(parity_rule.ErrorReport):
    """``parity_rule.ErrorReport``, printed under its title once the test module has run."""

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
                for line in self.lines():
                    reporter.write_line(line)

        return _print_errors
