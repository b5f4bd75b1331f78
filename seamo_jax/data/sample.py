"""One record -> one training sample (the Grain random map), numpy only.

Order of operations (and of RNG draws, which fixes determinism):
validate -> select seasons -> flip/rot90 the whole tile -> season windows
(config.data.region_selection / region_reading, `crops`) -> crop (+ resize for
"crop_area") -> normalise -> modality dropout -> masks.

Output (one sample, batching adds the leading B), config.data.views = "host":
  views[m]  float32 [S, h, w, C_m]  normalised with the sensor spec
  offsets   int32   [S, 2]          crop origin (row, col) in the augmented tile
  season_ids int32  [S]             record season index of each slot (season-embedding row)
  mask      bool    [S, M, T]       True = masked
  scales    float32 [S]             only for region_reading="crop_area": tile pixels per view pixel
  modality_dropped bool [M]         only when config.data.modality_dropout > 0

config.data.views = "device" (the default) draws the same random numbers in
the same order but leaves cutting, resampling and normalising to the jitted
step (`device_views.materialise`, same views up to float32 rounding): instead
of `views` a sample carries
  tiles[key] [S, h_g, w_g, n_g]  the stored arrays of the selected seasons (`band_groups`)
  boxes      float32 [S, 3]      (row, col, side) of each season's window in the flipped tile
  dihedral   int32 [2]           (k, flip) of `augment.sample_dihedral`
(modality_dropped only flags the views; the step zeroes them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import grain
import numpy as np

from seamo_jax import sensors
from seamo_jax.data import augment, band_groups, crops, masking, records
from seamo_jax.sensors import BadRecordError, SensorSpec


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """The data-config fields a sample transform needs (picklable for workers)."""

    modalities: tuple[str, ...]
    specs: Mapping[str, SensorSpec]
    num_seasons: int
    season_subsample: bool
    crop_size: int
    overlap_range: tuple[float, float]
    region_selection: str
    region_reading: str
    flip: bool
    modality_dropout: float
    patch_size: int
    mask_ratio: float
    shared_mask: bool
    skip_bad_records: bool
    native_resize: bool           # config.data.native_resize: the compiled crop_area resize kernel where it loads
    views: str = "host"           # config.data.views: "host" views, or "device" tiles (module docstring)

    @property
    def num_tokens(self) -> int:
        return masking.num_tokens(self.crop_size, self.patch_size)


def _native_resize_mode(mode: str) -> str:
    if mode not in ("auto", "off"):
        raise ValueError(f"unknown config.data.native_resize {mode!r}; use 'auto' or 'off'")
    return mode


VIEW_PLACES = ("device", "host")


def sample_spec_from_config(config: Any) -> SampleSpec:
    """Reads config.data, config.mask and config.model.patch_size (demo_cpu.py keys)."""
    data = config.data
    modalities = tuple(data.modalities)
    specs = {m: sensors.get_sensor(data.sensors[m]) for m in modalities}
    for m, spec in specs.items():
        if spec.modality != m:
            raise ValueError(f"config.data.sensors[{m!r}] = {spec.name} is a {spec.modality} sensor")
    spec = SampleSpec(
        modalities=modalities,
        specs=specs,
        num_seasons=int(data.seasons),
        season_subsample=bool(data.season_subsample),
        crop_size=int(data.crop_size),
        overlap_range=tuple(float(v) for v in data.overlap_range),
        region_selection=str(data.region_selection),
        region_reading=str(data.region_reading),
        flip=bool(data.flip),
        modality_dropout=float(data.modality_dropout),
        patch_size=int(config.model.patch_size),
        mask_ratio=float(config.mask.ratio),
        shared_mask=bool(config.mask.shared_across_modalities),
        skip_bad_records=bool(data.skip_bad_records),
        native_resize={"auto": True, "off": False}[_native_resize_mode(data.native_resize)],
        views=str(data.views),
    )
    if spec.views not in VIEW_PLACES:
        raise ValueError(f"unknown config.data.views {spec.views!r}; use one of {VIEW_PLACES}")
    _ = spec.num_tokens  # fail at build time, not in a worker, if crop % patch != 0
    crops.validate_region_config(spec.region_selection, spec.region_reading, spec.overlap_range)
    return spec


def _validated(record: Mapping[str, Any], spec: SampleSpec, source: records.IndexedSource | None):
    """Returns None if valid, else a BadRecordMarker (skip) or raises."""
    try:
        records.validate_record(record, spec.specs, record_id=records.describe_record(record, source),
                                min_seasons=spec.num_seasons)
    except BadRecordError as e:
        if spec.skip_bad_records:
            return records.BadRecordMarker(int(record.get(records.SOURCE_INDEX_KEY, -1)), str(e))
        raise
    return None


def _stored_keys(record: Mapping[str, Any], modality: str, spec: SensorSpec) -> list[str]:
    """The record keys holding `modality`: itself (grid layout) or its band groups (native layout)."""
    if band_groups.record_layout(record, modality) == "grid":
        return [modality]
    return [group.key for group in band_groups.native_groups(spec, modality)]


class TrainSampleTransform(grain.transforms.RandomMap):
    """record dict -> sample dict (module docstring); `rng` is Grain's per-record RNG."""

    def __init__(self, spec: SampleSpec, source: records.IndexedSource | None = None):
        self.spec = spec
        self.source = source  # only used to name shards in error messages

    def random_map(self, record: Mapping[str, Any], rng: np.random.Generator):
        spec = self.spec
        marker = _validated(record, spec, self.source)
        if marker is not None:
            return marker
        grid_hw = band_groups.grid_shape(record, spec.modalities[0], spec.specs[spec.modalities[0]])
        seasons = augment.select_seasons(rng, grid_hw[0], spec.num_seasons, spec.season_subsample)
        k, flip = augment.sample_dihedral(rng, grid_hw[1] == grid_hw[2]) if spec.flip else (0, False)
        # Selecting all seasons in order keeps a view; fancy indexing would copy the whole tile.
        in_order = np.array_equal(seasons, np.arange(spec.num_seasons))
        pick = (lambda values: values[:spec.num_seasons]) if in_order else (lambda values: values[seasons])
        tile_hw = (grid_hw[2], grid_hw[1]) if k % 2 else grid_hw[1:3]
        windows = crops.sample_season_windows(rng, tile_hw, spec.crop_size, spec.num_seasons,
                                              selection=spec.region_selection, reading=spec.region_reading,
                                              overlap_range=spec.overlap_range)
        offsets = windows.offsets
        sample: dict[str, Any] = {}
        if spec.views == "device":
            # Undecoded frames (encoded.EncodedArray) pass through: the batch decodes them into its rows.
            sample["tiles"] = {key: pick(records.array_like(record[key])) for m in spec.modalities
                               for key in _stored_keys(record, m, spec.specs[m])}
            sample["boxes"] = np.concatenate([offsets, windows.sizes[:, None]], axis=1).astype(np.float32)
            sample["dihedral"] = np.asarray([k, flip], np.int32)
            views = None
        else:
            tiles = {m: augment.apply_dihedral(pick(band_groups.to_grid(record, m, spec.specs[m])), k, flip)
                     for m in spec.modalities}
            if spec.region_reading == "crop_area":
                views = {m: augment.crop_resize_normalise(tiles[m], offsets, windows.sizes, spec.crop_size,
                                                          spec.specs[m], native=spec.native_resize)
                         for m in spec.modalities}
            else:  # fused crop + convert + normalise: reads only the windows of the raw tile, once
                views = {m: augment.crop_normalise(tiles[m], offsets, spec.crop_size, spec.specs[m])
                         for m in spec.modalities}
        if spec.modality_dropout > 0:
            dropped = augment.sample_modality_dropout(rng, spec.modalities, spec.modality_dropout)
            if views is not None:
                views = augment.drop_views(views, spec.modalities, dropped)
            sample["modality_dropped"] = dropped
        if views is not None:
            sample["views"] = views
        sample["offsets"] = offsets.astype(np.int32)
        sample["season_ids"] = np.asarray(seasons, np.int32)
        if spec.region_reading == "crop_area":
            sample["scales"] = windows.scales(spec.crop_size)
        sample["mask"] = masking.random_token_masks(rng, spec.num_seasons, len(spec.modalities), spec.num_tokens,
                                                    spec.mask_ratio, spec.shared_mask)
        return sample


