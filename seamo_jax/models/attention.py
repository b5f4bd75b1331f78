"""Multi-head self- and cross-attention (head-major einsum, or `jax.nn.dot_product_attention`).

Self-attention uses one fused qkv projection, kernel [D, 3, H, Dh]: one
matmul instead of three (better arithmetic intensity on CPU/TPU), and it maps
1:1 onto timm's `attn.qkv.weight [3D, D]` (reshape to [D, 3D], transpose;
timm splits the 3D outputs as (3, H, Dh), the same order). The output
projection kernel is [H, Dh, D] = timm's `attn.proj.weight` transposed.

Cross-attention (the TM fusion blocks) projects queries from one token set
and keys/values from another: `q` [D, H, Dh] and fused `kv` [D, 2, H, Dh].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seamo_jax import kernels
from seamo_jax.models import layers

_QKV_AXES = ("embed", None, "heads", "kv")
_OUT_AXES = ("heads", "kv", "embed")
_HEAD_ACTIVATION = ("batch", "length", "heads", "kv")


def _head_major_forward(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray):
    """Forward of `attend_head_major`; also returns what its backward needs."""
    scale = q.shape[-1] ** -0.5
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [B, H, L, Dh]
    q_scaled = q * jnp.asarray(scale, q.dtype)
    logits = jnp.einsum("bhqd,bhkd->bhqk", q_scaled, k, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs, v)  # [B, H, Lq, Dh]
    return jnp.swapaxes(out, 1, 2), (q_scaled, k, v, probs, out)


@jax.custom_vjp
def attend_head_major(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """softmax(q k^T / sqrt(Dh)) v on [B, L, H, Dh] operands, heads moved in front once.

    Same maths as jax.nn.dot_product_attention's XLA path (logits and softmax
    in float32, probabilities cast back to the compute dtype), but with the
    heads in front both products (and the backward ones) are plain batched
    GEMMs over [B*H]; jax's version contracts on the [B, L, H, Dh] layout and
    leaves the transposes to XLA. Measured on a 2-core CPU (issue 4), this
    plus the row-merged DenseND (layers.py) made the ViT-S MAE train step
    7-10% faster.

    The backward is written by hand (as flash attention does it): the
    softmax gradient uses delta = rowsum(dout * out), which equals
    rowsum(dprobs * probs), so it reads the [B, H, L, L] tensors once fewer,
    and only the probabilities are kept from the forward (not the logits).
    On a 2-core CPU the decoder's attention (16 heads of dim 32 over 197
    tokens) is bound by its batched small GEMMs (30-50 GF/s) and by those
    L x L memory passes (docs/session3_notes.md). Gradients equal
    autodiff's to float32 rounding (tested).

    Args:
      q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh].
    Returns:
      [B, Lq, H, Dh].
    """
    return _head_major_forward(q, k, v)[0]


def _attend_head_major_bwd(residuals, dout):
    q_scaled, k, v, probs, out = residuals
    scale = q_scaled.shape[-1] ** -0.5
    dout = jnp.swapaxes(dout, 1, 2)  # [B, H, Lq, Dh]
    dprobs = jnp.einsum("bhqd,bhkd->bhqk", dout, v, preferred_element_type=jnp.float32)
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    dlogits = (probs.astype(jnp.float32) * (dprobs - delta)).astype(q_scaled.dtype)
    dq = jnp.einsum("bhqk,bhkd->bhqd", dlogits, k) * jnp.asarray(scale, q_scaled.dtype)
    dk = jnp.einsum("bhqk,bhqd->bhkd", dlogits, q_scaled)
    dv = jnp.einsum("bhqk,bhqd->bhkd", probs, dout)
    return tuple(jnp.swapaxes(t, 1, 2) for t in (dq, dk, dv))


attend_head_major.defvjp(_head_major_forward, _attend_head_major_bwd)


def _attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, implementation: str | None) -> jnp.ndarray:
    """softmax(q k^T / sqrt(Dh)) v on [B, L, H, Dh] arrays (L may differ for q and k).

    implementation: None = automatic: on CPU the fused attention kernel of
    seamo_jax/kernels where `kernels.enabled` (float32, one device), else
    the head-major einsum above (measured faster than XLA's there);
    jax.nn.dot_product_attention (XLA picks the kernel) on GPU/TPU;
    "einsum" forces the einsum; "xla" / "cudnn" =
    jax.nn.dot_product_attention with that implementation ("cudnn" is the
    flash kernel on GPUs).
    """
    q = nn.with_logical_constraint(q, _HEAD_ACTIVATION)
    k = nn.with_logical_constraint(k, _HEAD_ACTIVATION)
    v = nn.with_logical_constraint(v, _HEAD_ACTIVATION)
    if implementation is None and kernels.enabled(q.dtype):
        return kernels.attention(q, k, v)
    if implementation == "einsum" or (implementation is None and jax.default_backend() == "cpu"):
        return attend_head_major(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused qkv.

    Params: qkv {kernel [D, 3, H, Dh], bias [3, H, Dh]}, proj {kernel [H, Dh, D], bias [D]}.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    implementation: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, L, D] -> [B, L, D]."""
        width = x.shape[-1]
        head_dim = width // self.num_heads
        qkv = layers.dense((3, self.num_heads, head_dim), 1, _QKV_AXES, (None, "heads", "kv"), self.dtype, "qkv")(x)
        if self.implementation is None and kernels.enabled(qkv.dtype):
            out = kernels.self_attention(qkv)  # reads q, k, v in place: no slices, no gradient concat
        else:
            out = _attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], self.implementation)
        return layers.dense(width, 2, _OUT_AXES, ("embed",), self.dtype, "proj")(out)


class CrossAttention(nn.Module):
    """Multi-head attention of `queries` over `context`.

    Params: q {kernel [D, H, Dh], bias [H, Dh]}, kv {kernel [D, 2, H, Dh],
    bias [2, H, Dh]}, proj {kernel [H, Dh, D], bias [D]}.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    implementation: str | None = None

    @nn.compact
    def __call__(self, queries: jnp.ndarray, context: jnp.ndarray) -> jnp.ndarray:
        """queries [B, Lq, D], context [B, Lk, D] -> [B, Lq, D]."""
        width = queries.shape[-1]
        head_dim = width // self.num_heads
        q = layers.dense((self.num_heads, head_dim), 1, ("embed", "heads", "kv"), ("heads", "kv"), self.dtype,
                         "q")(queries)
        kv = layers.dense((2, self.num_heads, head_dim), 1, _QKV_AXES, (None, "heads", "kv"), self.dtype,
                          "kv")(context)
        out = _attend(q, kv[:, :, 0], kv[:, :, 1], self.implementation)
        return layers.dense(width, 2, _OUT_AXES, ("embed",), self.dtype, "proj")(out)
