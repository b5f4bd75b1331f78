"""Synthetic multi-season Sentinel-1 + Sentinel-2 tiles, pure numpy.

`generate_tile(seed, split, index)` is a pure function: the same arguments
always give bit-identical arrays, on any machine, so the TFDS builder, the
tests and the label check all see the same data without storing it.

One tile = one location seen in four seasons of one year:

  * a scene class (the label) fixes the spatial layout (see `layouts.py`);
    the two land covers filling the layout, and their proportions, are drawn
    independently of the label;
  * Sentinel-2 L1C: per-cover spectra with phenology (`spectra.py`), a
    persistent within-cover texture, seasonal snow at cold sites, haze,
    water vapour (B9), smooth clouds with shadows and cirrus (B10), sensor noise;
  * Sentinel-1 GRD: per-cover sigma0 with phenology and wet snow, texture,
    multiplicative gamma speckle in linear power plus a noise floor, in dB.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from data_pipelines.synthetic_seasons import layouts, spectra

NUM_SEASONS = 4
SCENE_CLASSES = layouts.SCENE_CLASSES

_S1_LOOKS = 4.4            # equivalent number of looks of IW GRD (speckle strength)
_S1_NOISE_FLOOR_DB = -25.0  # noise-equivalent sigma0: very dark water bottoms out here
_CLOUDY_SCENE_PROBABILITY = 0.3
_FOREGROUND_FRACTION = (0.4, 0.6)  # shared by all labels (see layouts.py)
_SECONDS_PER_DAY = 86400


def _split_code(split: str) -> int:
    # crc32 is stable across processes and Python versions (unlike hash()).
    return zlib.crc32(split.encode("utf-8"))


def tile_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one tile: independent streams per (seed, split, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _split_code(split), int(index)]))


def _draw_location(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """lat/lon float32 [2] in degrees, mostly northern mid-latitudes like SSL4EO."""
    southern = rng.random() < 0.2
    lat = rng.uniform(-45.0, -10.0) if southern else rng.uniform(15.0, 68.0)
    lon = rng.uniform(-180.0, 180.0)
    return np.array([lat, lon], dtype=np.float32), southern


def _draw_timestamps(rng: np.random.Generator, lon: float) -> np.ndarray:
    """One acquisition per season of a random year, unix seconds int64 [4].

    Late January, April, July and October +-20 days, at the ~10:30 local solar
    time of Sentinel's sun-synchronous orbit (converted to UTC by longitude).
    """
    year = int(rng.integers(2017, 2024))
    start = np.datetime64(f"{year}-01-25", "s").astype(np.int64)
    days = np.round(np.arange(NUM_SEASONS) * 91.3 + rng.uniform(-20, 20, size=NUM_SEASONS))
    utc_hours = (10.5 - lon / 15.0) % 24.0
    return (start + (days * _SECONDS_PER_DAY).astype(np.int64) + int(utc_hours * 3600)).astype(np.int64)


def _draw_covers(rng: np.random.Generator) -> np.ndarray:
    """Two distinct land covers (foreground, background), int64 [2]."""
    return rng.choice(len(spectra.LAND_COVERS), size=2, replace=False, p=spectra.COVER_WEIGHTS)


def _snow_alpha(rng: np.random.Generator, lat: float, local_seasons: np.ndarray,
                cover_map: np.ndarray) -> np.ndarray:
    """How much seasonal snow hides each pixel, float32 [S, H, W] in [0, 1]."""
    size = cover_map.shape[0]
    alpha = np.zeros((NUM_SEASONS, size, size), dtype=np.float32)
    snowy_site = rng.random() < np.clip((abs(lat) - 38.0) / 25.0, 0.0, 0.85)
    if not snowy_site:
        return alpha
    # Snow lies in hollows first: one smooth field, thresholded per season.
    depth_field = layouts.smooth_field(rng, size, 6.0)
    for season, local in enumerate(local_seasons):
        extent = {0: rng.uniform(0.5, 1.0), 1: rng.uniform(0.0, 0.4), 3: rng.uniform(0.0, 0.25)}.get(int(local), 0.0)
        if extent > 0.02:
            alpha[season] = layouts.foreground_mask(depth_field, extent)
    return alpha * spectra.SNOW_COVER_FRACTION[cover_map][None]


def _cloud_opacity(rng: np.random.Generator, size: int) -> np.ndarray:
    """Opacity of cloud per scene, float32 [S, H, W]; most scenes are clear."""
    opacity = np.zeros((NUM_SEASONS, size, size), dtype=np.float32)
    for season in range(NUM_SEASONS):
        if rng.random() >= _CLOUDY_SCENE_PROBABILITY:
            continue
        field = layouts.smooth_field(rng, size, rng.uniform(3.0, 7.0))
        cover = rng.uniform(0.1, 0.9)
        threshold = np.quantile(field, 1.0 - cover)
        # Soft edges: opacity ramps up over ~0.7 std of the field.
        opacity[season] = np.clip((field - threshold) / 0.7 + 0.15, 0.0, 1.0) * rng.uniform(0.6, 1.0)
    return opacity


def _uniform_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 noise uniform in [-1, 1); from raw bytes, ~4x cheaper than normals."""
    raw = np.frombuffer(rng.bytes(int(np.prod(shape))), dtype=np.uint8).reshape(shape)
    return raw.astype(np.float32) * np.float32(2.0 / 256.0) - np.float32(1.0)


