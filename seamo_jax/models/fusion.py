"""Temporal-multimodal (TM) fusion: a cascade of cross-modal cross-attention over seasons.

Runs on the encoder's visible tokens, arranged [B, S, M, V, D]. Seasons are
processed in order s = 0, 1, ..., S-1 with the same weights:

1. Queries of season s, per modality m:
       q[s, m] = x[s, m] + carry_m(mean_v F[s-1, m])          (s > 0)
       q[0, m] = x[0, m]
   i.e. the previous season's fused tokens of the same modality are
   mean-pooled over tokens, projected by a Linear (`carry_<m>`, shared across
   seasons) and ADDED to every query token of modality m. Pooling (instead of
   a token-wise sum) is deliberate: views of different seasons are
   non-aligned crops with independent masks, so token i of season s-1 and
   token i of season s are different ground patches.
2. `num_fusion_blocks` blocks; in each, every modality cross-attends to the
   concatenated tokens of the other modalities of the SAME season (optical
   -> SAR and SAR -> optical for S2+S1), updating all modalities
   simultaneously from the block's input (pre-LN, residual, then an MLP):
       y = q + CrossAttn(norm_q(q), norm_kv(context));  y = y + Mlp(norm2(y))
3. F[s, m] = output of the last block; it is the fused token set passed to
   the decoders and the carry for season s+1.

Consequences (tested): season 0's fused output does not depend on later
seasons; season s depends on seasons <= s; so the cascade is NOT equivariant
to permuting seasons (reordering seasons changes every season's output
except through the same weights).

Param tree (under `fusion/`): `blocks_<b>_<m>/{norm_q, norm_kv, attn/{q,kv,proj},
norm2, mlp/{fc1,fc2}}`, `carry_<m>/{kernel [D, D], bias [D]}` (only if S > 1).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from seamo_jax.models import layers
from seamo_jax.models.attention import CrossAttention

_ACTIVATION = ("batch", "length", "embed")


class FusionBlock(nn.Module):
    """Queries of one modality attend to the other modalities' tokens of the same season."""

    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, queries: jnp.ndarray, context: jnp.ndarray) -> jnp.ndarray:
        """queries [B, Lq, D], context [B, Lk, D] -> [B, Lq, D]."""
        q = layers.layer_norm("norm_q", self.dtype)(queries)
        kv = layers.layer_norm("norm_kv", self.dtype)(context)
        x = queries + CrossAttention(self.num_heads, self.dtype, self.attention_impl, name="attn")(q, kv)
        x = nn.with_logical_constraint(x, _ACTIVATION)
        x = x + layers.Mlp(self.mlp_dim, self.dtype, name="mlp")(layers.layer_norm("norm2", self.dtype)(x))
        return nn.with_logical_constraint(x, _ACTIVATION)


class TMFusion(nn.Module):
    """The TM cascade (see module docstring). Needs >= 2 modalities."""

    modalities: tuple[str, ...]
    num_blocks: int
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
        """tokens [B, S, M, V, D] (M in `modalities` order) -> fused [B, S, M, V, D]."""
        num_seasons, num_modalities = tokens.shape[1], tokens.shape[2]
        if num_modalities < 2 or num_modalities != len(self.modalities):
            raise ValueError(f"TM fusion needs all of {self.modalities} (>= 2 modalities); got {num_modalities}")
        width = tokens.shape[-1]
        blocks = [{m: FusionBlock(self.num_heads, self.mlp_dim, self.dtype, self.attention_impl,
                                  name=f"blocks_{b}_{m}") for m in self.modalities}
                  for b in range(self.num_blocks)]
        carries = {m: layers.dense(width, 1, ("embed", None), (None,), self.dtype, f"carry_{m}")
                   for m in self.modalities} if num_seasons > 1 else {}
        fused_seasons = []
        previous = None  # [B, M, V, D] fused tokens of season s-1
        for s in range(num_seasons):
            state = [tokens[:, s, i] for i in range(num_modalities)]  # each [B, V, D]
            if previous is not None:
                state = [x + carries[m](jnp.mean(previous[:, i], axis=1, keepdims=True)).astype(x.dtype)
                         for i, (x, m) in enumerate(zip(state, self.modalities))]
            for block in blocks:
                state = [block[m](state[i], jnp.concatenate([state[j] for j in range(num_modalities) if j != i],
                                                            axis=1))
                         for i, m in enumerate(self.modalities)]
            previous = jnp.stack(state, axis=1)
            fused_seasons.append(previous)
        return jnp.stack(fused_seasons, axis=1)
