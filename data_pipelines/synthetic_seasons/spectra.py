"""Land-cover types and their Sentinel-2 / Sentinel-1 appearance per season.

Numbers are typical values read off published spectral libraries and
Sentinel-1 backscatter statistics (order of magnitude, not a physical model):
Sentinel-2 values are top-of-atmosphere reflectance x 10000 in the L1C band
order of `seamo_jax.sensors.S2_L1C`; Sentinel-1 values are sigma0 in dB.

Vegetated covers have a "dormant" and a "peak" signature; a greenness in
[0, 1] per local season (winter, spring, summer, autumn) blends them, which
gives the red-edge / NIR rise in summer and bare cropland in winter.

The water-vapour band B9 and the cirrus band B10 are not surface properties:
`atmosphere_bands` derives them from the scene's atmosphere, so they are 0 in
the surface tables here.
"""

from __future__ import annotations

import numpy as np

from seamo_jax.sensors import S1_GRD, S2_L1C

LAND_COVERS: tuple[str, ...] = ("water", "forest", "cropland", "grassland", "urban", "bare_soil", "snow_ice")
WATER, FOREST, CROPLAND, GRASSLAND, URBAN, BARE_SOIL, SNOW_ICE = range(len(LAND_COVERS))

# How often each cover fills a layout role; the same for every scene label so
# that the mix of covers carries no information about the label.
COVER_WEIGHTS = np.array([0.15, 0.20, 0.20, 0.18, 0.12, 0.10, 0.05])

LOCAL_SEASONS: tuple[str, ...] = ("winter", "spring", "summer", "autumn")

NUM_S2_BANDS = S2_L1C.num_bands
B8A = S2_L1C.band_index("B8A")
B9 = S2_L1C.band_index("B9")
B10 = S2_L1C.band_index("B10")

# Columns: B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12 (B9/B10 from the atmosphere).
_S2_PEAK = np.array([
    [1250, 1000, 800, 550, 450, 380, 350, 300, 270, 0, 0, 120, 90],             # water
    [1250, 950, 850, 600, 1050, 2300, 2800, 2900, 3050, 0, 0, 1550, 750],       # forest
    [1200, 850, 800, 450, 1100, 2900, 3700, 3900, 4050, 0, 0, 2000, 950],       # cropland
    [1250, 950, 950, 700, 1250, 2500, 3000, 3150, 3300, 0, 0, 2200, 1200],      # grassland
    [1600, 1450, 1400, 1450, 1550, 1700, 1800, 1850, 1950, 0, 0, 2300, 2050],   # urban
    [1550, 1450, 1650, 2000, 2250, 2450, 2550, 2650, 2750, 0, 0, 3300, 2800],   # bare soil
    [8800, 8700, 8500, 8200, 7900, 7500, 7200, 7000, 6700, 0, 0, 1100, 900],    # snow / ice (dark in SWIR)
], dtype=np.float32)

_S2_DORMANT = _S2_PEAK.copy()
_S2_DORMANT[FOREST] = [1300, 1000, 900, 800, 1100, 1700, 1950, 2000, 2100, 0, 0, 1800, 1000]
_S2_DORMANT[CROPLAND] = [1450, 1300, 1450, 1700, 1900, 2100, 2250, 2350, 2450, 0, 0, 3000, 2500]  # ploughed
_S2_DORMANT[GRASSLAND] = [1350, 1150, 1200, 1300, 1550, 1900, 2100, 2200, 2300, 0, 0, 2700, 2000]

# Greenness per local season (winter, spring, summer, autumn); 1 for covers
# without phenology.
_GREENNESS = np.ones((len(LAND_COVERS), 4), dtype=np.float32)
_GREENNESS[FOREST] = [0.55, 0.85, 1.0, 0.75]
_GREENNESS[CROPLAND] = [0.0, 0.45, 1.0, 0.2]
_GREENNESS[GRASSLAND] = [0.35, 0.8, 0.9, 0.55]

# Sentinel-1 sigma0 (VV, VH) in dB: water is specular (very low), urban
# double-bounce (high), vegetation volume scattering raises VH with biomass.
_S1_PEAK_DB = np.array([
    [-21.0, -28.0],   # water
    [-7.5, -13.0],    # forest
    [-9.5, -15.5],    # cropland
    [-10.5, -17.5],   # grassland
    [-3.0, -10.0],    # urban
    [-13.0, -21.0],   # bare soil
    [-11.0, -19.0],   # snow / ice
], dtype=np.float32)
_S1_DORMANT_DB = _S1_PEAK_DB.copy()
_S1_DORMANT_DB[FOREST] = [-8.5, -14.5]
_S1_DORMANT_DB[CROPLAND] = [-13.5, -21.0]
_S1_DORMANT_DB[GRASSLAND] = [-12.0, -20.0]

