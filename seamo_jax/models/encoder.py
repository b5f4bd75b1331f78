"""The multi-source encoder: per-modality tokenizers + one shared ViT.

Tokens of every (season, modality) view are embedded by their modality's
tokenizer, get the view's sin-cos position (`position_frame`: "view" = MAE's
per-view table, "tile" = from the crop offset, models/posembed.py), a learned
season embedding (row `season_ids[b, s]` of the table) and a learned modality
embedding, and are grouped into sequences after a cls token at position zero
(MAE convention), per `season_encoding`:

* "per_season" (the paper, SiamMAE-style): one sequence per (sample, season),
  [cls] + the visible S1 + S2 tokens of that season (modality-major), seasons
  folded into the batch axis ([B*S, 1 + M*N, D]) through the same weights.
  Self-attention fuses the modalities of a season; seasons never meet here
  (only in the TM fusion, models/fusion.py), so a season's tokens do not
  depend on the other seasons' pixels (tested).
* "joint": ONE sequence per sample, [cls] + S*M*N tokens (season-major), so
  self-attention also mixes seasons.

With one season the two are the same computation.

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

from typing import Mapping

import flax.linen as nn
import jax.numpy as jnp

from seamo_jax.models import layers, masking, posembed
from seamo_jax.models.backend import Backend
from seamo_jax.models.patch_embed import PatchEmbed
from seamo_jax.models.sizes import ViTSize
from seamo_jax.models.vit import block_stack

_EMBED_INIT = nn.initializers.normal(stddev=0.02)  # MAE's init for cls / mask tokens


SEASON_ENCODINGS = ("per_season", "joint")


class Encoder(nn.Module):
    """Attributes: modalities / in_chans (aligned tuples), patch_size, size, num_seasons,
    dtype, scan, remat_policy, backend, season_encoding, position_frame (module docstring),
    drop_path (stochastic depth rate, models/vit.py; 0 = off)."""

    modalities: tuple[str, ...]
    in_chans: tuple[int, ...]
    patch_size: int
    size: ViTSize
    num_seasons: int
    dtype: jnp.dtype = jnp.float32
    scan: bool = True
    remat_policy: str = "none"
    backend: Backend = Backend()

    season_encoding: str = "per_season"
    position_frame: str = "view"
    drop_path: float = 0.0  # stochastic depth of the blocks (models/vit.py), only when not deterministic

    @nn.compact
    def __call__(self, patches: Mapping[str, jnp.ndarray], token_ids: Mapping[str, jnp.ndarray],
                 offsets: jnp.ndarray, grid_size: tuple[int, int],
                 season_ids: jnp.ndarray, deterministic: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Encodes the given tokens of the given views.

        Args:
          patches: modality -> [B, S, N, p*p*C_m] flattened patches (visible
            ones in pretraining, all T in `encode`). Any subset of modalities.
          token_ids: modality -> int [B, S, N], each patch's row-major index in
            its view's (h/p, w/p) grid (for its position).
          offsets: [B, S, 2] crop origins in tile pixels.
          grid_size: (h/p, w/p).
          season_ids: int [B, S], the season-embedding row of every (sample,
            season slot), each in [0, num_seasons) (out-of-range ids are
            clipped by the gather; SeaMo checks them). Unused if num_seasons == 1.
          deterministic: False = apply `drop_path` (needs the "dropout" rng).
        Returns:
          cls: [B, S, D] normalised cls token per season slot ("per_season":
            each season's own; "joint": the one cls, repeated).
          tokens: [B, S, M*N, D] normalised patch tokens, modality-major then
            token order within a season.
        """
        width = self.size.width
        order = [m for m in self.modalities if m in patches]  # fixed order, whatever the dict order
        unknown = set(patches) - set(self.modalities)
        if unknown:
            raise ValueError(f"encoder has no tokenizer for modalities {sorted(unknown)}; built for {self.modalities}")
        if self.season_encoding not in SEASON_ENCODINGS:
            raise ValueError(f"unknown season_encoding {self.season_encoding!r}; use one of {SEASON_ENCODINGS}")
        if self.num_seasons > 1:
            season_table = self.param("season_embed", nn.with_logical_partitioning(_EMBED_INIT, (None, "embed")),
                                      (self.num_seasons, width), jnp.float32)
            season_embed = season_table[season_ids][:, :, None, :]  # [B, S, 1, D]
        if len(self.modalities) > 1:
            modality_table = self.param("modality_embed", nn.with_logical_partitioning(_EMBED_INIT, (None, "embed")),
                                        (len(self.modalities), width), jnp.float32)
        first = patches[order[0]]
        batch, seasons = first.shape[:2]
        # Sin-cos table of every patch ([T, D] per view, or [B, S, T, D] in the tile frame); each modality
        # gathers its tokens' rows.
        pos_table = posembed.view_positions(width, self.position_frame, offsets, grid_size, self.patch_size)
        per_modality = []
        for m in order:
            chans = self.in_chans[self.modalities.index(m)]
            x = PatchEmbed(self.patch_size, chans, width, self.dtype, name=f"patch_embed_{m}")(patches[m])
            if pos_table.ndim == 2:
                pos = jnp.take(pos_table, token_ids[m], axis=0)
            else:
                pos = masking.gather_tokens(pos_table, token_ids[m])
            x = x + pos.astype(x.dtype)
            if self.num_seasons > 1:
                x = x + season_embed.astype(x.dtype)
            if len(self.modalities) > 1:
                x = x + modality_table[self.modalities.index(m)].astype(x.dtype)
            per_modality.append(x)  # [B, S, N, D]
        x = jnp.stack(per_modality, axis=2)  # [B, S, M, N, D]
        tokens_per_season = x.shape[2] * x.shape[3]
        per_season = self.season_encoding == "per_season"
        # [B*S, M*N, D] (batch-major, so a batch sharded over devices stays so) or [B, S*M*N, D].
        x = x.reshape(batch * seasons, tokens_per_season, width) if per_season else x.reshape(batch, -1, width)
        sequences = x.shape[0]
        cls = self.param("cls_token", nn.with_logical_partitioning(_EMBED_INIT, (None, None, "embed")),
                         (1, 1, width), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (sequences, 1, width)), x], axis=1)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = block_stack(x, depth=self.size.depth, num_heads=self.size.num_heads, mlp_dim=self.size.mlp_dim,
                        dtype=self.dtype, scan=self.scan, remat_policy=self.remat_policy,
                        backend=self.backend, drop_path=self.drop_path, deterministic=deterministic)
        x = layers.layer_norm("norm", self.dtype, self.backend)(x)
        if per_season:
            cls = x[:, 0].reshape(batch, seasons, width)
        else:
            cls = jnp.broadcast_to(x[:, None, 0], (batch, seasons, width))
        return cls, x[:, 1:].reshape(batch, seasons, tokens_per_season, width)
