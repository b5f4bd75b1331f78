"""The multi-source encoder: per-modality tokenizers + one shared ViT.

Tokens of every (season, modality) view are embedded by their modality's
tokenizer, get the view's offset-based sin-cos position, a learned season
embedding and a learned modality embedding, and are concatenated into ONE
sequence per sample (season-major, then modality, then token), after a cls
token at position zero (MAE convention). Self-attention over that sequence
fuses modalities and seasons.

The learned season / modality embeddings exist only when there is more than
one season / modality, so a 1-season, 1-modality encoder has exactly the
params of an MAE encoder. Param tree (under `encoder/`):

    cls_token                       [1, 1, D]
    patch_embed_<m>/kernel, bias    [p, p, C_m, D], [D]     one per modality
    season_embed                    [num_seasons, D]        only if num_seasons > 1
    modality_embed                  [num_modalities, D]     only if > 1 modality
    blocks/...                      see models/vit.py (scanned: leading [depth])
    norm/scale, norm/bias           [D]
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from seamo_jax.models import layers, masking, posembed
from seamo_jax.models.patch_embed import PatchEmbed
from seamo_jax.models.sizes import ViTSize
from seamo_jax.models.vit import block_stack

_EMBED_INIT = nn.initializers.normal(stddev=0.02)  # MAE's init for cls / mask tokens


class Encoder(nn.Module):
    """Attributes: modalities / in_chans (aligned tuples), patch_size, size, num_seasons,
    dtype, scan, remat_policy, attention_impl."""

    modalities: tuple[str, ...]
    in_chans: tuple[int, ...]
    patch_size: int
    size: ViTSize
    num_seasons: int
    dtype: jnp.dtype = jnp.float32
    scan: bool = True
    remat_policy: str = "none"
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, patches: Mapping[str, jnp.ndarray], token_ids: Mapping[str, jnp.ndarray],
                 offsets: jnp.ndarray, grid_size: tuple[int, int], season_ids: Sequence[int]) -> jnp.ndarray:
        """Encodes the given tokens of the given views.

        Args:
          patches: modality -> [B, S, N, p*p*C_m] flattened patches (visible
            ones in pretraining, all T in `encode`). Any subset of modalities.
          token_ids: modality -> int [B, S, N], each patch's row-major index in
            its view's (h/p, w/p) grid (for its position).
          offsets: [B, S, 2] crop origins in tile pixels.
          grid_size: (h/p, w/p).
          season_ids: S static season-embedding indices, one per season slot.
        Returns:
          [B, 1 + S*M*N, D], normalised; index 0 is cls, then season-major,
          modality, token order.
        """
        width = self.size.width
        order = [m for m in self.modalities if m in patches]  # fixed order, whatever the dict order
        unknown = set(patches) - set(self.modalities)
        if unknown:
            raise ValueError(f"encoder has no tokenizer for modalities {sorted(unknown)}; built for {self.modalities}")
        if max(season_ids) >= self.num_seasons:
            raise ValueError(f"season ids {tuple(season_ids)} exceed the model's num_seasons {self.num_seasons}")
        if self.num_seasons > 1:
            season_table = self.param("season_embed", nn.with_logical_partitioning(_EMBED_INIT, (None, "embed")),
                                      (self.num_seasons, width), jnp.float32)
            season_embed = season_table[jnp.asarray(season_ids)][None, :, None, :]  # [1, S, 1, D]
        if len(self.modalities) > 1:
            modality_table = self.param("modality_embed", nn.with_logical_partitioning(_EMBED_INIT, (None, "embed")),
                                        (len(self.modalities), width), jnp.float32)
        first = patches[order[0]]
        batch, seasons = first.shape[:2]
        # Sin-cos table of every patch of every view, [B, S, T, D]; each modality gathers its tokens' rows.
        pos_table = posembed.sincos_2d_from_offsets(width, offsets, grid_size, self.patch_size)
        per_modality = []
        for m in order:
            chans = self.in_chans[self.modalities.index(m)]
            x = PatchEmbed(self.patch_size, chans, width, self.dtype, name=f"patch_embed_{m}")(patches[m])
            x = x + masking.gather_tokens(pos_table, token_ids[m]).astype(x.dtype)
            if self.num_seasons > 1:
                x = x + season_embed.astype(x.dtype)
            if len(self.modalities) > 1:
                x = x + modality_table[self.modalities.index(m)].astype(x.dtype)
            per_modality.append(x)  # [B, S, N, D]
        x = jnp.stack(per_modality, axis=2)  # [B, S, M, N, D]
        x = x.reshape(batch, -1, width)
        cls = self.param("cls_token", nn.with_logical_partitioning(_EMBED_INIT, (None, None, "embed")),
                         (1, 1, width), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, width)), x], axis=1)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = block_stack(x, depth=self.size.depth, num_heads=self.size.num_heads, mlp_dim=self.size.mlp_dim,
                        dtype=self.dtype, scan=self.scan, remat_policy=self.remat_policy,
                        attention_impl=self.attention_impl)
        return layers.layer_norm("norm", self.dtype)(x)
