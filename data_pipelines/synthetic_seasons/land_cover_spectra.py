"""Land-cover classes of the `labels="land_cover"` set and their S2 / S1 appearance over a year.

Designed so that each class pair needs one of the paper's ideas:

  * crop types (winter cereal, summer maize, double crop, paddy rice) share one
    green-canopy spectrum and one set of soil backgrounds; they differ in their
    crop calendar: the green cover fraction per local season. Single dates
    confuse them (cereal ~ double crop in winter/spring, maize ~ rice in
    winter/summer/autumn); the 4-season trajectory separates them.
  * flooded vs dry vegetation share the canopy spectrum (the water under the
    canopy shows through only 5% of the pixel), but C-band sees the water:
    trunk-water dihedrals give a double bounce that raises VV by ~4-5 dB, while
    the smooth water surface removes the ground/understorey volume term that
    feeds VH (~-2 dB). Flooding is seasonal (always in spring, otherwise only
    sometimes; see land_cover.py), so single SAR dates are not always enough.
  * urban vs bare (bright) soil have nearly the same grey, flat spectrum, but
    wall-ground dihedrals make urban VV ~11 dB brighter (high VV/VH as well).
  * open water is the easy class (dark in NIR and in SAR).

Every class pixel is a linear mixture of a "canopy" and a "background"
endmember with green fraction g: reflectance mixes linearly in area (S2) and
sigma0 mixes linearly in power (S1), both evaluated at the acquisition's
exact date (periodic linear interpolation of the calendar nodes), so a late
acquisition sees a later growth stage.

Numbers: S2 top-of-atmosphere reflectance x 10000 in the L1C band order of
`seamo_jax.sensors.S2_L1C` (B9 / B10 are 0 here: atmosphere, see
`spectra.atmosphere_bands`); S1 sigma0 (VV, VH) in dB at ~38 deg incidence.
Order-of-magnitude values from spectral libraries and S1 crop / wetland
studies, not a radiative-transfer model.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.synthetic_seasons import spectra
from seamo_jax.sensors import S2_L1C

LAND_COVER_CLASSES: tuple[str, ...] = (
    "winter_cereal", "summer_maize", "double_crop", "paddy_rice",
    "dry_vegetation", "flooded_vegetation", "urban", "bare_soil", "open_water",
)
(WINTER_CEREAL, SUMMER_MAIZE, DOUBLE_CROP, PADDY_RICE, DRY_VEGETATION, FLOODED_VEGETATION, URBAN, BARE_SOIL,
 OPEN_WATER) = range(len(LAND_COVER_CLASSES))
CROPS = (WINTER_CEREAL, SUMMER_MAIZE, DOUBLE_CROP, PADDY_RICE)
NUM_CLASSES = len(LAND_COVER_CLASSES)
NUM_NODES = 4  # calendar nodes: local winter (late Jan), spring (Apr), summer (Jul), autumn (Oct)

# ---- S2 endmembers [13] (B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12) ----
_CANOPY = np.array([1200, 850, 800, 450, 1100, 2900, 3700, 3900, 4050, 0, 0, 2000, 950], np.float32)  # NDVI ~0.79
_SOIL = np.array([1450, 1300, 1450, 1700, 1900, 2100, 2250, 2350, 2450, 0, 0, 3000, 2500], np.float32)  # ploughed
# Dry stubble / straw: cellulose-lignin keeps SWIR high and the red edge absent.
_RESIDUE = np.array([1450, 1250, 1400, 1650, 1950, 2300, 2500, 2650, 2750, 0, 0, 3400, 2700], np.float32)
# Shallow turbid paddy water with seedlings: dark NIR/SWIR (water absorbs), brighter visible than deep water.
_PADDY = np.array([1300, 1080, 950, 800, 750, 700, 680, 650, 620, 0, 0, 300, 200], np.float32)
_WATER = spectra._S2_PEAK[spectra.WATER]
_FOREST_PEAK = spectra._S2_PEAK[spectra.FOREST]
_FOREST_DORMANT = spectra._S2_DORMANT[spectra.FOREST]
_URBAN = spectra._S2_PEAK[spectra.URBAN]
# Bright dry soil / gravel: as grey and flat as concrete (a few % apart, inside the per-tile spread).
_BRIGHT_SOIL = np.array([1650, 1500, 1480, 1560, 1680, 1800, 1880, 1940, 2030, 0, 0, 2450, 2150], np.float32)
FLOOD_WATER_SHARE = 0.05  # share of a flooded-vegetation pixel where S2 sees the water between crowns

# ---- S1 endmembers (VV, VH) dB ----
_S1_SOIL = (-11.5, -19.5)      # rough ploughed soil: surface scattering, VV >> VH
_S1_RESIDUE = (-14.0, -21.5)   # smoother, drier stubble field
_S1_PADDY = (-19.0, -26.5)     # calm shallow water: specular, returns little to the radar
_S1_FOREST_PEAK, _S1_FOREST_DORMANT = (-7.5, -13.0), (-8.5, -14.5)  # volume scattering: VH high
# Double bounce (trunk-water dihedral) adds to VV; leaf-off canopies attenuate it less.
FLOOD_VV_GAIN_DB = (5.5, 4.0)  # (leaf-off, leaf-on), at flood strength 1
FLOOD_VH_LOSS_DB = 2.0         # no ground/understorey volume under the water surface

# Green fraction per calendar node (winter, spring, summer, autumn) and the background at each node.
# Crop calendars of northern temperate / subtropical agriculture.
_GREEN = np.zeros((NUM_CLASSES, NUM_NODES), np.float32)
_BACKGROUND = np.zeros((NUM_CLASSES, NUM_NODES, 13), np.float32)
_CANOPIES = np.zeros((NUM_CLASSES, 13), np.float32)
_S1_CANOPY_DB = np.zeros((NUM_CLASSES, 2), np.float32)
_S1_BACKGROUND_DB = np.zeros((NUM_CLASSES, NUM_NODES, 2), np.float32)
_CALENDARS = {
    # class: (green fraction per node, background per node, canopy sigma0 (VV, VH) dB)
    # Sown in autumn, tillers over winter, heads in spring, harvested in early summer (stubble).
    # Vertical stems attenuate VV at heading: low VV for a full canopy.
    WINTER_CEREAL: ((0.35, 0.95, 0.05, 0.15), ("soil", "soil", "residue", "soil"), (-12.5, -17.5)),
    # Sown in May, peaks in July-August, harvested in autumn; large biomass: strong VH.
    SUMMER_MAIZE: ((0.0, 0.05, 0.95, 0.25), ("residue", "soil", "soil", "residue"), (-9.0, -14.5)),
    # Winter cereal, then a summer crop sown into the stubble that peaks in autumn.
    DOUBLE_CROP: ((0.30, 0.85, 0.15, 0.95), ("soil", "soil", "residue", "soil"), (-10.5, -15.5)),
    # Flooded for transplanting in spring, peaks in summer over standing water, harvested in autumn.
    # Stem-water double bounce keeps VV of the full canopy high.
    PADDY_RICE: ((0.0, 0.15, 0.90, 0.20), ("residue", "paddy", "paddy", "residue"), (-8.5, -16.0)),
}
_S2_BACKGROUNDS = {"soil": _SOIL, "residue": _RESIDUE, "paddy": _PADDY}
_S1_BACKGROUNDS = {"soil": _S1_SOIL, "residue": _S1_RESIDUE, "paddy": _S1_PADDY}
for _k, (_green, _backgrounds, _s1_canopy) in _CALENDARS.items():
    _GREEN[_k] = _green
    _BACKGROUND[_k] = np.stack([_S2_BACKGROUNDS[b] for b in _backgrounds])
    _CANOPIES[_k] = _CANOPY
    _S1_CANOPY_DB[_k] = _s1_canopy
    _S1_BACKGROUND_DB[_k] = [_S1_BACKGROUNDS[b] for b in _backgrounds]

# Natural (deciduous-dominated) vegetation: canopy = leaf-on, background = leaf-off state. Flooded
# vegetation has the same tables; `flood` (per acquisition) adds the water in s2_signatures / s1_signatures_db.
for _k in (DRY_VEGETATION, FLOODED_VEGETATION):
    _GREEN[_k] = (0.55, 0.85, 1.0, 0.75)
    _CANOPIES[_k] = _FOREST_PEAK
    _BACKGROUND[_k] = _FOREST_DORMANT
    _S1_CANOPY_DB[_k] = _S1_FOREST_PEAK
    _S1_BACKGROUND_DB[_k] = _S1_FOREST_DORMANT

# Covers without phenology: canopy = background, g irrelevant.
for _k, _s2, _s1 in ((URBAN, _URBAN, (-4.0, -12.0)),        # wall-ground dihedrals: very bright VV
                     (BARE_SOIL, _BRIGHT_SOIL, (-15.0, -23.0)),  # dry, fairly smooth: weak surface scattering
                     (OPEN_WATER, _WATER, (-21.0, -28.0))):      # specular: dark (wind roughens it, see generator)
    _CANOPIES[_k], _BACKGROUND[_k] = _s2, _s2
    _S1_CANOPY_DB[_k], _S1_BACKGROUND_DB[_k] = _s1, _s1

# sigma0 change per degree of incidence angle (steeper for surfaces than for volumes).
INCIDENCE_SLOPE_DB = np.array([-0.2, -0.2, -0.2, -0.2, -0.12, -0.12, -0.1, -0.25, -0.35], np.float32)
# Classes whose background is bare ground: rain before an acquisition brightens it (dielectric constant).
SOIL_MOISTURE_SENSITIVE = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0], np.float32)
# Classes whose sigma0 wanders from date to date (tillage, irrigation, wind in the canopy, dew).
FIELD_STATE_SENSITIVE = np.array([1, 1, 1, 1, 0.5, 0.5, 0, 0.5, 0], np.float32)
# Persistent sub-pixel heterogeneity: relative S2 amplitude, its length scale in px, S1 amplitude in dB.
# Urban SAR has bright point scatterers (corner reflectors) at the block scale.
S2_TEXTURE = np.array([0.06, 0.06, 0.06, 0.06, 0.07, 0.07, 0.10, 0.10, 0.03], np.float32)
S2_TEXTURE_SCALE = np.array([1.5, 1.5, 1.5, 1.5, 1.0, 1.0, 0.8, 1.2, 2.0], np.float32)
S1_TEXTURE_DB = np.array([0.6, 0.6, 0.6, 0.6, 0.8, 0.8, 2.5, 0.7, 0.4], np.float32)

assert not (set(range(NUM_CLASSES)) - set(_CALENDARS) - {DRY_VEGETATION, FLOODED_VEGETATION, URBAN, BARE_SOIL,
                                                          OPEN_WATER})


def _interpolate(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Periodic linear interpolation of per-node `table` [K, 4, ...] at `phase` [S] or [S, K] -> [S, K, ...]."""
    phase = np.asarray(phase, np.float32)
    phase = np.broadcast_to(phase.reshape(len(phase), -1), (len(phase), table.shape[0]))
    low = np.floor(phase).astype(np.int64)
    frac = (phase - low).reshape(phase.shape + (1,) * (table.ndim - 2))
    classes = np.arange(table.shape[0])[None, :]
    return (1 - frac) * table[classes, low % NUM_NODES] + frac * table[classes, (low + 1) % NUM_NODES]


