"""JAX entry points of the CPU kernels, each with a custom VJP: GEMMs, attention, bias + GELU, LayerNorm.

The model calls them only where its `Backend` says so (models/backend.py:
`model.cpu_kernels`, resolved once per run; layers.DenseND, layers.LayerNorm,
attention.SelfAttention / CrossAttention): they are valid and measured faster
only on the CPU backend, in float32, when the computation is not partitioned
over several devices (an FFI call has no sharding rule, so XLA would gather
its operands), and when build.load() succeeded. Everywhere else the model
uses XLA's ops, which compute the same values to float32 rounding
(tests/test_kernels.py).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from seamo_jax.kernels import build


def _ffi_call(target: str, result_shape_dtypes, **kwargs):
    """jax.ffi.ffi_call of one of our targets, registering them first (build.load is cached after the first call).

    The Backend resolver (models/backend.py) loads the library before a run;
    loading here too means a kernel called directly (tests, a Backend built by
    hand) never lowers to an unregistered target.
    """
    if build.load() is None:
        raise RuntimeError(f"seamo_jax CPU kernels unavailable: {build.load_error()}")
    return jax.ffi.ffi_call(target, result_shape_dtypes, **kwargs)


def gemm(a: jax.Array, b: jax.Array, trans_a: bool = False, trans_b: bool = False) -> jax.Array:
    """op(a) @ op(b) in float32 with OpenBLAS, split over XLA's CPU threads.

    a: [M, K] ([K, M] if trans_a); b: [K, N] ([N, K] if trans_b) -> [M, N].
    """
    if a.ndim != 2 or b.ndim != 2 or a.dtype != jnp.float32 or b.dtype != jnp.float32:
        raise ValueError(f"gemm takes 2-D float32 operands, got {a.dtype}{a.shape} and {b.dtype}{b.shape}")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k_b, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k_b:
        raise ValueError(f"gemm contracting sizes differ: {k} vs {k_b}")
    call = _ffi_call("seamo_gemm", jax.ShapeDtypeStruct((m, n), jnp.float32), vmap_method="sequential")
    return call(a, b, trans_a=trans_a, trans_b=trans_b)


@jax.custom_vjp
def _matmul_2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return gemm(x, kernel)


def _matmul_2d_fwd(x, kernel):
    return gemm(x, kernel), (x, kernel)


def _matmul_2d_bwd(residuals, dy):
    x, kernel = residuals
    dkernel = gemm(x, dy, trans_a=True)  # x^T dy: no transposed copy, BLAS reads x column-wise
    # dx after dkernel: each GEMM then gets all threads in turn (measured
    # faster than letting XLA run the two side by side).
    dy, dkernel = jax.lax.optimization_barrier((dy, dkernel))
    return gemm(dy, kernel, trans_b=True), dkernel


_matmul_2d.defvjp(_matmul_2d_fwd, _matmul_2d_bwd)


def matmul_rows(x: jax.Array, kernel: jax.Array, num_in_axes: int) -> jax.Array:
    """x [M, *in] . kernel [*in, *out] -> [M, *out] (float32), gradients by the same kernels.

    The reshapes to 2-D are free (row-major bitcasts).
    """
    in_dims, out_dims = kernel.shape[:num_in_axes], kernel.shape[num_in_axes:]
    if x.shape[1:] != in_dims:
        raise ValueError(f"x {x.shape} does not end in the kernel's input dims {in_dims}")
    fan_in, fan_out = int(np.prod(in_dims)), int(np.prod(out_dims))
    y = _matmul_2d(x.reshape(x.shape[0], fan_in), kernel.reshape(fan_in, fan_out))
    return y.reshape(x.shape[0], *out_dims)


def _attention_fwd_call(q, k, v):
    batch, len_q, heads, _ = q.shape
    call = _ffi_call(
        "seamo_attention_fwd",
        (jax.ShapeDtypeStruct(q.shape, jnp.float32),
         jax.ShapeDtypeStruct((batch, heads, len_q, k.shape[1]), jnp.float32)),
        vmap_method="sequential")
    return call(q, k, v, scale=np.float32(q.shape[-1] ** -0.5))


@jax.custom_vjp
def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(Dh)) v per (batch, head), float32.

    q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh] -> [B, Lq, H, Dh]. The forward
    keeps the probabilities [B, H, Lq, Lk] for the backward (as
    attention.attend_head_major does).
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention takes q [B, Lq, H, Dh], k = v [B, Lk, H, Dh]; got {q.shape} {k.shape} {v.shape}")
    return _attention_fwd_call(q, k, v)[0]


def _attention_fwd(q, k, v):
    out, probs = _attention_fwd_call(q, k, v)
    return out, (q, k, v, out, probs)


def _attention_bwd(residuals, dout):
    q, k, v, out, probs = residuals
    call = _ffi_call("seamo_attention_bwd", tuple(jax.ShapeDtypeStruct(t.shape, jnp.float32) for t in (q, k, v)),
                            vmap_method="sequential")
    return call(q, k, v, out, probs, dout.astype(jnp.float32), scale=np.float32(q.shape[-1] ** -0.5))


attention.defvjp(_attention_fwd, _attention_bwd)


def _self_attention_fwd_call(qkv):
    batch, length, _, heads, head_dim = qkv.shape
    call = _ffi_call(
        "seamo_attention_qkv_fwd",
        (jax.ShapeDtypeStruct((batch, length, heads, head_dim), jnp.float32),
         jax.ShapeDtypeStruct((batch, heads, length, length), jnp.float32)),
        vmap_method="sequential")
    return call(qkv, scale=np.float32(head_dim ** -0.5))


@jax.custom_vjp
def self_attention(qkv: jax.Array) -> jax.Array:
    """`attention(q, k, v)` read in place from a packed projection, float32.

    qkv: [B, L, 3, H, Dh] (the fused qkv layer's output) -> [B, L, H, Dh].
    Slicing q, k, v out of qkv would copy them (and the backward would
    concatenate three gradients); here the kernel reads them with strides and
    writes the gradient [B, L, 3, H, Dh] in place.
    """
    if qkv.ndim != 5 or qkv.shape[2] != 3:
        raise ValueError(f"self_attention takes qkv [B, L, 3, H, Dh]; got {qkv.shape}")
    return _self_attention_fwd_call(qkv)[0]


def _self_attention_fwd(qkv):
    out, probs = _self_attention_fwd_call(qkv)
    return out, (qkv, out, probs)


def _self_attention_bwd(residuals, dout):
    qkv, out, probs = residuals
    call = _ffi_call("seamo_attention_qkv_bwd", jax.ShapeDtypeStruct(qkv.shape, jnp.float32),
                            vmap_method="sequential")
    return (call(qkv, out, probs, dout.astype(jnp.float32), scale=np.float32(qkv.shape[-1] ** -0.5)),)


self_attention.defvjp(_self_attention_fwd, _self_attention_bwd)


@jax.custom_vjp
def bias_gelu(y: jax.Array, bias: jax.Array) -> jax.Array:
    """gelu(y + bias) with the exact (erf) GELU, float32, in one pass.

    y: [M, N] (fc1's GEMM output before its bias); bias: [N] -> [M, N].
    torch's nn.GELU() formula, 0.5 h (1 + erf(h / sqrt 2)). The backward
    recomputes gelu'(y + bias) from y, so nothing but y and bias is kept.
    """
    if y.ndim != 2 or bias.shape != y.shape[1:]:
        raise ValueError(f"bias_gelu takes y [M, N] and bias [N]; got {y.shape} {bias.shape}")
    return _bias_gelu_fwd(y, bias)[0]


def _bias_gelu_fwd(y, bias):
    call = _ffi_call("seamo_bias_gelu_fwd", jax.ShapeDtypeStruct(y.shape, jnp.float32),
                            vmap_method="sequential")
    return call(y, bias), (y, bias)


def _bias_gelu_bwd(residuals, dout):
    y, bias = residuals
    call = _ffi_call("seamo_bias_gelu_bwd", jax.ShapeDtypeStruct(y.shape, jnp.float32),
                            vmap_method="sequential")
    dpre = call(y, bias, dout.astype(jnp.float32))
    return dpre, jnp.sum(dpre, axis=0)


bias_gelu.defvjp(_bias_gelu_fwd, _bias_gelu_bwd)


# Row blocks of the LayerNorm backward's partial column sums: fixed, so the
# scale/bias gradients do not depend on the thread count.
_LAYER_NORM_PARTIALS = 16


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the last axis, float32.

    x: [M, D]; scale, bias: [D] -> [M, D]. One pass per row forward and
    backward; mean and 1/std [M] are kept for the backward.
    """
    if x.ndim != 2 or scale.shape != x.shape[1:] or bias.shape != x.shape[1:]:
        raise ValueError(f"layer_norm takes x [M, D], scale [D], bias [D]; got {x.shape} {scale.shape} {bias.shape}")
    return _layer_norm(x, scale, bias, float(epsilon))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, epsilon):
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    rows = jax.ShapeDtypeStruct(x.shape[:1], jnp.float32)
    call = _ffi_call("seamo_layer_norm_fwd", (jax.ShapeDtypeStruct(x.shape, jnp.float32), rows, rows),
                            vmap_method="sequential")
    y, mean, rstd = call(x, scale, bias, epsilon=np.float32(epsilon))
    return y, (x, scale, mean, rstd)


def _layer_norm_bwd(epsilon, residuals, dy):
    x, scale, mean, rstd = residuals
    partials = jax.ShapeDtypeStruct((_LAYER_NORM_PARTIALS, x.shape[1]), jnp.float32)
    call = _ffi_call("seamo_layer_norm_bwd", (jax.ShapeDtypeStruct(x.shape, jnp.float32), partials, partials),
                            vmap_method="sequential")
    dx, dscale, dbias = call(x, scale, mean, rstd, dy.astype(jnp.float32))
    return dx, jnp.sum(dscale, axis=0), jnp.sum(dbias, axis=0)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)
