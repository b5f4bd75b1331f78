"""Synthetic tiles of the `labels="land_cover"` set, pure numpy.

`generate_land_cover_tile(seed, split, index)` is a pure function like
`generator.generate_tile`, with the same record schema (S2 L1C uint16
reflectance x 10000, S1 GRD float32 dB, 4 seasons). The label is the dominant
land cover of the tile (`land_cover_spectra.LAND_COVER_CLASSES`): it fills
65-95% of the tile and nearly all of its central 32 px; one other class fills
the rest, pushed towards the border. What tells the classes apart is fixed by
physics (see land_cover_spectra.py): crop calendars, SAR double bounce,
and nothing in the mean spectra of a single clear date for several pairs.

Nuisances (what hides or blurs the class signal), per acquisition unless said:
  * S2: thick clouds (35% of acquisitions, 15-100% of the tile) with shadows
    and cirrus tops in B10, thin cirrus veils (13% more), aerosol haze,
    water vapour (B9), an illumination / BRDF gain, 1.5% sensor noise.
    C-band passes through clouds: S1 never sees them.
  * S1: gamma speckle (4.4 looks) drawn anew for every acquisition, soil
    moisture after rain, field state of crops and vegetation (tillage,
    irrigation, wind, dew; ~1 dB), wind on open water, a 0.3 dB calibration
    wobble; per tile: incidence angle (30-46 deg), roughness / biomass offsets,
    street orientation (urban VV -8 ... -1.5 dB), seasonal flooding.
  * Per tile in S2: brightness, spectral tilt, NIR-plateau and SWIR gains
    (+-7%), sowing-date shifts of the calendars (~11 days).

Four independent random streams (scene, s2, clouds, s1) spawned from
(seed, split, index): `clouds=False` renders the same tile without clouds,
with the same S1 bit for bit and the same S2 wherever no cloud or shadow falls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_pipelines.synthetic_seasons import generator, layouts, spectra
from data_pipelines.synthetic_seasons import land_cover_spectra as lcs
from seamo_jax.sensors import S2_L1C

NUM_SEASONS = generator.NUM_SEASONS
LAND_COVER_CLASSES = lcs.LAND_COVER_CLASSES

_STREAM_SALT = 0x4C43              # "LC": streams apart from the scene set's for the same (seed, split, index)
_MINORITY_FRACTION = (0.05, 0.35)  # share of the tile that is not the label class
_THICK_CLOUD_PROBABILITY = 0.35    # per acquisition
_CIRRUS_ONLY_PROBABILITY = 0.2     # of the acquisitions without thick cloud
_S1_LOOKS = 4.4
_S1_NOISE_FLOOR_DB = -25.0
_REFERENCE_INCIDENCE_DEG = 38.0
_DAYS_PER_SEASON = 91.3
_CALENDAR_SHIFT_STD = np.array([0.12, 0.12, 0.12, 0.12, 0.08, 0.08, 0, 0, 0], np.float32)  # seasons
_FLOOD_OUTSIDE_SPRING = 0.6       # probability that flooded vegetation is still / again flooded in another season
# Spectral tilt per tile (soil colour, roof materials, canopy structure): -0.5 at B1 ... +0.5 at B12.
_WAVELENGTH = np.asarray(S2_L1C.wavelength_nm, np.float32)
_TILT_SHAPE = (_WAVELENGTH - _WAVELENGTH.min()) / (_WAVELENGTH.max() - _WAVELENGTH.min()) - 0.5
# Canopy structure (LAI, leaf angles) scales the NIR plateau, leaf water content the SWIR: per tile,
# +-7%, the size of what 5% water under a canopy does, so S2 alone cannot tell flooded from dry reliably.
#                       B1 B2 B3 B4 B5   B6   B7   B8   B8A  B9 B10 B11 B12
_NIR_WEIGHT = np.array([0, 0, 0, 0, 0.3, 0.8, 1.0, 1.0, 1.0, 0, 0, 0, 0], np.float32)
_SWIR_WEIGHT = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1.0, 1.0], np.float32)


def land_cover_rngs(seed: int, split: str, index: int) -> dict[str, np.random.Generator]:
    """Independent generators "scene", "s2", "clouds", "s1" of one tile."""
    root = np.random.SeedSequence([int(seed), generator._split_code(split), int(index), _STREAM_SALT])
    names = ("scene", "s2", "clouds", "s1")
    return {name: np.random.default_rng(child) for name, child in zip(names, root.spawn(len(names)))}


def season_phase(timestamps: np.ndarray) -> np.ndarray:
    """Position in the northern crop calendar: float32 [S], 0 = Jan 25, 1 = Apr 26, ... periodic in [0, 4)."""
    seconds = np.asarray(timestamps, dtype=np.int64)
    year_start = seconds.astype("datetime64[s]").astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
    day_of_year = (seconds - year_start) / 86400.0
    return (((day_of_year - 24.0) / _DAYS_PER_SEASON) % 4.0).astype(np.float32)


def _class_map(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """int64 [size, size]: the label class, with one other class in blobs biased towards the border."""
    other = int(rng.integers(lcs.NUM_CLASSES - 1))
    other += other >= label
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2.0
    radius = np.hypot(rows, cols) / (size / 2.0)
    # Blobs (fields, ponds, villages) of the other class; the radial term keeps the central crop dominant.
    field = layouts.smooth_field(rng, size, rng.uniform(2.5, 5.0)) + 1.5 * radius
    minority = layouts.foreground_mask(field, rng.uniform(*_MINORITY_FRACTION))
    return np.where(minority, other, label)


def _texture_field(rng: np.random.Generator, class_map: np.ndarray) -> np.ndarray:
    """float32 [T, T] unit-std heterogeneity per pixel, at each present class's length scale.

    Shared by S2 and S1: both see the same crowns, furrows, buildings.
    """
    texture = np.zeros(class_map.shape, np.float32)
    for k in np.unique(class_map):
        field = layouts.smooth_field(rng, class_map.shape[0], float(lcs.S2_TEXTURE_SCALE[k]))
        texture = np.where(class_map == k, field, texture)
    return texture


def _clouds(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per acquisition cloud opacity, cloud shadow, B10 cirrus reflectance: float32 [S, T, T] each."""
    opacity = np.zeros((NUM_SEASONS, size, size), np.float32)
    shadow = np.zeros_like(opacity)
    b10 = np.zeros_like(opacity)
    for season in range(NUM_SEASONS):
        draw = rng.random()
        thick = draw < _THICK_CLOUD_PROBABILITY
        if not thick and draw >= _THICK_CLOUD_PROBABILITY + (1 - _THICK_CLOUD_PROBABILITY) * _CIRRUS_ONLY_PROBABILITY:
            continue
        field = layouts.smooth_field(rng, size, rng.uniform(3.0, 7.0))
        if thick:
            cover = rng.uniform(0.15, 1.0)  # 1.0: overcast
            threshold = np.quantile(field, 1.0 - cover)
            opacity[season] = np.clip((field - threshold) / 0.7 + 0.15, 0.0, 1.0) * rng.uniform(0.75, 1.0)
            # Shadow: the cloud displaced along the sun direction, where the ground is not itself under cloud.
            shift = tuple(int(v) for v in rng.integers(2, 6, size=2) * rng.choice([-1, 1], size=2))
            shadow[season] = np.roll(opacity[season], shift, axis=(0, 1)) * (1.0 - opacity[season])
            b10[season] = 1500.0 * rng.uniform(0.05, 1.0) * opacity[season]  # high tops reflect above the vapour
        else:
            # Thin ice cloud: a translucent veil; faint in VNIR, plain in B10 (1375 nm, above the vapour).
            veil = rng.uniform(0.03, 0.15) * (0.6 + 0.4 / (1.0 + np.exp(-2.0 * field)))
            opacity[season] = veil
            b10[season] = 3000.0 * veil
    return opacity, shadow, b10