def green_fraction(phase: np.ndarray, jitter: np.ndarray | None = None) -> np.ndarray:
    """Green cover fraction of every class at each acquisition.

    Args:
      phase: float [S] or [S, K] calendar position in [0, 4) (0 = late January, 1 = April ...);
        per class when calendars are shifted (sowing date).
      jitter: float [S, K] added (variety, weather), or None.
    Returns:
      float32 [S, K] in [0, 1].
    """
    green = _interpolate(_GREEN, phase)
    if jitter is not None:
        green = green + jitter
    return np.clip(green, 0.0, 1.0).astype(np.float32)


def s2_signatures(phase: np.ndarray, green: np.ndarray, flood: np.ndarray) -> np.ndarray:
    """Surface TOA reflectance of every class: float32 [S, K, 13] (B9 / B10 = 0).

    Args:
      phase: float [S] or [S, K]; green: float [S, K] from `green_fraction`.
      flood: float [S] flood strength of flooded vegetation (0 = water gone, 1 = typical).
    """
    background = _interpolate(_BACKGROUND, phase)                       # [S, K, 13]
    s2 = background + green[..., None] * (_CANOPIES[None] - background)
    # Water between the crowns: a few % of the pixel, dark in NIR / SWIR.
    share = (FLOOD_WATER_SHARE * np.clip(flood, 0.0, 1.0))[:, None]
    s2[:, FLOODED_VEGETATION] += share * (_WATER[None] - s2[:, FLOODED_VEGETATION])
    return s2.astype(np.float32)


