"""Reconstruction pictures: input | masked input | reconstruction, one row per season.

Runs on the host with numpy on one sample. S2 is shown as an RGB composite of
B4, B3, B2; S1 as (VV, VH, VV-VH) in dB (the usual SAR false colour). Values
are the normalised views the model sees; each channel is stretched to its
2-98 percentile on the *input* so all three panels share one colour scale.
With `norm_pix_loss` the model predicts per-patch-normalised pixels; they are
mapped back with the input patch's own mean/std (as in MAE's visualisation),
which is exact for visible patches and the best available for masked ones.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

from seamo_jax.paths import PathLike, user_path
from seamo_jax.sensors import RGB_BANDS, SensorSpec

MASK_GREY = 0.5


def patchify_np(image: np.ndarray, p: int) -> np.ndarray:
    """[h, w, C] -> [T, p*p*C], row-major tokens, (row, col, channel) inside a patch."""
    h, w, c = image.shape
    x = image.reshape(h // p, p, w // p, p, c).swapaxes(1, 2)
    return x.reshape((h // p) * (w // p), p * p * c)


def unpatchify_np(patches: np.ndarray, p: int, h: int, w: int) -> np.ndarray:
    """[T, p*p*C] -> [h, w, C] (inverse of `patchify_np`)."""
    c = patches.shape[-1] // (p * p)
    x = patches.reshape(h // p, w // p, p, p, c).swapaxes(1, 2)
    return x.reshape(h, w, c)


def composite_channels(view: np.ndarray, spec: SensorSpec) -> np.ndarray:
    """[h, w, C] normalised view -> [h, w, 3] display channels (not yet stretched)."""
    channels = []
    for band in RGB_BANDS[spec.modality]:
        if band == "VV/VH":
            # Ratio in linear power = difference in dB; undo the normalisation first.
            vv = view[..., spec.band_index("VV")] * spec.std[0] + spec.mean[0]
            vh = view[..., spec.band_index("VH")] * spec.std[1] + spec.mean[1]
            channels.append(vv - vh)
        else:
            channels.append(view[..., spec.band_index(band)])
    return np.stack(channels, axis=-1)


def _stretch(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)


def reconstruct_view(view: np.ndarray, pred: np.ndarray, mask: np.ndarray, patch_size: int,
                     norm_pix_loss: bool) -> tuple[np.ndarray, np.ndarray]:
    """Builds the masked input and the reconstruction of one view.

    Args:
      view: [h, w, C] input view.
      pred: [T, p*p*C] predicted patches.
      mask: bool [T], True = masked.
    Returns:
      (reconstruction [h, w, C] = input on visible patches, prediction on
      masked ones; masked_flags [h, w] True where the patch was masked).
    """
    h, w, _ = view.shape
    target = patchify_np(view, patch_size)
    if norm_pix_loss:
        mean = target.mean(-1, keepdims=True)
        std = np.sqrt(target.var(-1, keepdims=True) + 1e-6)
        pred = pred * std + mean
    merged = np.where(mask[:, None], pred, target)
    flags = unpatchify_np(np.repeat(mask[:, None], patch_size * patch_size, axis=1).astype(np.float32),
                          patch_size, h, w)[..., 0] > 0.5
    return unpatchify_np(merged, patch_size, h, w), flags


def recon_grid(views: np.ndarray, preds: np.ndarray, masks: np.ndarray, spec: SensorSpec, patch_size: int,
               norm_pix_loss: bool, pad: int = 2) -> np.ndarray:
    """uint8 [S*(h+pad), 3*(w+pad), 3] grid for one sample of one modality.

    Args:
      views: [S, h, w, C]; preds: [S, T, p*p*C]; masks: bool [S, T].
    """
    seasons, h, w, _ = views.shape
    grid = np.ones((seasons * (h + pad), 3 * (w + pad), 3), np.float32)
    for s in range(seasons):
        recon, flags = reconstruct_view(views[s], preds[s], masks[s], patch_size, norm_pix_loss)
        shown = composite_channels(views[s], spec)
        lo, hi = np.percentile(shown, 2, axis=(0, 1)), np.percentile(shown, 98, axis=(0, 1))
        panels = [_stretch(shown, lo, hi), None, _stretch(composite_channels(recon, spec), lo, hi)]
        panels[1] = np.where(flags[..., None], MASK_GREY, panels[0])
        for col, panel in enumerate(panels):
            grid[s * (h + pad): s * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = panel
    return (grid * 255).round().astype(np.uint8)


COLUMN_LABELS = ("input", "masked input", "reconstruction")


def label_grid(image: Image.Image, *, row_labels: Sequence[str], column_labels: Sequence[str]) -> Image.Image:
    """`image` (rows x columns of equal panels) with a header of column labels and a margin of row labels.

    Drawn with PIL's own font, so the PNGs say which row is which season and
    which column is the input, the masked input and the reconstruction.
    """
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(image)
    text_h = max(draw.textbbox((0, 0), t, font=font)[3] for t in [*row_labels, *column_labels]) + 6
    margin = max(draw.textbbox((0, 0), t, font=font)[2] for t in row_labels) + 8
    canvas = Image.new("RGB", (image.width + margin, image.height + text_h), "white")
    canvas.paste(image, (margin, text_h))
    draw = ImageDraw.Draw(canvas)
    cell_w, cell_h = image.width / len(column_labels), image.height / len(row_labels)
    for col, text in enumerate(column_labels):
        draw.text((margin + col * cell_w + 2, 2), text, fill="black", font=font)
    for row, text in enumerate(row_labels):
        draw.text((2, text_h + row * cell_h + cell_h / 2 - 5), text, fill="black", font=font)
    return canvas


def write_recon_images(out_dir: PathLike, step: int, views: Mapping[str, np.ndarray],
                       preds: Mapping[str, np.ndarray], mask: np.ndarray, modalities: tuple[str, ...],
                       specs: Mapping[str, SensorSpec], patch_size: int, norm_pix_loss: bool,
                       scale: int = 4, season_ids: np.ndarray | None = None) -> list[epath.Path]:
    """Writes `<out_dir>/step_<step>_<modality>.png` for sample 0 of the batch.

    Args:
      views: modality -> [B, S, h, w, C] (host numpy).
      preds: modality -> [B, S, T, p*p*C].
      mask: bool [B, S, M, T], modality axis in `modalities` order.
      scale: nearest-neighbour upscaling so small crops stay visible.
      season_ids: int [B, S] season of each row (batch["season_ids"]); default 0..S-1.
    Returns:
      the written paths.
    """
    out_dir = user_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, m in enumerate(modalities):
        if m not in preds:
            continue
        grid = recon_grid(np.asarray(views[m][0], np.float32), np.asarray(preds[m][0], np.float32),
                          np.asarray(mask[0, :, index]), specs[m], patch_size, norm_pix_loss)
        image = Image.fromarray(grid)
        image = image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
        seasons = views[m].shape[1]
        ids = list(range(seasons)) if season_ids is None else [int(i) for i in np.asarray(season_ids)[0]]
        image = label_grid(image, row_labels=[f"{m} season {i}" for i in ids], column_labels=COLUMN_LABELS)
        path = out_dir / f"step_{step:06d}_{m}.png"
        encoded = io.BytesIO()
        image.save(encoded, format="PNG")
        path.write_bytes(encoded.getvalue())  # whole-file write: works on object stores
        paths.append(path)
    return paths
