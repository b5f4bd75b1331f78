"""Small shared building blocks: initialisers, dense layers with logical axes, MLP.

Every param is created with `nn.with_logical_partitioning`, so the
`config.sharding_rules` (logical axis -> mesh axis) shard any model on any
mesh. Logical axis names used in models/: "embed" (token width), "mlp" (MLP
hidden), "heads", "kv" (head dim), "patch" (patch pixel features), "layers"
(scanned depth); activations use "batch", "length", "embed", "mlp", "heads", "kv".
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seamo_jax import kernels
from seamo_jax.models.backend import Backend


def xavier_uniform_flat(num_in_axes: int = 1):
    """Xavier-uniform over the kernel viewed as a 2-D [fan_in, fan_out] matrix.

    MAE initialises every nn.Linear (and the patch conv, flattened) with
    xavier_uniform; a multi-axis kernel such as qkv [D, 3, H, Dh] must use the
    fans of its [D, 3D] matrix, not of its first/last axes.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in = int(np.prod(shape[:num_in_axes]))
        fan_out = int(np.prod(shape[num_in_axes:]))
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


def _contract_trailing(x: jnp.ndarray, kernel: jnp.ndarray, num_in_axes: int) -> jnp.ndarray:
    """[M, *in] . [*in, *out] -> [M, *out]."""
    dims = (tuple(range(1, 1 + num_in_axes)), tuple(range(num_in_axes)))
    return jax.lax.dot_general(x, kernel, (dims, ((), ())))


class DenseND(nn.Module):
    """y = x . kernel + bias, contracting the last `num_in_axes` axes of x.

    kernel [*in_dims, *features] keeps head structure visible (e.g. qkv
    [D, 3, H, Dh]) so logical axes can name each dim. (flax's DenseGeneral
    initialises a flattened 2-D kernel, which breaks multi-axis logical
    partitioning under a mesh, hence this small module.)

    Attributes:
      features: output dims.
      num_in_axes: trailing input axes contracted.
      kernel_axes, bias_axes: logical axis names of kernel / bias.
      dtype: compute dtype (params float32).
      activation: None, or "gelu" (exact erf GELU after the bias; with the
        CPU kernels the bias and GELU are one fused pass).
      backend: models/backend.py; `cpu_kernels` (float32) runs the GEMMs
        through seamo_jax/kernels, else XLA's dot_general.
      zero_init: initialise the kernel to zeros instead of xavier-uniform
        (residual branches that must start as the identity, models/fusion.py).
    """

    features: tuple[int, ...]
    num_in_axes: int
    kernel_axes: tuple
    bias_axes: tuple
    dtype: jnp.dtype = jnp.float32
    activation: str | None = None
    backend: Backend = Backend()
    zero_init: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        in_dims = x.shape[x.ndim - self.num_in_axes:]
        kernel_init = nn.initializers.zeros if self.zero_init else xavier_uniform_flat(self.num_in_axes)
        kernel = self.param("kernel", nn.with_logical_partitioning(kernel_init, self.kernel_axes),
                            (*in_dims, *self.features), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.bias_axes),
                          self.features, jnp.float32)
        # Merge the leading (batch, length, ...) axes into one row axis: XLA:CPU
        # then runs one big GEMM per product (forward and both backward ones;
        # the kernel gradient contracts a single row axis instead of [B, L]),
        # with no copies. The kernel keeps its multi-axis shape so a
        # "heads"-sharded qkv kernel [D, 3, H, Dh] is not resharded by a reshape.
        lead = x.shape[:x.ndim - self.num_in_axes]
        if self.activation not in (None, "gelu"):
            raise ValueError(f"DenseND activation must be None or 'gelu', got {self.activation!r}")
        x2 = jnp.asarray(x, self.dtype).reshape(-1, *in_dims)
        kernel = jnp.asarray(kernel, self.dtype)
        bias = jnp.asarray(bias, self.dtype)
        if self.backend.kernels_for(self.dtype):  # OpenBLAS through XLA's FFI (seamo_jax/kernels)
            y = kernels.matmul_rows(x2, kernel, self.num_in_axes)
            if self.activation == "gelu" and len(self.features) == 1:
                return kernels.bias_gelu(y, bias).reshape(*lead, *self.features)
        else:
            y = _contract_trailing(x2, kernel, self.num_in_axes)
        y = y.reshape(*lead, *self.features) + bias
        # torch's nn.GELU(): 0.5 y (1 + erf(y / sqrt 2)) (jax computes it through erfc, same values).
        return nn.gelu(y, approximate=False) if self.activation == "gelu" else y


def dense(features: int | Sequence[int], num_in_axes: int, kernel_axes: tuple, bias_axes: tuple,
          dtype: jnp.dtype, name: str, activation: str | None = None, backend: Backend = Backend(),
          zero_init: bool = False) -> DenseND:
    """A DenseND with MAE's init (xavier-uniform on the [fan_in, fan_out] view, zero bias); zero_init: zero kernel."""
    features = (features,) if isinstance(features, int) else tuple(features)
    return DenseND(features, num_in_axes, tuple(kernel_axes), tuple(bias_axes), dtype, activation, backend,
                   zero_init, name=name)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with logical axes on its params.

    Params: scale [D] (ones, "embed"), bias [D] (zeros, "embed"): the same
    tree as flax.linen.LayerNorm, so checkpoints and exports do not change.
    Statistics in float32 (as flax does), output in `dtype`. With the CPU
    kernels (`backend.cpu_kernels`, float32) the forward and backward are one
    pass per row each (seamo_jax/kernels); elsewhere flax's maths: variance
    as E[x^2] - E[x]^2, clipped at 0.
    """

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    backend: Backend = Backend()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[..., D] -> [..., D]."""
        width = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (width,),
                           jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (width,),
                          jnp.float32)
        if self.backend.kernels_for(self.dtype) and x.dtype == jnp.float32:
            return kernels.layer_norm(x.reshape(-1, width), scale, bias, self.epsilon).reshape(x.shape)
        x32 = jnp.asarray(x, jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        variance = jnp.maximum(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
        y = (x32 - mean) * (jax.lax.rsqrt(variance + self.epsilon) * scale) + bias
        return jnp.asarray(y, self.dtype)


def layer_norm(name: str, dtype: jnp.dtype, backend: Backend = Backend()) -> LayerNorm:
    """LayerNorm with MAE's eps (1e-6) and logical axes on scale/bias."""
    return LayerNorm(epsilon=1e-6, dtype=dtype, backend=backend, name=name)


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf, as torch nn.GELU) -> fc2.

    Params: fc1 {kernel [D, F] ("embed","mlp"), bias [F]}, fc2 {kernel [F, D]
    ("mlp","embed"), bias [D]}. zero_init_output: fc2's kernel starts at zero
    (its bias always does), so the block's MLP branch starts as zero.
    """

    hidden_dim: int
    dtype: jnp.dtype = jnp.float32
    backend: Backend = Backend()
    zero_init_output: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, L, D] -> [B, L, D]."""
        width = x.shape[-1]
        h = dense(self.hidden_dim, 1, ("embed", "mlp"), ("mlp",), self.dtype, "fc1", "gelu", self.backend)(x)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        out = dense(width, 1, ("mlp", "embed"), ("embed",), self.dtype, "fc2", backend=self.backend,
                    zero_init=self.zero_init_output)(h)
        return out
