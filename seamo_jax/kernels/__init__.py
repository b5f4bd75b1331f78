"""CPU kernels (XLA FFI custom calls) for the train step's GEMMs, attention, GELU and LayerNorm.

Built on first use from cpu_kernels.cc (build.py); the model calls them
through ops.py only where `ops.enabled(dtype)` says so, and falls back to
XLA's ops (same values) everywhere else.
"""

from seamo_jax.kernels.ops import attention, bias_gelu, enabled, gemm, layer_norm, matmul_rows, self_attention

__all__ = ["attention", "bias_gelu", "enabled", "gemm", "layer_norm", "matmul_rows", "self_attention"]
