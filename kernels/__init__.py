"""Triton kernels of fusmae_fast, installed as ``fusmae_fast.kernels``.

One public op per module (``cross_modal_attention``, ``masked_patch_embed``, ``token_gather``,
``token_scatter``, ``masked_loss``), each reading top to bottom: the spec docstring, the
``@triton.jit`` kernels, configs and host launchers, the ``torch.library`` custom op with its
autograd, the pure-torch ``*_ref`` reference, then ``compile_specs()``.

Shared by them: ``triton_runtime`` (dtype names, interpreter detection, config tables with keep/prune,
the launch: forced, interpreter, pinned (deterministic mode) or autotuned config, on the tensors'
device; fused value checks), ``reductions`` (the deterministic fixed-order reduction kernels) and
``compile_spec`` (how a module lists its compile specs, specialised as the JIT specialises a launch).
``compile_check`` is the tool that compiles every spec for sm_80 / sm_86 / sm_90 without a GPU
(``python -m fusmae_fast.kernels.compile_check``). ``config_sweep`` launches every kept config of
every autotuned kernel once against the fp64 reference, and ``parity_rule`` is the tolerance rule
its callers (tests/parity, the gpu_check bench) apply.

Only torch and triton are imported here; in the package, ``fusmae_fast.ops`` is the only importer.
"""
