"""Analytic FLOPs of one SeaMo training step (for MFU).

Convention (as in PaLM / MaxText MFU): count 2 FLOPs per multiply-add of every
matmul, including the two attention products (q k^T and attn v); ignore
norms, softmax, GELU, adds and gathers; backward = 2 x forward, so a step is
3 x forward. Rematerialisation is NOT counted (it is overhead, not model
work), so MFU falls when remat recomputes. The count follows this
implementation: patches are embedded only where visible, the decoder
projects the cls token of every view's season (one per view).
"""

from __future__ import annotations

from typing import Any

from seamo_jax.models.masking import num_masked


def _block_flops(tokens: int, width: int, mlp_dim: int) -> int:
    """Forward FLOPs of one pre-LN self-attention block on one sequence of `tokens`."""
    qkv = 2 * tokens * width * 3 * width
    attention = 2 * 2 * tokens * tokens * width  # q k^T and attn v
    proj = 2 * tokens * width * width
    mlp = 2 * 2 * tokens * width * mlp_dim
    return qkv + attention + proj + mlp


def _cross_block_flops(queries: int, context: int, width: int, mlp_dim: int) -> int:
    """Forward FLOPs of one fusion block: `queries` tokens attend to `context` tokens."""
    q = 2 * queries * width * width
    kv = 2 * context * width * 2 * width
    attention = 2 * 2 * queries * context * width
    proj = 2 * queries * width * width
    mlp = 2 * 2 * queries * width * mlp_dim
    return q + kv + attention + proj + mlp


def forward_flops(model: Any, batch_size: int, num_seasons: int | None = None) -> dict[str, int]:
    """Forward FLOPs by part for a `SeaMo` (models/seamo.py) on one batch.

    Args:
      model: the SeaMo module (only its attributes are read).
      batch_size: B.
      num_seasons: S in the batch (default model.num_seasons).
    Returns:
      {"patch_embed", "encoder", "fusion", "decoder", "total"} FLOPs.
    """
    seasons = num_seasons or model.num_seasons
    p2 = model.patch_size**2
    tokens = model.num_tokens
    visible = tokens - num_masked(tokens, model.mask_ratio)
    num_modalities = len(model.modalities)
    width, depth, mlp_dim = model.size.width, model.size.depth, model.size.mlp_dim
    dec = model.decoder_dim

    patch_embed = sum(2 * seasons * visible * p2 * c * width for c in model.in_chans)
    if getattr(model, "season_encoding", "joint") == "per_season":  # one sequence per season
        encoder = seasons * depth * _block_flops(1 + num_modalities * visible, width, mlp_dim)
    else:  # one sequence per sample
        encoder = depth * _block_flops(1 + seasons * num_modalities * visible, width, mlp_dim)
    fusion = 0
    if model.fusion == "tm":
        aux = getattr(model, "tm_carry", "mean_add") == "aux_queries"
        for s in range(seasons):
            queries = 2 * visible if (aux and s > 0) else visible  # + the carried previous-season tokens
            fusion += model.num_fusion_blocks * num_modalities * _cross_block_flops(
                queries, (num_modalities - 1) * queries, width, mlp_dim)
        carried = visible if aux else 1  # carry Linear on every token / on the pooled features
        fusion += (seasons - 1) * num_modalities * 2 * carried * width * width
    decoder = 0
    for c in model.in_chans:
        decoder += 2 * seasons * (visible + 1) * width * dec  # decoder_embed of visible tokens + each view's cls
        decoder += seasons * model.decoder_depth * _block_flops(1 + tokens, dec, 4 * dec)
        decoder += 2 * seasons * tokens * dec * p2 * c  # decoder_pred
    parts = {"patch_embed": patch_embed, "encoder": encoder, "fusion": fusion, "decoder": decoder}
    parts = {k: v * batch_size for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def training_flops(model: Any, batch_size: int, num_seasons: int | None = None) -> int:
    """FLOPs of forward + backward (= 3 x forward) of one step; the optimizer update is ignored."""
    return 3 * forward_flops(model, batch_size, num_seasons)["total"]
