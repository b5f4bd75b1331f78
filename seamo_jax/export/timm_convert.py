"""SeaMo encoder params -> timm `VisionTransformer` state dict for one modality (S2).

Restricted to one modality and one season, the SeaMo encoder is a plain
pre-LN ViT with a cls token, so it loads into

    timm.models.vision_transformer.VisionTransformer(
        img_size, patch_size, in_chans=C, embed_dim=D, depth, num_heads,
        mlp_ratio=F/D, qkv_bias=True, class_token=True, global_pool="token", num_classes=0)

(LayerNorm eps 1e-6 and exact GELU are timm's defaults). Mapping, Flax -> timm:

    cls_token [1,1,D]                         -> cls_token
    sin-cos(offset 0) [T,D] (+ season_embed[0]
      + modality_embed[m], when they exist)   -> pos_embed [1, 1+T, D], row 0 (cls) = 0
    patch_embed_<m>/kernel [p,p,C,D]          -> patch_embed.proj.weight [D,C,p,p]
    blocks/.../norm1/{scale,bias}             -> blocks.N.norm1.{weight,bias}
    attn/qkv/kernel [D,3,H,Dh]                -> blocks.N.attn.qkv.weight [3D, D]
    attn/proj/kernel [H,Dh,D]                 -> blocks.N.attn.proj.weight [D, D]
    mlp/fc{1,2}/kernel [in,out]               -> blocks.N.mlp.fc{1,2}.weight [out,in]
    norm/{scale,bias}                         -> norm.{weight,bias}

The season and modality embeddings are constant per view, so adding them to
the position table is exact. Our cls token gets no position embedding, hence
row 0 of pos_embed is zero (timm adds pos_embed[0] to cls).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from seamo_jax.models import posembed


def _block_params(encoder: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Per-layer block params, whether the stack was scanned (one tree with a leading
    [depth] axis at encoder/blocks) or unrolled (encoder/blocks_0, blocks_1, ..., or
    nested one level deeper under encoder/blocks)."""
    for container in (encoder.get("blocks", {}), encoder):
        if "norm1" in container:  # scanned: every leaf has a leading [depth] axis
            depth = np.asarray(container["norm1"]["scale"]).shape[0]

            def layer(i: int, tree: Mapping[str, Any]) -> dict:
                return {k: layer(i, v) if isinstance(v, Mapping) else np.asarray(v)[i] for k, v in tree.items()}

            return [layer(i, container) for i in range(depth)]
        names = [k for k in container if k.startswith("blocks_") and k[len("blocks_"):].isdigit()]
        if names:
            return [container[k] for k in sorted(names, key=lambda k: int(k[len("blocks_"):]))]
    raise KeyError(f"no transformer blocks in the encoder params; keys: {sorted(encoder)}")


def position_table(encoder: Mapping[str, Any], *, modality: str, modalities: Sequence[str], image_size: int,
                   patch_size: int, season: int = 0) -> np.ndarray:
    """timm pos_embed [1, 1+T, D]: sin-cos at crop offset 0 plus the constant season /
    modality embeddings of (season, modality); row 0 (cls) is zero."""
    width = np.asarray(encoder["cls_token"]).shape[-1]
    grid = image_size // patch_size
    table = np.asarray(posembed.sincos_2d_from_offsets(width, jnp.zeros((2,), jnp.int32), (grid, grid), patch_size),
                       np.float32)  # [T, D]
    if "season_embed" in encoder:
        table = table + np.asarray(encoder["season_embed"], np.float32)[season]
    if "modality_embed" in encoder:
        table = table + np.asarray(encoder["modality_embed"], np.float32)[list(modalities).index(modality)]
    return np.concatenate([np.zeros((1, width), np.float32), table], 0)[None]


def to_timm_state_dict(encoder: Mapping[str, Any], *, modality: str, modalities: Sequence[str], image_size: int,
                       patch_size: int, season: int = 0) -> dict[str, np.ndarray]:
    """Builds the timm state dict (float32 numpy) of the single-modality encoder.

    Args:
      encoder: the Flax `encoder` param subtree (see models/encoder.py).
      modality: which tokenizer to export ("s2").
      modalities: the encoder's modality order (indexes modality_embed).
      image_size, patch_size: training crop size and patch size.
      season: which learned season embedding to fold in.
    """
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    tokenizer = encoder.get(f"patch_embed_{modality}")
    if tokenizer is None:
        raise KeyError(f"encoder has no tokenizer patch_embed_{modality}; keys: {sorted(encoder)}")
    kernel = f32(tokenizer["kernel"])  # [p, p, C, D]
    state = {
        "cls_token": f32(encoder["cls_token"]).reshape(1, 1, -1),
        "pos_embed": position_table(encoder, modality=modality, modalities=modalities, image_size=image_size,
                                    patch_size=patch_size, season=season),
        "patch_embed.proj.weight": kernel.transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": f32(tokenizer["bias"]),
    }
    for i, block in enumerate(_block_params(encoder)):
        prefix = f"blocks.{i}."
        qkv_kernel = f32(block["attn"]["qkv"]["kernel"])
        width = qkv_kernel.shape[0]
        proj_kernel = f32(block["attn"]["proj"]["kernel"])
        state.update({
            prefix + "norm1.weight": f32(block["norm1"]["scale"]),
            prefix + "norm1.bias": f32(block["norm1"]["bias"]),
            # [D, 3, H, Dh] -> [D, 3D] -> torch Linear's [out, in]; timm splits out as (3, H, Dh), same order.
            prefix + "attn.qkv.weight": qkv_kernel.reshape(width, -1).T,
            prefix + "attn.qkv.bias": f32(block["attn"]["qkv"]["bias"]).reshape(-1),
            prefix + "attn.proj.weight": proj_kernel.reshape(-1, proj_kernel.shape[-1]).T,
            prefix + "attn.proj.bias": f32(block["attn"]["proj"]["bias"]),
            prefix + "norm2.weight": f32(block["norm2"]["scale"]),
            prefix + "norm2.bias": f32(block["norm2"]["bias"]),
            prefix + "mlp.fc1.weight": f32(block["mlp"]["fc1"]["kernel"]).T,
            prefix + "mlp.fc1.bias": f32(block["mlp"]["fc1"]["bias"]),
            prefix + "mlp.fc2.weight": f32(block["mlp"]["fc2"]["kernel"]).T,
            prefix + "mlp.fc2.bias": f32(block["mlp"]["fc2"]["bias"]),
        })
    state["norm.weight"] = f32(encoder["norm"]["scale"])
    state["norm.bias"] = f32(encoder["norm"]["bias"])
    return {name: np.ascontiguousarray(value) for name, value in state.items()}


def timm_kwargs(encoder: Mapping[str, Any], *, modality: str, image_size: int, patch_size: int) -> dict:
    """Constructor arguments of the matching timm VisionTransformer (JSON-ready)."""
    blocks = _block_params(encoder)
    kernel = np.asarray(encoder[f"patch_embed_{modality}"]["kernel"])
    width = kernel.shape[-1]
    qkv = np.asarray(blocks[0]["attn"]["qkv"]["kernel"])  # [D, 3, H, Dh]
    mlp_dim = np.asarray(blocks[0]["mlp"]["fc1"]["kernel"]).shape[-1]
    return {"img_size": int(image_size), "patch_size": int(patch_size), "in_chans": int(kernel.shape[2]),
            "embed_dim": int(width), "depth": len(blocks), "num_heads": int(qkv.shape[2]),
            "mlp_ratio": mlp_dim / width, "qkv_bias": True, "class_token": True, "global_pool": "token",
            "num_classes": 0}