# Seasonal (not permanent) snow; how much of a pixel it hides per cover:
# trees stick out of the snow, open water does not hold it.
SNOW_SIGNATURE = _S2_PEAK[SNOW_ICE]
SNOW_COVER_FRACTION = np.array([0.0, 0.45, 0.9, 0.9, 0.6, 0.9, 0.9], dtype=np.float32)
WET_SNOW_DB = -4.0  # wet snow absorbs C-band: sigma0 drops

# Opaque cloud: bright and flat over VNIR, still bright in SWIR (unlike snow).
CLOUD_SIGNATURE = np.array([6500, 6700, 6600, 6500, 6500, 6500, 6400, 6300, 6200, 0, 0, 4800, 3400],
                           dtype=np.float32)

# Haze (aerosol path radiance) adds most at short wavelengths.
_HAZE_SPECTRUM = np.array([450, 350, 250, 170, 130, 100, 80, 70, 60, 0, 0, 20, 10], dtype=np.float32)

assert _S2_PEAK.shape == (len(LAND_COVERS), NUM_S2_BANDS)
assert _S1_PEAK_DB.shape == (len(LAND_COVERS), S1_GRD.num_bands)


def greenness(local_seasons: np.ndarray) -> np.ndarray:
    """Greenness of every cover in each local season.

    Args:
      local_seasons: int [S], 0 = winter ... 3 = autumn (hemisphere-corrected).
    Returns:
      float32 [S, num_covers].
    """
    return _GREENNESS[:, local_seasons].T


def s2_signatures(local_seasons: np.ndarray, greenness_shift: np.ndarray) -> np.ndarray:
    """Surface TOA reflectance of every cover in each season.

    Args:
      local_seasons: int [S].
      greenness_shift: float [S] added to the greenness (year-to-year phenology).
    Returns:
      float32 [S, num_covers, 13]; B9 and B10 are 0 (see `atmosphere_bands`).
    """
    green = np.clip(greenness(local_seasons) + greenness_shift[:, None], 0.0, 1.0)
    has_phenology = (_GREENNESS.max(axis=1) > _GREENNESS.min(axis=1))[None, :]
    green = np.where(has_phenology, green, 1.0)
    return _S2_DORMANT[None] + green[..., None] * (_S2_PEAK - _S2_DORMANT)[None]


def s1_signatures_db(local_seasons: np.ndarray, greenness_shift: np.ndarray) -> np.ndarray:
    """Mean sigma0 of every cover in each season.

    Args:
      local_seasons: int [S].
      greenness_shift: float [S].
    Returns:
      float32 [S, num_covers, 2] (VV, VH) in dB.
    """
    green = np.clip(greenness(local_seasons) + greenness_shift[:, None], 0.0, 1.0)
    return _S1_DORMANT_DB[None] + green[..., None] * (_S1_PEAK_DB - _S1_DORMANT_DB)[None]


def haze_offset(aerosol: np.ndarray) -> np.ndarray:
    """Additive path radiance per band.

    Args:
      aerosol: float [S] aerosol load in [0, 1] per scene.
    Returns:
      float32 [S, 13].
    """
    return aerosol[:, None].astype(np.float32) * _HAZE_SPECTRUM[None]


def atmosphere_bands(s2: np.ndarray, water_vapour: np.ndarray, cirrus: np.ndarray) -> None:
    """Fills B9 and B10 of `s2` in place from the scene's atmosphere.

    B9 (945 nm) sits in a water-vapour absorption line: it sees the NIR
    surface (B8A) attenuated by the column's water vapour. B10 (1375 nm) is
    absorbed almost entirely by the atmosphere, so it is near zero except where
    high (cirrus) cloud reflects above the absorbing layer.

    Args:
      s2: float32 [S, H, W, 13], modified in place.
      water_vapour: float [S] in [0, 1].
      cirrus: float [S, H, W] cirrus reflectance x 10000 (>= 0).
    """
    transmittance = (0.45 - 0.22 * water_vapour).astype(np.float32)
    s2[..., B9] = s2[..., B8A] * transmittance[:, None, None]
    s2[..., B10] = 8.0 + cirrus
