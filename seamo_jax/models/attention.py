"""Multi-head self- and cross-attention; the attention itself is chosen by the model's Backend.

`attend` computes softmax(q k^T / sqrt(Dh)) v with `backend.attention`
(models/backend.py): "xla" (jax.nn.dot_product_attention, the default),
"cudnn" (its cuDNN flash kernel, GPUs), "pallas_tpu" (Pallas' TPU flash
kernel) or "einsum" (attend_head_major below); with `backend.cpu_kernels`
the float32 attention runs in seamo_jax/kernels instead.

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
from seamo_jax.models.backend import Backend

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
    L x L memory passes (docs/performance.md, "CPU kernels"). Gradients equal
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


def _pallas_tpu_flash_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """Pallas' TPU flash attention on [B, L, H, Dh] operands; [B, Lq, H, Dh] out.

    The kernel takes [B, H, L, Dh] and blocks of 128 along both sequence
    axes (its minimum; lane width), so lengths such as ViT's 1 + 196 are
    padded up to a multiple of 128: padded keys get segment id 0 and every
    query id 1, so no query attends to padding, and the padded query rows
    (which attend to real keys, so stay finite) are sliced off; their zero
    cotangent gives zero gradients. Dh must be <= 128 or a multiple of 128
    (every ViT size here: 32-80). Off a TPU it runs only under
    `jax.experimental.pallas.tpu.force_tpu_interpret_mode()` (tests).
    """
    from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash

    batch, len_q, _, head_dim = q.shape
    len_k = k.shape[1]
    block = pallas_flash.MIN_BLOCK_SIZE
    pad_q, pad_k = -len_q % block, -len_k % block
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [B, H, L, Dh]
    q = jnp.pad(q, ((0, 0), (0, 0), (0, pad_q), (0, 0)))
    k, v = (jnp.pad(t, ((0, 0), (0, 0), (0, pad_k), (0, 0))) for t in (k, v))
    segment_ids = None
    if pad_k:
        kv_ids = jnp.broadcast_to((jnp.arange(len_k + pad_k) < len_k).astype(jnp.int32), (batch, len_k + pad_k))
        segment_ids = pallas_flash.SegmentIds(q=jnp.ones((batch, len_q + pad_q), jnp.int32), kv=kv_ids)
    out = pallas_flash.flash_attention(q, k, v, segment_ids=segment_ids, sm_scale=head_dim ** -0.5,
                                       block_sizes=pallas_flash.BlockSizes.get_default(
                                           batch, q.shape[1], len_q + pad_q, len_k + pad_k, head_dim))
    return jnp.swapaxes(out[:, :, :len_q], 1, 2)


def _pallas_tpu_attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """`_pallas_tpu_flash_attention` per shard under the step's mesh; [B, L, H, Dh] in and out.

    A pallas_call has no sharding rule (XLA would gather its operands onto
    every device), so under a mesh it runs in a shard_map over the
    activations' logical sharding (batch and heads; the active
    `nn.logical_axis_rules`): keys and values are whole along the sequence,
    and the head dim is never split.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return _pallas_tpu_flash_attention(q, k, v)
    batch_axes, length_axes, head_axes, _ = nn.logical_to_mesh_axes(_HEAD_ACTIVATION)
    q_spec = jax.sharding.PartitionSpec(batch_axes, length_axes, head_axes, None)
    kv_spec = jax.sharding.PartitionSpec(batch_axes, None, head_axes, None)
    return jax.shard_map(_pallas_tpu_flash_attention, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                         check_vma=False)(q, k, v)


def _attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, implementation: str) -> jnp.ndarray:
    """softmax(q k^T / sqrt(Dh)) v with `implementation` (Backend.attention; the CPU kernels are `attend`'s).

    q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh] -> [B, Lq, H, Dh]. "xla" /
    "cudnn" = jax.nn.dot_product_attention with that implementation ("cudnn"
    is the flash kernel on GPUs, bf16/fp16); "pallas_tpu" = Pallas' TPU
    flash kernel; "einsum" = attend_head_major.
    """
    q = nn.with_logical_constraint(q, _HEAD_ACTIVATION)
    k = nn.with_logical_constraint(k, _HEAD_ACTIVATION)
    v = nn.with_logical_constraint(v, _HEAD_ACTIVATION)
    if implementation in ("xla", "cudnn"):
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    if implementation == "einsum":
        return attend_head_major(q, k, v)
    if implementation == "pallas_tpu":
        return _pallas_tpu_attend(q, k, v)
    raise ValueError(f"unknown attention implementation {implementation!r}; use 'xla', 'cudnn', 'pallas_tpu' "
                     f"or 'einsum'")


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, backend: Backend) -> jnp.ndarray:
    """softmax(q k^T / sqrt(Dh)) v as `backend` says: q [B, Lq, H, Dh], k, v [B, Lk, H, Dh] -> [B, Lq, H, Dh]."""
    if backend.kernels_for(q.dtype):
        q, k, v = (nn.with_logical_constraint(t, _HEAD_ACTIVATION) for t in (q, k, v))
        return kernels.attention(q, k, v)
    return _attend(q, k, v, backend.attention)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused qkv.

    Params: qkv {kernel [D, 3, H, Dh], bias [3, H, Dh]}, proj {kernel [H, Dh, D], bias [D]}.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    backend: Backend = Backend()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, L, D] -> [B, L, D]."""
        width = x.shape[-1]
        head_dim = width // self.num_heads
        qkv = layers.dense((3, self.num_heads, head_dim), 1, _QKV_AXES, (None, "heads", "kv"), self.dtype, "qkv",
                           backend=self.backend)(x)  # [B, L, 3, H, Dh]
        if self.backend.kernels_for(qkv.dtype):
            out = kernels.self_attention(qkv)  # reads q, k, v in place: no slices, no gradient concat
        else:
            out = _attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], self.backend.attention)
        return layers.dense(width, 2, _OUT_AXES, ("embed",), self.dtype, "proj", backend=self.backend)(out)


class CrossAttention(nn.Module):
    """Multi-head attention of `queries` over `context`.

    Params: q {kernel [D, H, Dh], bias [H, Dh]}, kv {kernel [D, 2, H, Dh],
    bias [2, H, Dh]}, proj {kernel [H, Dh, D], bias [D]}. zero_init_output:
    proj's kernel starts at zero (its bias always does), so the attention
    branch starts as zero (models/fusion.py).
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    backend: Backend = Backend()
    zero_init_output: bool = False

    @nn.compact
    def __call__(self, queries: jnp.ndarray, context: jnp.ndarray) -> jnp.ndarray:
        """queries [B, Lq, D], context [B, Lk, D] -> [B, Lq, D]."""
        width = queries.shape[-1]
        head_dim = width // self.num_heads
        q = layers.dense((self.num_heads, head_dim), 1, ("embed", "heads", "kv"), ("heads", "kv"), self.dtype,
                         "q", backend=self.backend)(queries)  # [B, Lq, H, Dh]
        kv = layers.dense((2, self.num_heads, head_dim), 1, _QKV_AXES, (None, "heads", "kv"), self.dtype,
                          "kv", backend=self.backend)(context)  # [B, Lk, 2, H, Dh]
        out = attend(q, kv[:, :, 0], kv[:, :, 1], self.backend)
        return layers.dense(width, 2, _OUT_AXES, ("embed",), self.dtype, "proj", backend=self.backend,
                            zero_init=self.zero_init_output)(out)
