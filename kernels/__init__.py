"""Triton kernels of fusmae_fast, installed as ``fusmae_fast.kernels``.

One public op per module (``cross_modal_attention``, ``masked_patch_embed``, ``token_gather``,
``token_scatter``, ``masked_loss``), each reading top to bottom: the spec docstring, the
``@triton.jit`` kernels, configs and host launchers, the ``torch.library`` custom op with its
autograd, the pure-torch ``*_ref`` reference, then ``compile_specs()``.

Shared by them: ``triton_runtime`` (dtype names, interpreter detection, config tables with keep/prune,
the autotuned-or-interpreter launch, input checks), ``reductions`` (the deterministic fixed-order
reduction kernels) and ``compile_spec`` (how a module lists its compile specs). ``compile_check`` is
the tool that compiles every spec for sm_80 / sm_86 / sm_90 without a GPU
(``python -m fusmae_fast.kernels.compile_check``).

Only torch and triton are imported here; in the package, ``fusmae_fast.ops`` is the only importer.
"""