def _render_s2(rng: np.random.Generator, cover_map: np.ndarray, local_seasons: np.ndarray,
               greenness_shift: np.ndarray, snow_alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sentinel-2 L1C scenes.

    Returns:
      s2: uint16 [S, H, W, 13] reflectance x 10000.
      cloud_opacity: float32 [S, H, W].
    """
    size = cover_map.shape[0]
    num_covers = len(spectra.LAND_COVERS)
    signatures = spectra.s2_signatures(local_seasons, greenness_shift)          # [S, C, 13]
    signatures *= rng.uniform(0.9, 1.1, size=(1, num_covers, 1)).astype(np.float32)
    s2 = signatures[:, cover_map]                                               # [S, H, W, 13]
    # Persistent texture (tree crowns, soil moisture): same in every season.
    s2 *= (1.0 + 0.06 * layouts.smooth_field(rng, size, 1.2))[None, :, :, None]
    for season in np.flatnonzero(snow_alpha.any(axis=(1, 2))):
        s2[season] += snow_alpha[season, ..., None] * (spectra.SNOW_SIGNATURE - s2[season])
    s2 += spectra.haze_offset(rng.uniform(0.0, 0.6, size=NUM_SEASONS))[:, None, None, :]

    opacity = _cloud_opacity(rng, size)
    shadow_shift = tuple(int(v) for v in rng.integers(2, 6, size=2) * rng.choice([-1, 1], size=2))
    cloud_brightness = rng.uniform(0.8, 1.15, size=NUM_SEASONS).astype(np.float32)
    for season in np.flatnonzero(opacity.any(axis=(1, 2))):  # most scenes are clear: skip them
        # Shadow: the cloud mask displaced along the sun direction darkens the ground.
        shadow = np.roll(opacity[season], shadow_shift, axis=(0, 1))
        s2[season] *= (1.0 - 0.55 * shadow * (1.0 - opacity[season]))[..., None]
        cloud = cloud_brightness[season] * spectra.CLOUD_SIGNATURE
        s2[season] += opacity[season, ..., None] * (cloud - s2[season])

    cirrus_height = rng.uniform(0.05, 1.0, size=NUM_SEASONS).astype(np.float32)
    spectra.atmosphere_bands(s2, rng.uniform(0.0, 1.0, size=NUM_SEASONS),
                             cirrus=1500.0 * cirrus_height[:, None, None] * opacity)
    s2 *= 1.0 + 0.015 * _uniform_noise(rng, s2.shape)                          # sensor noise
    return np.clip(s2 + 0.5, 0, 65535).astype(np.uint16), opacity


def _render_s1(rng: np.random.Generator, cover_map: np.ndarray, local_seasons: np.ndarray,
               greenness_shift: np.ndarray, snow_alpha: np.ndarray) -> np.ndarray:
    """Sentinel-1 GRD scenes: float32 [S, H, W, 2] (VV, VH) sigma0 in dB."""
    size = cover_map.shape[0]
    num_covers = len(spectra.LAND_COVERS)
    signatures = spectra.s1_signatures_db(local_seasons, greenness_shift)       # [S, C, 2]
    signatures += rng.uniform(-1.0, 1.0, size=(1, num_covers, 1)).astype(np.float32)
    # Wind roughens open water from scene to scene.
    signatures[:, spectra.WATER] += rng.uniform(-2.0, 3.0, size=(NUM_SEASONS, 1))
    sigma_db = signatures[:, cover_map]                                          # [S, H, W, 2]
    sigma_db += (0.8 * layouts.smooth_field(rng, size, 1.2))[None, :, :, None]
    wet_snow = (rng.random(NUM_SEASONS) < 0.5).astype(np.float32)
    sigma_db += (spectra.WET_SNOW_DB * wet_snow[:, None, None] * snow_alpha)[..., None]

    # Speckle multiplies the received power, thermal noise included.
    power = np.power(np.float32(10.0), sigma_db / np.float32(10.0)) + np.float32(10.0 ** (_S1_NOISE_FLOOR_DB / 10.0))
    power *= rng.gamma(_S1_LOOKS, 1.0 / _S1_LOOKS, size=power.shape).astype(np.float32)
    return (np.float32(10.0) * np.log10(power)).astype(np.float32)


def generate_tile(seed: int, split: str, index: int, tile_size: int = 48, *,
                  with_debug: bool = False) -> dict[str, Any]:
    """One synthetic location, deterministic in (seed, split, index, tile_size).

    Args:
      seed: dataset seed.
      split: split name ("train", "test", ...); splits get independent tiles.
      index: example index within the split.
      tile_size: tile side T in pixels (>= 32 keeps every layout visible in a 32-px crop).
      with_debug: also return "debug": land_cover int8 [T, T] (cover per pixel),
        local_seasons int [4] (0 = winter, hemisphere-corrected),
        cloud_opacity float32 [4, T, T], snow_alpha float32 [4, T, T].
    Returns:
      dict: s2 uint16 [4, T, T, 13] (S2 L1C band order), s1 float32 [4, T, T, 2]
      (VV, VH dB), timestamps int64 [4], location_id str, latlon float32 [2],
      label int (index into SCENE_CLASSES).
    """
    rng = tile_rng(seed, split, index)
    label = int(rng.integers(len(SCENE_CLASSES)))
    latlon, southern = _draw_location(rng)
    timestamps = _draw_timestamps(rng, float(latlon[1]))
    local_seasons = (np.arange(NUM_SEASONS) + (2 if southern else 0)) % 4

    foreground = layouts.draw_layout(rng, label, tile_size, rng.uniform(*_FOREGROUND_FRACTION))
    covers = _draw_covers(rng)
    cover_map = np.where(foreground, covers[0], covers[1])
    greenness_shift = rng.normal(0.0, 0.07, size=NUM_SEASONS).astype(np.float32)
    snow_alpha = _snow_alpha(rng, float(latlon[0]), local_seasons, cover_map)

    s2, cloud_opacity = _render_s2(rng, cover_map, local_seasons, greenness_shift, snow_alpha)
    s1 = _render_s1(rng, cover_map, local_seasons, greenness_shift, snow_alpha)
    tile: dict[str, Any] = {
        "s2": s2,
        "s1": s1,
        "timestamps": timestamps,
        "location_id": f"synthetic-{split}-{seed}-{index:07d}",
        "latlon": latlon,
        "label": label,
    }
    if with_debug:
        tile["debug"] = {
            "land_cover": cover_map.astype(np.int8),
            "local_seasons": local_seasons,
            "cloud_opacity": cloud_opacity,
            "snow_alpha": snow_alpha,
        }
    return tile
