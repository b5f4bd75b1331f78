"""Per-modality patch tokenizer and the patchify used for pixel targets.

Each modality (S2 with 12/13 bands, S1 with 2) has its own tokenizer because
the input channels differ; `in_chans` comes from the sensor spec's band count,
passed in by the caller (models/ never reads sensors itself).

The tokenizer is a p x p stride-p convolution written as one matmul on
patchified pixels. Its kernel keeps the conv layout `[p, p, C, D]`, so the
export maps it to timm's `patch_embed.proj.weight [D, C, p, p]` with one
transpose, while the matmul runs only on the *visible* patches (MAE embeds
all patches and then drops 75% of them).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from seamo_jax.models import layers


def patchify(images: jnp.ndarray, patch_size: int) -> jnp.ndarray:
    """Cuts images into flattened non-overlapping patches, row-major.

    Args:
      images: [..., h, w, C].
      patch_size: p (must divide h and w).
    Returns:
      [..., (h/p)*(w/p), p*p*C]; each patch is flattened in (row, col,
      channel) order, like MAE's `patchify` (`nchpwq -> nhwpqc`).
    """
    *lead, h, w, c = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {(h, w)} is not divisible by patch size {p}")
    x = images.reshape(*lead, h // p, p, w // p, p, c)
    x = jnp.swapaxes(x, -4, -3)  # [..., h/p, w/p, p, p, C]
    return x.reshape(*lead, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jnp.ndarray, patch_size: int, grid_size: tuple[int, int]) -> jnp.ndarray:
    """Inverse of `patchify`: [..., T, p*p*C] -> [..., h, w, C]."""
    *lead, t, ppc = patches.shape
    p = patch_size
    gh, gw = grid_size
    c = ppc // (p * p)
    x = patches.reshape(*lead, gh, gw, p, p, c)
    x = jnp.swapaxes(x, -4, -3)
    return x.reshape(*lead, gh * p, gw * p, c)


class PatchEmbed(nn.Module):
    """Linear projection of flattened patches to tokens.

    Params: `kernel` [p, p, C, D] (logical axes None, None, "patch", "embed"),
    `bias` [D] ("embed",).

    Attributes:
      patch_size: p.
      in_chans: C, bands of this modality.
      width: D.
      dtype: compute dtype.
    """

    patch_size: int
    in_chans: int
    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, patches: jnp.ndarray) -> jnp.ndarray:
        """[..., N, p*p*C] patches -> [..., N, D] tokens."""
        p, c, d = self.patch_size, self.in_chans, self.width
        if patches.shape[-1] != p * p * c:
            raise ValueError(f"patch features {patches.shape[-1]} != p*p*C = {p}*{p}*{c}")
        # MAE initialises the conv like a Linear on its flattened [D, C*p*p] view.
        kernel = self.param("kernel", nn.with_logical_partitioning(layers.xavier_uniform_flat(3), (None, None, "patch", "embed")),
                            (p, p, c, d), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (d,), jnp.float32)
        kernel = jnp.asarray(kernel, self.dtype).reshape(p * p * c, d)
        tokens = jnp.asarray(patches, self.dtype) @ kernel + jnp.asarray(bias, self.dtype)
        return tokens