def eval_sample(record: Mapping[str, Any], spec: SampleSpec, crop: str) -> dict[str, Any]:
    """Deterministic evaluation view of a validated record: first seasons, no flips.

    Args:
      crop: "center" (crop_size window at the tile centre, same for all seasons)
        or "full" (the whole tile, offsets 0).

    Returns:
      views[m] float32 [S, h, w, C_m] normalised, raw_views[m] float32 (same,
      un-normalised, in the sensor's units, for band-statistics baselines),
      offsets int32 [S, 2].
    """
    grids = {m: band_groups.to_grid(record, m, spec.specs[m]) for m in spec.modalities}
    tile_hw = grids[spec.modalities[0]].shape[1:3]
    if crop == "center":
        size = spec.crop_size
        offsets = crops.center_offsets(tile_hw, size, spec.num_seasons)
    elif crop == "full":
        if tile_hw[0] != tile_hw[1]:
            raise ValueError(f"crop='full' needs square tiles, got {tile_hw}")
        size = int(tile_hw[0])
        offsets = np.zeros((spec.num_seasons, 2), np.int32)
    else:
        raise ValueError(f"crop must be 'center' or 'full', got {crop!r}")
    # Values in the sensor's units: quantised storage (sensors.SensorSpec.storage) is dequantised on the crop.
    raw = {m: spec.specs[m].dequantise(crops.crop_windows(grids[m][:spec.num_seasons], offsets, size))
           for m in spec.modalities}
    views = {m: augment.normalise(raw[m], spec.specs[m]) for m in spec.modalities}
    return {"views": views, "raw_views": raw, "offsets": offsets}
