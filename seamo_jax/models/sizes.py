"""Named ViT sizes (width, depth, heads, MLP width) used by `config.model.size`.

The standard sizes follow ViT / MAE (Dosovitskiy et al.; He et al.), so a
`vit_b16` SeaMo encoder has exactly the layer shapes of an MAE ViT-B/16 and its
S2-only encoder converts to a timm `vit_base_patch16_224`. The patch size is
not part of the size (it comes from `config.model.patch_size`); the "16"/"14"
in the name only records the conventional pairing.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ViTSize:
    """Shape of a ViT encoder.

    Attributes:
      width: token dimension D.
      depth: number of Transformer blocks.
      num_heads: attention heads (head dim = width / num_heads).
      mlp_dim: hidden width of the block MLP (4 * width for all standard sizes).
    """

    width: int
    depth: int
    num_heads: int
    mlp_dim: int

    def __post_init__(self):
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")


SIZES: dict[str, ViTSize] = {
    # CPU demo: ~0.9M encoder params, ~15 GFLOP per demo step (batch 64, 4
    # seasons, S1+S2, 32-px crops, patch 8, TM fusion), a few minutes for
    # 600 steps on 2 quiet cores. (Width 192 measured 1.6 s/step on a loaded
    # 2-core CPU: too slow for the demo.)
    "tiny": ViTSize(width=128, depth=4, num_heads=4, mlp_dim=512),
    "vit_s16": ViTSize(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_b16": ViTSize(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_l16": ViTSize(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "vit_h14": ViTSize(width=1280, depth=32, num_heads=16, mlp_dim=5120),
}


def get_size(name: str) -> ViTSize:
    """Returns the named size; raises KeyError listing the known names."""
    try:
        return SIZES[name]
    except KeyError:
        raise KeyError(f"unknown model size {name!r}; known: {sorted(SIZES)}") from None
