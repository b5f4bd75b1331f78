"""Which implementation the model's ops use, chosen ONCE per run from `config.model`.

The model has one generic path: XLA's ops (`jax.lax.dot_general`, flax-style
LayerNorm maths, `jax.nn.dot_product_attention`), which XLA partitions over
any mesh and compiles for any backend. Two choices on top of it reach the
layers through one frozen `Backend`, a module attribute passed down
SeaMo -> Encoder / TMFusion / MAEDecoder -> block_stack -> Block ->
SelfAttention / CrossAttention / Mlp / LayerNorm / DenseND:

  attention:   how softmax(q k^T / sqrt(Dh)) v is computed (`model.attention_impl`):
      "xla"         jax.nn.dot_product_attention(implementation="xla") (default);
      "cudnn"       jax.nn.dot_product_attention(implementation="cudnn"): cuDNN
                    flash attention, GPUs only, bfloat16 / float16 only;
      "pallas_tpu"  jax.experimental.pallas.ops.tpu.flash_attention (TPUs;
                    runs on CPU only under pltpu.force_tpu_interpret_mode);
      "einsum"      models/attention.attend_head_major: head-major einsums with a
                    hand-written backward (tuned on CPU before the kernels existed).
  cpu_kernels: the XLA FFI kernels of seamo_jax/kernels take every GEMM of
      DenseND, the attention, fc1's bias + GELU and LayerNorm
      (`model.cpu_kernels`: "auto" | "on" | "off"). They are valid only for an
      unpartitioned float32 computation on the CPU backend (an FFI call has no
      sharding rule: XLA would gather its operands), so "auto" turns them on
      only for single-device float32 CPU runs. They compute the same values as
      the XLA path to float32 rounding and use the same params
      (tests/test_kernels.py), so checkpoints do not depend on the choice.

Nothing in the layers reads environment variables, jax.default_backend() or
the mesh to pick an implementation: `resolve_backend` does that once.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp

ATTENTION_IMPLS = ("xla", "cudnn", "pallas_tpu", "einsum")
CPU_KERNEL_MODES = ("auto", "on", "off")
# Attention kernels of an accelerator: they exclude the CPU kernels (which would replace them).
_ACCELERATOR_ATTENTION = ("cudnn", "pallas_tpu")
_HALF_DTYPES = ("bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Backend:
    """The implementation choices of one run (hashable: a flax module attribute).

    Attributes:
      attention: a key of ATTENTION_IMPLS (see the module docstring).
      cpu_kernels: use seamo_jax/kernels for float32 GEMMs, attention, GELU
        and LayerNorm (one CPU device only); they supersede `attention`.
    """

    attention: str = "xla"
    cpu_kernels: bool = False

    def __post_init__(self):
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention implementation {self.attention!r}; known: {list(ATTENTION_IMPLS)}")
        if self.cpu_kernels and self.attention in _ACCELERATOR_ATTENTION:
            raise ValueError(f"cpu_kernels=True would replace attention={self.attention!r}; "
                             f"use attention='xla' with the CPU kernels")

    def kernels_for(self, dtype: Any) -> bool:
        """Whether a computation in `dtype` goes through the CPU kernels (they are float32-only)."""
        return self.cpu_kernels and jnp.dtype(dtype) == jnp.float32


def attention_impl(model_config: Any) -> str:
    """`model.attention_impl`, validated against `model.dtype`."""
    impl = model_config.attention_impl
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown model.attention_impl {impl!r}; known: {list(ATTENTION_IMPLS)}")
    dtype = model_config.dtype
    if impl == "cudnn" and dtype not in _HALF_DTYPES:
        # cuDNN's fused attention has no float32 kernel; jax would fail later with a less direct message.
        raise ValueError(f"model.attention_impl='cudnn' needs model.dtype bfloat16 or float16, got {dtype}")
    return impl


def cpu_kernels_mode(model_config: Any) -> str:
    """`model.cpu_kernels`; booleans (e.g. from a command-line override) mean on / off."""
    mode = model_config.cpu_kernels
    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    if mode not in CPU_KERNEL_MODES:
        raise ValueError(f"unknown model.cpu_kernels {mode!r}; known: {list(CPU_KERNEL_MODES)}")
    return mode


def generic_backend(model_config: Any) -> Backend:
    """The XLA path with `model.attention_impl`: no CPU kernels, whatever the machine."""
    cpu_kernels_mode(model_config)  # a typo is an error on every path
    return Backend(attention=attention_impl(model_config))


def resolve_backend(model_config: Any, mesh_or_num_devices: Any, *, platform: str | None = None) -> Backend:
    """The Backend of a run: `model.attention_impl` and `model.cpu_kernels` against the machine.

    Call once per run, before tracing (it may compile the kernels' C++ once
    per machine, seamo_jax/kernels/build.py).

    Args:
      model_config: config.model (keys attention_impl, cpu_kernels, dtype).
      mesh_or_num_devices: the jax.sharding.Mesh the step runs on, or its
        device count (1 for a plain jit on the default device).
      platform: default jax.default_backend().
    Returns:
      Backend. cpu_kernels "auto": on iff the platform is cpu, one device,
      model.dtype float32, attention_impl not an accelerator kernel, and the
      kernels built (else off, with a warning if only the build failed);
      "on": the same conditions, each unmet one a ValueError (a failed build
      a RuntimeError); "off": off.
    """
    attention = attention_impl(model_config)
    mode = cpu_kernels_mode(model_config)
    if mode == "off":
        return Backend(attention=attention)
    num_devices = mesh_or_num_devices if isinstance(mesh_or_num_devices, int) else mesh_or_num_devices.size
    platform = jax.default_backend() if platform is None else platform
    dtype = model_config.dtype
    unmet = [reason for reason, bad in (
        (f"the cpu backend (this run: {platform})", platform != "cpu"),
        # An FFI call has no sharding rule: under a multi-device mesh XLA would gather its operands.
        (f"one device (this run: {num_devices})", num_devices != 1),
        (f"model.dtype float32 (got {dtype})", dtype != "float32"),
        (f"model.attention_impl 'xla' or 'einsum' (got {attention!r})", attention in _ACCELERATOR_ATTENTION),
    ) if bad]
    if unmet:
        if mode == "on":
            raise ValueError(f"model.cpu_kernels='on' needs {'; '.join(unmet)}")
        return Backend(attention=attention)
    from seamo_jax.kernels import build  # compiles cpu_kernels.cc on first use (cached per machine)

    if build.load() is None:
        if mode == "on":
            raise RuntimeError(f"model.cpu_kernels='on' but the CPU kernels are unavailable: {build.load_error()}")
        warnings.warn(f"seamo_jax CPU kernels unavailable, using XLA's ops (slower on CPU): {build.load_error()}",
                      RuntimeWarning, stacklevel=2)
        return Backend(attention=attention)
    return Backend(attention=attention, cpu_kernels=True)
