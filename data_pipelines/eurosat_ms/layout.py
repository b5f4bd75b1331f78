"""EuroSAT-MS (all 13 bands) on disk: listing and reading one tile (no TFDS import).

Published layout (Helber et al.; the zip extracts to
`ds/images/remote_sensing/otherDatasets/sentinel_2/tif/` or `EuroSAT_MS/`):

    <root>/<ClassName>/<ClassName>_<n>.tif     10 class folders, 27,000 tiles

Each tile: GeoTIFF 64 x 64 px, 13 bands, uint16 L1C reflectance x 10000,
pixel-interleaved, WGS 84 / UTM. The files store the bands as
B01..B08, B09, B10, B11, B12, B8A (B8A last; verified on the real sample:
channel 9 holds the ~10-20 DN cirrus band B10), so we reorder them to the
`seamo_jax.sensors.S2_L1C` order (B8A after B8).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines import geotiff
from seamo_jax.sensors import S2_L1C, BadRecordError, validate_array

CLASS_NAMES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
               "Pasture", "PermanentCrop", "Residential", "River", "SeaLake")
TILE_SIZE = 64
FILE_BAND_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B8A")
# file channel index for each S2_L1C band, in S2_L1C order
_TO_SPEC_ORDER = np.array([FILE_BAND_ORDER.index(b) for b in S2_L1C.bands])


@dataclasses.dataclass(frozen=True)
class TileRef:
    """One tile to convert: absolute path, its label index and the path relative to the root."""

    path: str
    label: int
    rel_path: str


def find_root(manual_dir: str, max_depth: int = 7) -> str:
    """The folder under `manual_dir` that holds the 10 class folders (searched breadth-first)."""
    frontier = [manual_dir]
    for _ in range(max_depth + 1):
        next_frontier = []
        for folder in sorted(frontier):
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            if all(c in entries for c in CLASS_NAMES):
                return folder
            next_frontier += [os.path.join(folder, e) for e in entries if os.path.isdir(os.path.join(folder, e))]
        frontier = next_frontier
    raise FileNotFoundError(f"no EuroSAT-MS class folders {CLASS_NAMES} found under {manual_dir}")


def list_tiles(root: str) -> list[TileRef]:
    """All `<Class>/<Class>_<n>.tif` tiles, sorted by class then number. Other files are ignored."""
    refs = []
    for label, name in enumerate(CLASS_NAMES):
        folder = os.path.join(root, name)
        tifs = [f for f in os.listdir(folder) if f.lower().endswith((".tif", ".tiff")) and f.startswith(name + "_")]

        def number(fname: str) -> tuple[int, str]:
            digits = os.path.splitext(fname)[0][len(name) + 1:]
            return (int(digits), fname) if digits.isdigit() else (1 << 62, fname)

        for fname in sorted(tifs, key=number):
            refs.append(TileRef(os.path.join(folder, fname), label, f"{name}/{fname}"))
    if not refs:
        raise FileNotFoundError(f"no EuroSAT-MS tiles under {root}")
    return refs


def load_record(ref: TileRef) -> tuple[str, dict]:
    """Reads one tile into a record (contracts.md section 1), validated against S2_L1C.

    Returns (key, record) with s2 uint16 [1, 64, 64, 13] in S2_L1C band order,
    timestamps int64 [1] (0 = unknown: EuroSAT publishes no dates), latlon
    float32 [2] from the GeoTIFF tags (NaN when not georeferenced), label int.
    Raises BadRecordError naming the file and field on a bad tile.
    """
    try:
        raw = geotiff.read_multiband(ref.path)
    except geotiff.GeoTiffError as err:
        raise BadRecordError(f"record {ref.path!r}, field 's2': {err}") from err
    # Validate in file order first: the band-count message then names L1C/L2A.
    validate_array(raw[None], S2_L1C, record_id=ref.path, field="s2", num_seasons=1,
                   spatial_shape=(TILE_SIZE, TILE_SIZE))
    s2 = np.ascontiguousarray(raw[:, :, _TO_SPEC_ORDER][None])
    latlon = geotiff.center_latlon(ref.path)
    stem = os.path.splitext(os.path.basename(ref.path))[0]
    record = {
        "s2": s2,
        "timestamps": np.zeros((1,), np.int64),
        "location_id": stem,
        "latlon": np.asarray(latlon if latlon is not None else (np.nan, np.nan), np.float32),
        "label": ref.label,
    }
    return stem, record
