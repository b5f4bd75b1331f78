"""Temporal-multimodal (TM) fusion: a cascade of cross-modal cross-attention over seasons.

Runs on the encoder's visible tokens, arranged [B, S, M, V, D]. Seasons are
processed in order s = 0, 1, ..., S-1 with the same weights. Per season:

1. Query set of modality m (`carry`, config `model.tm_carry`):
   * "aux_queries" (default; the paper's Fig. 3: "the fused features of the
     previous season, passed through a linear layer, join the next season's
     queries"):
         Q[0, m] = x[0, m]                                      [B, V, D]
         Q[s, m] = concat(x[s, m], carry_m(F[s-1, m]))          [B, 2V, D]  (s > 0)
     i.e. the previous season's V fused tokens of the same modality, each
     through a Linear (`carry_<m>`, shared across seasons), are APPENDED as
     auxiliary query tokens. Token-wise, not pooled: the carried tokens keep
     their own (previous-season) content and positions, and nothing assumes
     that token i of season s-1 and token i of season s are the same ground
     patch (the crops are non-aligned and the masks independent).
   * "mean_add" (the earlier reading, kept for the ablation):
         Q[s, m] = x[s, m] + carry_m(mean_v F[s-1, m])          [B, V, D]
     (the pooled previous season added to every query token).
2. `num_fusion_blocks` blocks; in each, every modality's query set attends
   to the concatenated query sets of the OTHER modalities of the same season
   (optical -> SAR and SAR -> optical for S2 + S1), all modalities updated
   simultaneously from the block's input (pre-LN, residual, then an MLP, on
   every token of the set, auxiliary ones included):
       y = Q + CrossAttn(norm_q(Q), norm_kv(context));  y = y + Mlp(norm2(y))
3. F[s, m] = the first V tokens of the last block's output (the current
   season's tokens; the auxiliary outputs are dropped): the fused token set
   passed to the decoders and the carry for season s+1.

Which reading of Fig. 3, and why: in a pure cross-attention block a query's
output depends only on that query and the keys/values, so auxiliary tokens
that were queries ONLY (outputs dropped) would change nothing. Here each
modality's query set is also the key/value set of the other modality's
stream (Fig. 3's symmetric "optical queries attend to SAR keys/values and
SAR queries attend to optical ones" uses the same two token sets on both
sides), so season s's optical tokens attend to SAR's current AND carried
previous-season tokens (and vice versa) in every block, and with >= 2 blocks
a modality's own carry reaches it through the other modality's update. It is
the smallest reading of Fig. 3 in which the carry has an effect; it adds no
params beyond the Linear and keeps V tokens per view for the decoders.

Initialisation: the attention output projection (attn/proj) and the MLP's fc2
of every fusion block start at ZERO (kernels and biases), so each block is the
identity at init and F[s, m] = x[s, m] (with "aux_queries"): phase 2 (fusion)
starts computing exactly phase 1's function (no fusion) and the TM blocks grow
from there (tested). With "mean_add" the carry is still added at init.

Consequences (tested): season 0's fused output does not depend on later
seasons; season s depends on seasons <= s; so the cascade is NOT equivariant
to permuting seasons (reordering seasons changes every season's output
except through the same weights).

Param tree (under `fusion/`): `blocks_<b>_<m>/{norm_q, norm_kv, attn/{q,kv,proj},
norm2, mlp/{fc1,fc2}}`, `carry_<m>/{kernel [D, D], bias [D]}` (only if S > 1;
the same shapes for both carry modes).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from seamo_jax.models import layers
from seamo_jax.models.attention import CrossAttention
from seamo_jax.models.backend import Backend

_ACTIVATION = ("batch", "length", "embed")
TM_CARRIES = ("aux_queries", "mean_add")


class FusionBlock(nn.Module):
    """Queries of one modality attend to the other modalities' tokens of the same season.

    attn/proj and mlp/fc2 are zero-initialised: the block is the identity at init.
    """

    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    backend: Backend = Backend()

    @nn.compact
    def __call__(self, queries: jnp.ndarray, context: jnp.ndarray) -> jnp.ndarray:
        """queries [B, Lq, D], context [B, Lk, D] -> [B, Lq, D]."""
        q = layers.layer_norm("norm_q", self.dtype, self.backend)(queries)
        kv = layers.layer_norm("norm_kv", self.dtype, self.backend)(context)
        x = queries + CrossAttention(self.num_heads, self.dtype, self.backend, name="attn",
                                     zero_init_output=True)(q, kv)
        x = nn.with_logical_constraint(x, _ACTIVATION)
        x = x + layers.Mlp(self.mlp_dim, self.dtype, self.backend, name="mlp", zero_init_output=True)(
            layers.layer_norm("norm2", self.dtype, self.backend)(x))
        return nn.with_logical_constraint(x, _ACTIVATION)


class TMFusion(nn.Module):
    """The TM cascade (see module docstring). Needs >= 2 modalities. carry: a key of TM_CARRIES."""

    modalities: tuple[str, ...]
    num_blocks: int
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    backend: Backend = Backend()
    carry: str = "aux_queries"

    @nn.compact
    def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
        """tokens [B, S, M, V, D] (M in `modalities` order) -> fused [B, S, M, V, D]."""
        num_seasons, num_modalities = tokens.shape[1], tokens.shape[2]
        if num_modalities < 2 or num_modalities != len(self.modalities):
            raise ValueError(f"TM fusion needs all of {self.modalities} (>= 2 modalities); got {num_modalities}")
        if self.carry not in TM_CARRIES:
            raise ValueError(f"unknown tm carry {self.carry!r}; use one of {TM_CARRIES}")
        width, num_visible = tokens.shape[-1], tokens.shape[-2]
        blocks = [{m: FusionBlock(self.num_heads, self.mlp_dim, self.dtype, self.backend,
                                  name=f"blocks_{b}_{m}") for m in self.modalities}
                  for b in range(self.num_blocks)]
        carries = {m: layers.dense(width, 1, ("embed", None), (None,), self.dtype, f"carry_{m}",
                                   backend=self.backend)
                   for m in self.modalities} if num_seasons > 1 else {}
        fused_seasons = []
        previous = None  # [B, M, V, D] fused tokens of season s-1
        for s in range(num_seasons):
            state = [tokens[:, s, i] for i in range(num_modalities)]  # each [B, V, D]
            if previous is not None and self.carry == "aux_queries":
                # Auxiliary query tokens: [x[s, m]; carry_m(F[s-1, m])], [B, 2V, D].
                state = [jnp.concatenate([x, carries[m](previous[:, i]).astype(x.dtype)], axis=1)
                         for i, (x, m) in enumerate(zip(state, self.modalities))]
            elif previous is not None:
                state = [x + carries[m](jnp.mean(previous[:, i], axis=1, keepdims=True)).astype(x.dtype)
                         for i, (x, m) in enumerate(zip(state, self.modalities))]
            for block in blocks:
                state = [block[m](state[i], jnp.concatenate([state[j] for j in range(num_modalities) if j != i],
                                                            axis=1))
                         for i, m in enumerate(self.modalities)]
            previous = jnp.stack([x[:, :num_visible] for x in state], axis=1)  # the current season's tokens
            fused_seasons.append(previous)
        return jnp.stack(fused_seasons, axis=1)
