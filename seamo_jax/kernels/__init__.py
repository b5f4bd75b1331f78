"""CPU kernels (XLA FFI custom calls) for the train step's GEMMs and attention.

Built on first use from cpu_kernels.cc (build.py); the model calls them
through ops.py only where `ops.enabled(dtype)` says so, and falls back to
XLA's ops (same values) everywhere else.
"""

from seamo_jax.kernels.ops import attention, enabled, gemm, matmul_rows

__all__ = ["attention", "enabled", "gemm", "matmul_rows"]
