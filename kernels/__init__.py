"""Triton kernels of fusmae_fast, installed as ``fusmae_fast.kernels``.

Each module holds one kernel family: the ``@triton.jit`` kernels, host launchers, an autograd
function and a pure-torch ``*_ref`` reference shared by the torch backend, the tests and the benchmarks.
Only torch and triton are imported here; ``fusmae_fast.ops`` is the only importer of this package.
"""
