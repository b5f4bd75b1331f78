"""Light ViT MAE decoder, one per modality, shared across seasons.

Each (sample, season) view is decoded as its own sequence, exactly like MAE:
[cls, T tokens] where visible positions hold the projected (fused) encoder
tokens and masked positions a learned mask token, and cls is the projected
encoder cls of that view's season; then the view's sin-cos position (decoder
width, in `position_frame` as the encoder: "view" = MAE's per-view table,
"tile" = from the crop offset), a learned season embedding (row
`season_ids[b, s]`, only if num_seasons > 1), ViT blocks, a norm and a linear
head predicting the p*p*C_m pixels of every patch. Cross-season context has already been mixed in
by the encoder / TM fusion, so decoding views separately keeps the decoder
cheap (sequence 1 + T instead of 1 + S*T).

Param tree (under `decoder_<m>/`):

    decoder_embed/{kernel [D, Dd], bias [Dd]}
    mask_token                     [1, 1, Dd]
    season_embed                   [num_seasons, Dd]     only if num_seasons > 1
    blocks/...                     models/vit.py, width Dd, MLP 4*Dd
    decoder_norm/{scale, bias}     [Dd]
    decoder_pred/{kernel [Dd, p*p*C_m], bias [p*p*C_m]}
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from seamo_jax.models import layers, posembed
from seamo_jax.models.backend import Backend
from seamo_jax.models.vit import block_stack

_EMBED_INIT = nn.initializers.normal(stddev=0.02)


class MAEDecoder(nn.Module):
    """Attributes: patch_size, out_chans (C_m), width (Dd), depth, num_heads, num_seasons,
    dtype, scan, remat_policy, backend, position_frame."""

    patch_size: int
    out_chans: int
    width: int
    depth: int
    num_heads: int
    num_seasons: int
    dtype: jnp.dtype = jnp.float32
    scan: bool = True
    remat_policy: str = "none"
    backend: Backend = Backend()

    position_frame: str = "view"

    @nn.compact
    def __call__(self, visible: jnp.ndarray, cls: jnp.ndarray, ids_restore: jnp.ndarray, offsets: jnp.ndarray,
                 grid_size: tuple[int, int], season_ids: jnp.ndarray) -> jnp.ndarray:
        """Predicts every patch of every view of one modality.

        Args:
          visible: [B, S, V, D] encoder/fusion tokens of the visible patches.
          cls: [B, S, D] encoder cls token of each season slot (prepended to
            that view's sequence).
          ids_restore: int [B, S, T] (models/masking.visible_indices).
          offsets: [B, S, 2] crop origins in tile pixels.
          grid_size: (h/p, w/p).
          season_ids: int [B, S] season-embedding rows (unused if num_seasons == 1).
        Returns:
          [B, S, T, p*p*C] predictions (compute dtype).
        """
        batch, seasons, num_visible, _ = visible.shape
        num_tokens = ids_restore.shape[-1]
        embed = layers.dense(self.width, 1, ("embed", "mlp"), ("mlp",), self.dtype, "decoder_embed",
                             backend=self.backend)
        # Logical axes: the decoder is small; shard its width like an MLP hidden (over "model").
        x = embed(visible)  # [B, S, V, Dd]
        mask_token = self.param("mask_token", nn.with_logical_partitioning(_EMBED_INIT, (None, None, "embed")),
                                (1, 1, self.width), jnp.float32)
        fill = jnp.broadcast_to(mask_token.astype(x.dtype), (batch, seasons, num_tokens - num_visible, self.width))
        x = jnp.concatenate([x, fill], axis=2)
        x = jnp.take_along_axis(x, ids_restore[..., None], axis=2)  # back to row-major token order
        x = x + posembed.view_positions(self.width, self.position_frame, offsets, grid_size,
                                        self.patch_size).astype(x.dtype)
        if self.num_seasons > 1:
            table = self.param("season_embed", nn.with_logical_partitioning(_EMBED_INIT, (None, "embed")),
                               (self.num_seasons, self.width), jnp.float32)
            x = x + table[season_ids][:, :, None, :].astype(x.dtype)
        cls_tokens = embed(cls)[:, :, None, :]  # [B, S, 1, Dd]
        x = jnp.concatenate([cls_tokens.astype(x.dtype), x], axis=2).reshape(batch * seasons, 1 + num_tokens,
                                                                             self.width)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = block_stack(x, depth=self.depth, num_heads=self.num_heads, mlp_dim=4 * self.width, dtype=self.dtype,
                        scan=self.scan, remat_policy=self.remat_policy, backend=self.backend)
        x = layers.layer_norm("decoder_norm", self.dtype, self.backend)(x)
        pixels = self.patch_size * self.patch_size * self.out_chans
        x = layers.dense(pixels, 1, ("embed", "patch"), ("patch",), self.dtype, "decoder_pred",
                         backend=self.backend)(x[:, 1:])
        return x.reshape(batch, seasons, num_tokens, pixels)
