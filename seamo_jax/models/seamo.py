"""SeaMo: multi-season, multi-modal masked image modeling (the pretraining module).

    batch --patchify--> visible patches of every (season, modality) view
          --Encoder-->  one token sequence per (sample, season) ([cls] + M*V
                        tokens, season_encoding="per_season") or per sample
                        ([cls] + S*M*V, "joint")
          --TMFusion--> (fusion="tm") season cascade of cross-modal attention
          --MAEDecoder per modality--> pixels of every patch
          --losses-->   masked MSE over the masked patches of the valid views,
                        summed over modalities

With one season, one modality and fusion="none" there are no season /
modality embeddings, no fusion params and one decoder: the module is exactly
MAE (same params, same maths up to the order of visible tokens, to which
attention is invariant).

Top-level param tree: `encoder/...` (models/encoder.py), `fusion/...`
(models/fusion.py, only with fusion="tm"), `decoder_<m>/...` (models/decoder.py).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from seamo_jax.models import losses as losses_lib
from seamo_jax.models import masking
from seamo_jax.models.backend import Backend
from seamo_jax.models.decoder import MAEDecoder
from seamo_jax.models.encoder import Encoder
from seamo_jax.models.fusion import TMFusion
from seamo_jax.models.patch_embed import patchify
from seamo_jax.models.sizes import ViTSize


class SeaMo(nn.Module):
    """The SeaMo pretraining model. Build it with `seamo_jax.models.build_model`.

    Attributes:
      modalities: modality keys, in the order of the batch mask's M axis.
      in_chans: bands per modality, aligned with `modalities`.
      image_size: (h, w) of a view in pixels (pretraining crops).
      patch_size: p.
      size: encoder shape.
      num_seasons: season embeddings available (batches may carry fewer seasons).
      fusion: "tm" or "none".
      num_fusion_blocks, decoder_dim, decoder_depth, decoder_heads: see config.model.
      mask_ratio: fraction of tokens masked per view (the data pipeline's).
      norm_pix_loss: per-patch normalised pixel targets.
      dtype: compute dtype; params are float32.
      scan_layers, remat_policy: see models/vit.py.
      backend: attention implementation and CPU kernels (models/backend.py; build_model resolves it).
      season_encoding: "per_season" | "joint" (models/encoder.py).
      position_frame: "view" | "tile", encoder and decoders (models/posembed.py).
      tm_carry: "aux_queries" | "mean_add" (models/fusion.py).
      drop_path: stochastic depth rate of the encoder blocks (models/vit.py), applied when
        `train` (pretraining) / `encode(..., train=True)` (fine-tuning); 0 = off, the default.
    """

    modalities: tuple[str, ...]
    in_chans: tuple[int, ...]
    image_size: tuple[int, int]
    patch_size: int
    size: ViTSize
    num_seasons: int
    fusion: str = "tm"
    num_fusion_blocks: int = 1
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"
    backend: Backend = Backend()
    season_encoding: str = "per_season"
    position_frame: str = "view"
    tm_carry: str = "aux_queries"
    drop_path: float = 0.0

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def setup(self):
        self.encoder = Encoder(self.modalities, self.in_chans, self.patch_size, self.size, self.num_seasons,
                               self.dtype, self.scan_layers, self.remat_policy, self.backend,
                               season_encoding=self.season_encoding, position_frame=self.position_frame,
                               drop_path=self.drop_path)
        if self.fusion == "tm":
            self.tm_fusion = TMFusion(self.modalities, self.num_fusion_blocks, self.size.num_heads,
                                      self.size.mlp_dim, self.dtype, self.backend, carry=self.tm_carry,
                                      name="fusion")
        elif self.fusion != "none":
            raise ValueError(f"unknown fusion {self.fusion!r}; use 'tm' or 'none'")
        self.decoders = {
            m: MAEDecoder(self.patch_size, c, self.decoder_dim, self.decoder_depth, self.decoder_heads,
                          self.num_seasons, self.dtype, self.scan_layers, self.remat_policy, self.backend,
                          position_frame=self.position_frame, name=f"decoder_{m}")
            for m, c in zip(self.modalities, self.in_chans)
        }

    def __call__(self, batch: Mapping[str, Any], train: bool = True) -> tuple[jnp.ndarray, dict[str, Any]]:
        """Masked reconstruction loss of one batch (contracts.md section 2 / 3).

        Args:
          batch: views[m] float [B, S, h, w, C_m], offsets int [B, S, 2],
            mask bool [B, S, M, T] (True = masked, exactly round(ratio*T) per
            view, seamo_jax/mask_count.py); optional season_ids int [B, S]
            (season-embedding row per sample and season slot, default
            arange(S) for every sample) and modality_dropped bool [B, M]
            (True = that modality was dropped by the data pipeline in every
            season of the sample: its views are not scored). docs/contracts.md section 2.
          train: True = stochastic depth when `drop_path` > 0 (rng "dropout"); no other dropout, as MAE.
        Returns:
          loss: float32 scalar (sum over modalities; NaN if a view's mask
            count differs from round(mask_ratio * T) or, with num_seasons
            > 1, a season id is outside [0, num_seasons)).
          aux: {"losses": {"total", m, f"{m}/season_{s}"},
                "pred": {m: [B, S, T, p*p*C_m]} (normalised-pixel space if norm_pix_loss)}.
        """
        views, offsets, mask = batch["views"], batch["offsets"], batch["mask"]
        batch_size, seasons = offsets.shape[:2]
        season_ids = self._batch_season_ids(batch.get("season_ids"), batch_size, seasons)
        view_valid = self._view_valid(batch.get("modality_dropped"), batch_size, seasons)
        if mask.shape[2] != len(self.modalities) or mask.shape[3] != self.num_tokens:
            raise ValueError(f"mask shape {mask.shape} does not match modalities {self.modalities} and "
                             f"{self.num_tokens} tokens per view")
        num_masked = masking.num_masked(self.num_tokens, self.mask_ratio)
        num_visible = self.num_tokens - num_masked
        targets, scored, restore, vis_patches, vis_ids = {}, {}, {}, {}, {}
        for i, m in enumerate(self.modalities):
            patches = patchify(views[m], self.patch_size)  # [B, S, T, P]
            vis_ids[m], restore[m] = masking.visible_indices(mask[:, :, i], num_visible)
            scored[m] = mask[:, :, i] & view_valid[:, :, i, None]  # masked patches of views not dropped
            vis_patches[m] = masking.gather_tokens(patches, vis_ids[m])
            targets[m] = losses_lib.normalise_patches(patches) if self.norm_pix_loss else patches
        # cls [B, S, D] (one per season slot), tokens [B, S, M*V, D]
        cls, tokens = self.encoder(vis_patches, vis_ids, offsets, self.grid_size, season_ids,
                                   deterministic=not (train and self.drop_path > 0))
        visible = tokens.reshape(batch_size, seasons, len(self.modalities), num_visible, tokens.shape[-1])
        if self.fusion == "tm":
            visible = self.tm_fusion(visible)
        preds = {m: self.decoders[m](visible[:, :, i], cls, restore[m], offsets, self.grid_size, season_ids)
                 for i, m in enumerate(self.modalities)}
        loss, losses = losses_lib.reconstruction_losses(preds, targets, scored)
        ok = masking.mask_count_ok(mask, num_masked)
        if self.num_seasons > 1:  # with one season there is no season table: the ids are not used
            ok = ok & jnp.all((season_ids >= 0) & (season_ids < self.num_seasons))
        loss = jnp.where(ok, loss, jnp.nan)
        return loss, {"losses": losses, "pred": preds}

    def _batch_season_ids(self, season_ids: Any, batch_size: int, seasons: int) -> jnp.ndarray:
        """batch["season_ids"] int [B, S], or arange(S) for every sample when absent."""
        if season_ids is None:
            return jnp.broadcast_to(jnp.arange(seasons, dtype=jnp.int32), (batch_size, seasons))
        season_ids = jnp.asarray(season_ids)
        if season_ids.shape != (batch_size, seasons) or not jnp.issubdtype(season_ids.dtype, jnp.integer):
            raise ValueError(f"batch['season_ids'] must be int [B, S] = [{batch_size}, {seasons}], "
                             f"got {season_ids.dtype} {season_ids.shape}")
        return season_ids.astype(jnp.int32)

    def _view_valid(self, modality_dropped: Any, batch_size: int, seasons: int) -> jnp.ndarray:
        """bool [B, S, M]: False for the views of modalities the data pipeline dropped (batch["modality_dropped"])."""
        num_modalities = len(self.modalities)
        if modality_dropped is None:
            return jnp.ones((batch_size, seasons, num_modalities), bool)
        modality_dropped = jnp.asarray(modality_dropped)
        if modality_dropped.shape != (batch_size, num_modalities):
            raise ValueError(f"batch['modality_dropped'] must be bool [B, M] = [{batch_size}, {num_modalities}], "
                             f"got {modality_dropped.shape}")
        return jnp.broadcast_to(~modality_dropped.astype(bool)[:, None, :], (batch_size, seasons, num_modalities))

    def encode(self, views: Mapping[str, jnp.ndarray], offsets: jnp.ndarray, modalities: Sequence[str] | None = None,
               seasons: Sequence[int] | None = None, pool: str = "mean",
               train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Encoder features of unmasked views (no fusion, no decoder): for probes and export.

        Args:
          views: modality -> [B, S, h, w, C_m]; h, w any multiple of p (the
            position embedding is computed, not a fixed table).
          offsets: [B, S, 2] crop origins in tile pixels (zeros for single images).
          modalities: which of `views` to use (default: every model modality in `views`).
          seasons: indices into the S axis to use; each keeps its index as its
            season-embedding id (default: all S).
          pool: "mean" (mean of the patch tokens of all seasons) or "cls"
            (the cls token; with season_encoding="per_season" each season's
            sequence has its own, and they are averaged).
          train: True = stochastic depth with `drop_path` (fine-tuning; rng "dropout").
        Returns:
          tokens: [B, S'*M'*T, D] normalised patch tokens (season-major, then
            modality, then row-major token), cls excluded. Each season is
            encoded as its own sequence under "per_season", as in training.
          pooled: [B, D].
        """
        modalities = tuple(m for m in self.modalities if m in (modalities or views))
        if not modalities:
            raise ValueError(f"no model modality in {sorted(views)}; model has {self.modalities}")
        num_views = views[modalities[0]].shape[1]
        season_ids = tuple(seasons) if seasons is not None else tuple(range(num_views))
        if max(season_ids) >= self.num_seasons or min(season_ids) < 0:
            raise ValueError(f"season ids {season_ids} exceed the model's num_seasons {self.num_seasons}")
        select = jnp.asarray(season_ids)
        h, w = views[modalities[0]].shape[2:4]
        grid = (h // self.patch_size, w // self.patch_size)
        offsets = offsets[:, select]
        patches, ids = {}, {}
        for m in modalities:
            patches[m] = patchify(views[m][:, select], self.patch_size)
            ids[m] = jnp.broadcast_to(jnp.arange(grid[0] * grid[1], dtype=jnp.int32), patches[m].shape[:3])
        batch_size = offsets.shape[0]
        ids_of_seasons = jnp.broadcast_to(select.astype(jnp.int32), (batch_size, len(season_ids)))
        cls, tokens = self.encoder(patches, ids, offsets, grid, ids_of_seasons,  # [B, S', D], [B, S', M'*T, D]
                                   deterministic=not (train and self.drop_path > 0))
        tokens = tokens.reshape(batch_size, -1, tokens.shape[-1])
        if pool == "mean":
            pooled = jnp.mean(tokens, axis=1)
        elif pool == "cls":
            pooled = jnp.mean(cls, axis=1)
        else:
            raise ValueError(f"unknown pool {pool!r}; use 'mean' or 'cls'")
        return tokens, pooled
