"""Flax (Linen) models of SeaMo: build one from `config.model`.

Public API:
    build_model(model_config, *, modalities, in_chans, num_seasons, image_size, mask_ratio, backend=None) -> SeaMo
    Backend, resolve_backend(model_config, mesh_or_num_devices) -> Backend   (models/backend.py)
    build_model_from_config(config, sensor_specs=None, *, mesh=None) -> SeaMo   (train, probe, export, benchmarks)
    check_params_tree(params, expected)   (restored params vs the model's tree: first differing path)
    example_batch(model, batch_size=1) -> batch dict   (for init / eval_shape)
    param_count(params_or_shapes) -> int
    SIZES, get_size, random_mask, num_masked, patchify, unpatchify, training_flops

`model.apply(variables, batch, train=True) -> (loss, aux)` and
`model.apply(variables, views, offsets, method="encode", modalities=..., seasons=...)
 -> (tokens, pooled)`; see models/seamo.py. Params carry logical axes; unbox
with `nn.meta.unbox` / get shardings with `nn.get_partition_spec`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seamo_jax.models.backend import Backend, generic_backend, resolve_backend
from seamo_jax.models.encoder import SEASON_ENCODINGS
from seamo_jax.models.flops import training_flops
from seamo_jax.models.from_config import build_model_from_config, check_params_tree, num_seasons_of
from seamo_jax.models.fusion import TM_CARRIES
from seamo_jax.models.masking import num_masked, random_mask
from seamo_jax.models.patch_embed import patchify, unpatchify
from seamo_jax.models.posembed import POSITION_FRAMES
from seamo_jax.models.seamo import SeaMo
from seamo_jax.models.sizes import SIZES, ViTSize, get_size

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def build_model(model_config: Any, *, modalities: Sequence[str], in_chans: Mapping[str, int], num_seasons: int,
                image_size: int | tuple[int, int], mask_ratio: float,
                backend: Backend | None = None) -> SeaMo:
    """SeaMo from `config.model` (keys and defaults: seamo_jax/experiments/base.py).

    Args:
      model_config: config.model, read whole (size, patch_size, fusion,
        num_fusion_blocks, decoder_dim/depth/heads, norm_pix_loss, dtype,
        remat_policy, scan_layers, attention_impl, cpu_kernels,
        season_encoding, position_frame, tm_carry, drop_path).
      modalities: config.data.modalities (order = the batch mask's M axis).
      in_chans: modality -> band count (sensor spec `num_bands`).
      num_seasons: most seasons a batch will carry (season-embedding rows).
      image_size: view size in pixels (int or (h, w)).
      mask_ratio: config.mask.ratio. Must equal the data pipeline's ratio (checked at run time: NaN loss).
      backend: `resolve_backend(model_config, mesh)` of the run (CPU kernels
        where model.cpu_kernels allows them). None = the generic XLA path
        with model.attention_impl, no CPU kernels (any mesh, any backend).
        Params do not depend on it.
    """
    modalities = tuple(modalities)
    missing = [m for m in modalities if m not in in_chans]
    if missing:
        raise ValueError(f"in_chans has no band count for {missing}")
    fusion = model_config.fusion
    if fusion == "tm" and len(modalities) < 2:
        raise ValueError(f"fusion='tm' fuses modalities and needs >= 2; got {modalities}; use fusion='none'")
    size = model_config.size
    size = size if isinstance(size, ViTSize) else get_size(size)
    dtype_name = model_config.dtype
    if dtype_name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype_name!r}; known: {sorted(_DTYPES)}")
    image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    patch_size = int(model_config.patch_size)
    if image_size[0] % patch_size or image_size[1] % patch_size:
        raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
    choices = {}
    for key, allowed in (("season_encoding", SEASON_ENCODINGS), ("position_frame", POSITION_FRAMES),
                         ("tm_carry", TM_CARRIES)):
        choices[key] = model_config[key]
        if choices[key] not in allowed:
            raise ValueError(f"unknown model.{key} {choices[key]!r}; use one of {allowed}")
    return SeaMo(
        modalities=modalities,
        in_chans=tuple(int(in_chans[m]) for m in modalities),
        image_size=image_size,
        patch_size=patch_size,
        size=size,
        num_seasons=int(num_seasons),
        fusion=fusion,
        num_fusion_blocks=int(model_config.num_fusion_blocks),
        decoder_dim=int(model_config.decoder_dim),
        decoder_depth=int(model_config.decoder_depth),
        decoder_heads=int(model_config.decoder_heads),
        mask_ratio=float(mask_ratio),
        norm_pix_loss=bool(model_config.norm_pix_loss),
        dtype=_DTYPES[dtype_name],
        scan_layers=bool(model_config.scan_layers),
        remat_policy=model_config.remat_policy,
        backend=generic_backend(model_config) if backend is None else backend,
        drop_path=float(model_config.drop_path),
        **choices,
    )


def example_batch(model: SeaMo, batch_size: int = 1, num_seasons: int | None = None) -> dict[str, Any]:
    """A zero batch with a valid mask (first round(ratio*T) tokens masked), for init / eval_shape.

    Init with the model's full `num_seasons` so every season-dependent param
    (season embeddings, fusion carry) is created.
    """
    seasons = num_seasons or model.num_seasons
    h, w = model.image_size
    t = model.num_tokens
    k = num_masked(t, model.mask_ratio)
    mask = np.zeros((batch_size, seasons, len(model.modalities), t), bool)
    mask[..., :k] = True
    return {
        "views": {m: jnp.zeros((batch_size, seasons, h, w, c), jnp.float32)
                  for m, c in zip(model.modalities, model.in_chans)},
        "offsets": jnp.zeros((batch_size, seasons, 2), jnp.int32),
        "mask": jnp.asarray(mask),
    }


def param_count(params: Any) -> int:
    """Number of scalars in a params pytree (arrays, ShapeDtypeStructs or boxed logical params)."""
    leaves = jax.tree.leaves(params)
    return int(sum(np.prod(x.shape) for x in leaves))