def s1_signatures_db(phase: np.ndarray, green: np.ndarray, soil_moisture_db: np.ndarray, flood: np.ndarray
                     ) -> np.ndarray:
    """Mean sigma0 of every class: float32 [S, K, 2] (VV, VH) dB.

    Canopy and background add in power, weighted by the green fraction
    (area mixing; canopy attenuation of the ground is folded into the numbers).

    Args:
      phase: float [S] or [S, K]; green: float [S, K].
      soil_moisture_db: float [S] brightening of bare-ground backgrounds by rain before each acquisition.
      flood: float [S] flood strength of flooded vegetation (water depth, stem density).
    """
    background_db = _interpolate(_S1_BACKGROUND_DB, phase)               # [S, K, 2]
    background_db = background_db + (soil_moisture_db[:, None] * SOIL_MOISTURE_SENSITIVE[None])[..., None]
    power = (green[..., None] * 10.0 ** (_S1_CANOPY_DB[None] / 10.0)
             + (1.0 - green[..., None]) * 10.0 ** (background_db / 10.0))
    sigma_db = 10.0 * np.log10(power)
    # Double bounce (trunk-water dihedral) adds to VV, less through a leaf-on canopy; the water surface
    # removes the ground / understorey volume term that feeds VH.
    wet_green = green[:, FLOODED_VEGETATION]
    sigma_db[:, FLOODED_VEGETATION, 0] += flood * (FLOOD_VV_GAIN_DB[0] + wet_green * (FLOOD_VV_GAIN_DB[1]
                                                                                     - FLOOD_VV_GAIN_DB[0]))
    sigma_db[:, FLOODED_VEGETATION, 1] -= flood * FLOOD_VH_LOSS_DB
    return sigma_db.astype(np.float32)


def ndvi(s2: np.ndarray) -> np.ndarray:
    """(B8 - B4) / (B8 + B4) over the last axis of any float / uint16 S2 L1C array."""
    values = np.asarray(s2, dtype=np.float64)
    red, nir = values[..., S2_L1C.band_index("B4")], values[..., S2_L1C.band_index("B8")]
    return (nir - red) / (nir + red + 1e-9)
