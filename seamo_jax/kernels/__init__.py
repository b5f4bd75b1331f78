"""CPU kernels (XLA FFI custom calls) for the train step's GEMMs, attention, GELU and LayerNorm.

Built on first use from cpu_kernels.cc (build.py); the model calls them
through ops.py only where its Backend has `cpu_kernels=True`
(models/backend.py: `model.cpu_kernels`, resolved once per run), and uses
XLA's ops (same values) everywhere else.
"""

from seamo_jax.kernels.ops import attention, bias_gelu, gemm, layer_norm, matmul_rows, self_attention

__all__ = ["attention", "bias_gelu", "gemm", "layer_norm", "matmul_rows", "self_attention"]
