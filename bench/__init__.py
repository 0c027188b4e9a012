"""The benchmarks of fusmae_fast, installed as ``fusmae_fast.bench`` (as ``kernels/`` is installed as
``fusmae_fast.kernels``), so that the scripts import each other and the tests import them without
touching ``sys.path``.

Each script runs as ``python bench/<name>.py`` (see bench/README.md); ``report.py`` turns the result
files in ``bench/results/`` into docs/benchmarks.md and the README's summary table. Nothing in the
library imports this package.
"""