def _render_s2(rng: np.random.Generator, signatures: np.ndarray, class_map: np.ndarray, texture: np.ndarray,
               clouds: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> np.ndarray:
    """S2 L1C: uint16 [S, T, T, 13] from class signatures float32 [S, K, 13]."""
    s2 = signatures[:, class_map]                                                  # [S, T, T, 13]
    s2 *= (1.0 + lcs.S2_TEXTURE[class_map] * texture)[None, ..., None]
    # Sun elevation, BRDF and topographic shading change from date to date.
    s2 *= rng.uniform(0.93, 1.07, size=(NUM_SEASONS, 1, 1, 1)).astype(np.float32)
    s2 += spectra.haze_offset(rng.uniform(0.0, 0.6, size=NUM_SEASONS))[:, None, None, :]
    water_vapour = rng.uniform(0.0, 1.0, size=NUM_SEASONS)
    b10 = np.zeros(s2.shape[:3], np.float32)
    if clouds is not None:
        opacity, shadow, b10 = clouds
        for season in np.flatnonzero(opacity.any(axis=(1, 2))):
            s2[season] *= (1.0 - 0.55 * shadow[season])[..., None]
            s2[season] += opacity[season, ..., None] * (spectra.CLOUD_SIGNATURE - s2[season])
    spectra.atmosphere_bands(s2, water_vapour, cirrus=b10)
    s2 *= 1.0 + 0.015 * generator._uniform_noise(rng, s2.shape)                    # sensor noise
    return np.clip(s2 + 0.5, 0, 65535).astype(np.uint16)


def _render_s1(rng: np.random.Generator, scene: dict[str, Any], class_map: np.ndarray, texture: np.ndarray
               ) -> np.ndarray:
    """S1 GRD: float32 [S, T, T, 2] (VV, VH) dB."""
    soil_moisture_db = rng.uniform(-1.5, 3.0, size=NUM_SEASONS)  # rain before the pass brightens bare ground
    signatures = lcs.s1_signatures_db(scene["phase"], scene["green"], soil_moisture_db, scene["flood"])  # [S, K, 2]
    signatures += (scene["s1_offset_db"] + lcs.INCIDENCE_SLOPE_DB * (scene["incidence_deg"] - _REFERENCE_INCIDENCE_DEG)
                   )[None, :, None]
    signatures[:, lcs.URBAN, 0] += scene["urban_vv_db"]
    signatures[:, lcs.OPEN_WATER] += rng.uniform(-2.0, 4.0, size=(NUM_SEASONS, 1))  # wind roughens water
    # Field state (tillage, irrigation, wind in the canopy, dew) changes from pass to pass.
    signatures += (rng.normal(0.0, 1.0, size=(NUM_SEASONS, lcs.NUM_CLASSES)) * lcs.FIELD_STATE_SENSITIVE)[..., None]
    signatures += rng.normal(0.0, 0.3, size=(NUM_SEASONS, 1, 1)).astype(np.float32)  # calibration wobble
    sigma_db = signatures[:, class_map] + (lcs.S1_TEXTURE_DB[class_map] * texture)[None, ..., None]
    power = np.power(np.float32(10.0), sigma_db / np.float32(10.0)) + np.float32(10.0 ** (_S1_NOISE_FLOOR_DB / 10.0))
    power *= rng.gamma(_S1_LOOKS, 1.0 / _S1_LOOKS, size=power.shape).astype(np.float32)  # speckle, per acquisition
    return (np.float32(10.0) * np.log10(power)).astype(np.float32)


def _flood(rng: np.random.Generator, phase: np.ndarray) -> np.ndarray:
    """Flood strength of flooded vegetation per acquisition, float32 [S].

    Always flooded in spring (snowmelt, wet season), in other seasons only sometimes; the strength
    (water depth, stem density) is a property of the tile.
    """
    spring = np.round(phase).astype(np.int64) % 4 == 1
    flooded = spring | (rng.random(NUM_SEASONS) < _FLOOD_OUTSIDE_SPRING)
    return (flooded * rng.uniform(0.5, 1.2)).astype(np.float32)


def _draw_scene(rng: np.random.Generator, tile_size: int) -> dict[str, Any]:
    """Label, place, dates and per-tile surface parameters of one tile."""
    label = int(rng.integers(lcs.NUM_CLASSES))
    # Northern latitudes only: the crop calendars are northern; a southern tile would be the same
    # calendar two seasons later, which is not an idea under test here.
    latlon = np.array([rng.uniform(25.0, 60.0), rng.uniform(-180.0, 180.0)], np.float32)
    timestamps = generator._draw_timestamps(rng, float(latlon[1]))
    phase = season_phase(timestamps)
    class_map = _class_map(rng, label, tile_size)
    # Sowing dates (crops) and spring onset (vegetation) shift each calendar by ~1-2 weeks per tile.
    shift = rng.normal(0.0, 1.0, size=lcs.NUM_CLASSES) * _CALENDAR_SHIFT_STD
    class_phase = phase[:, None] + shift[None, :].astype(np.float32)                  # [S, K]
    # Variety and the year's weather move every class's green fraction.
    jitter = (rng.normal(0.0, 0.06, size=(NUM_SEASONS, lcs.NUM_CLASSES))
              + rng.normal(0.0, 0.04, size=(NUM_SEASONS, 1))).astype(np.float32)
    brightness = rng.uniform(0.9, 1.1, size=lcs.NUM_CLASSES).astype(np.float32)
    tilt = rng.uniform(-0.12, 0.12, size=lcs.NUM_CLASSES).astype(np.float32)
    nir, swir = rng.uniform(-0.07, 0.07, size=(2, lcs.NUM_CLASSES)).astype(np.float32)
    return {
        "label": label, "latlon": latlon, "timestamps": timestamps, "class_map": class_map,
        "phase": class_phase, "acquisition_phase": phase,
        "green": lcs.green_fraction(class_phase, jitter),
        "flood": _flood(rng, phase),
        "s2_gain": (brightness[:, None] * (1.0 + tilt[:, None] * _TILT_SHAPE[None])                 # [K, 13]
                    * (1.0 + nir[:, None] * _NIR_WEIGHT[None]) * (1.0 + swir[:, None] * _SWIR_WEIGHT[None])),
        "incidence_deg": float(rng.uniform(30.0, 46.0)),                              # IW swath near to far range
        "s1_offset_db": rng.uniform(-1.5, 1.5, size=lcs.NUM_CLASSES).astype(np.float32),  # roughness, biomass
        # Street orientation vs the look direction: aligned walls make the dihedral flash, oblique ones not.
        "urban_vv_db": float(rng.uniform(-4.0, 2.5)),
        "texture": _texture_field(rng, class_map),
    }


def generate_land_cover_tile(seed: int, split: str, index: int, tile_size: int = 48, *,
                             with_debug: bool = False, clouds: bool = True) -> dict[str, Any]:
    """One synthetic location of the land_cover set, deterministic in (seed, split, index, tile_size).

    Args:
      seed, split, index, tile_size: as `generator.generate_tile`.
      with_debug: also return "debug": land_cover int8 [T, T] (class per pixel),
        phase float32 [4] (calendar position of each date), flood float32 [4] (flooded
        vegetation), green float32 [4, K],
        cloud_opacity / cloud_shadow / cirrus_b10 float32 [4, T, T],
        clear bool [4, T, T] (no cloud, veil or shadow on the pixel).
      clouds: False renders the same tile without clouds (tests, diagnostics).
    Returns:
      dict: s2 uint16 [4, T, T, 13], s1 float32 [4, T, T, 2] (VV, VH dB),
      timestamps int64 [4], location_id str, latlon float32 [2],
      label int (index into LAND_COVER_CLASSES).
    """
    rngs = land_cover_rngs(seed, split, index)
    scene = _draw_scene(rngs["scene"], tile_size)
    signatures = lcs.s2_signatures(scene["phase"], scene["green"], scene["flood"]) * scene["s2_gain"][None]
    cloud_layers = _clouds(rngs["clouds"], tile_size) if clouds else None
    s2 = _render_s2(rngs["s2"], signatures, scene["class_map"], scene["texture"], cloud_layers)
    s1 = _render_s1(rngs["s1"], scene, scene["class_map"], scene["texture"])
    tile: dict[str, Any] = {
        "s2": s2,
        "s1": s1,
        "timestamps": scene["timestamps"],
        "location_id": f"synthetic-land_cover-{split}-{seed}-{index:07d}",
        "latlon": scene["latlon"],
        "label": scene["label"],
    }
    if with_debug:
        zeros = np.zeros((NUM_SEASONS, tile_size, tile_size), np.float32)
        opacity, shadow, b10 = cloud_layers if cloud_layers is not None else (zeros, zeros, zeros)
        tile["debug"] = {
            "land_cover": scene["class_map"].astype(np.int8),
            "phase": scene["acquisition_phase"],
            "flood": scene["flood"],
            "green": scene["green"],
            "cloud_opacity": opacity,
            "cloud_shadow": shadow,
            "cirrus_b10": b10,
            "clear": (opacity == 0) & (shadow == 0),
        }
    return tile
