"""A numpy forward of the exported timm-named ViT: use the encoder with numpy alone.

The exported `timm_vit_<m>.safetensors` is a timm `VisionTransformer` state
dict. This module runs the same network (timm's `forward_features`: patch
embedding, cls token, position table, pre-LN blocks, final norm) with numpy
only, so a user without PyTorch or JAX can embed images, and the default test
suite checks the export against the Flax encoder without the torch extra.

    from seamo_jax.export import numpy_vit, tensor_files
    state = tensor_files.load_numpy("export/timm_vit_s2.safetensors")
    tokens = numpy_vit.forward_features(state, images, num_heads=card["timm"]["kwargs"]["num_heads"])
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

_LAYER_NORM_EPS = 1e-6  # timm's ViT and the Flax encoder (models/layers.py)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf with |error| < 1.2e-7 everywhere (Numerical Recipes' erfc Chebyshev fit), float64; numpy has no erf."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as timm's nn.GELU and the Flax encoder."""
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LAYER_NORM_EPS) * weight + bias


def _linear(x: np.ndarray, state: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]


def forward_features(state: Mapping[str, np.ndarray], images: np.ndarray, *, num_heads: int) -> np.ndarray:
    """timm `VisionTransformer.forward_features` in numpy (float64 inside).

    Args:
      state: the exported timm state dict (`tensor_files.load_numpy`).
      images: [B, H, W, C] normalised, bands in the model card's order.
      num_heads: the card's `timm.kwargs.num_heads`.
    Returns:
      float32 [B, 1 + T, D]: normalised cls token then patch tokens (row-major).
    """
    weight = state["patch_embed.proj.weight"].astype(np.float64)  # [D, C, p, p]
    width, chans, patch, _ = weight.shape
    batch, height, width_px, in_chans = images.shape
    if in_chans != chans or height % patch or width_px % patch:
        raise ValueError(f"images {images.shape} do not fit the export: {chans} bands, patch {patch}")
    grid_h, grid_w = height // patch, width_px // patch
    x = images.astype(np.float64).reshape(batch, grid_h, patch, grid_w, patch, chans)
    x = x.transpose(0, 1, 3, 5, 2, 4).reshape(batch, grid_h * grid_w, chans * patch * patch)  # (C, p, p) as the conv
    x = x @ weight.reshape(width, -1).T + state["patch_embed.proj.bias"]
    cls = np.broadcast_to(state["cls_token"].astype(np.float64), (batch, 1, width))
    x = np.concatenate([cls, x], axis=1) + state["pos_embed"]
    head_dim = width // num_heads
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        block = f"blocks.{i}"
        h = _layer_norm(x, state[f"{block}.norm1.weight"], state[f"{block}.norm1.bias"])
        qkv = _linear(h, state, f"{block}.attn.qkv").reshape(batch, -1, 3, num_heads, head_dim)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))  # [B, H, L, Dh]
        logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, -1, width)
        x = x + _linear(attended, state, f"{block}.attn.proj")
        h = _layer_norm(x, state[f"{block}.norm2.weight"], state[f"{block}.norm2.bias"])
        x = x + _linear(_gelu(_linear(h, state, f"{block}.mlp.fc1")), state, f"{block}.mlp.fc2")
    return _layer_norm(x, state["norm.weight"], state["norm.bias"]).astype(np.float32)
