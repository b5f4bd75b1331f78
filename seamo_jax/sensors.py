"""Sensor specs: band names and order, dtype, units, GSD and normalisation.

A `SensorSpec` is the single source of truth for what an array of one sensor
looks like. Every record read by the data pipeline and every checkpoint
written by training carries (or is checked against) these specs, so a model
trained on Sentinel-2 L1C with 13 bands cannot silently be evaluated on L2A
data with 12 bands, or on bands in another order.

Normalisation statistics are those published with SSL4EO-S12 (computed on a
50k-location subset), which most S1/S2 foundation models use, so features of
our encoders are comparable with theirs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import numpy as np


class SensorMismatchError(ValueError):
    """Two sensor specs (e.g. checkpoint vs evaluation data) disagree."""


class BadRecordError(ValueError):
    """A record does not match its sensor spec (shape, bands, dtype, values)."""


@dataclasses.dataclass(frozen=True)
class SensorSpec:
    """What one sensor's array looks like on disk and how to normalise it.

    Attributes:
      name: unique id, e.g. "s2_l1c".
      modality: model-side modality key this sensor feeds ("s2" or "s1").
      level: processing level ("L1C", "L2A", "GRD").
      bands: band names in on-disk (= channel) order.
      dtype: numpy dtype name of the stored values.
      units: what the values mean ("reflectance*10000", "dB").
      gsd_m: native ground sampling distance of each band, metres.
      mean, std: per-band normalisation statistics in `units`.
      wavelength_nm: central wavelength per band (None for SAR).
      storage: other on-disk encodings a record may use for this sensor, as
        (dtype, scale, offset): `value = code * scale + offset` in `units`
        (float dtypes: scale 1, offset 0, the values themselves). For integer
        codes the largest code of the dtype marks a non-finite value (a bad
        record, as NaN in `dtype`), and finite values outside
        [offset, offset + (max - 1) * scale] are clipped when quantising.
        The record's array dtype says which encoding it uses
        (docs/contracts.md section 1); readers dequantise with these numbers.
    """

    name: str
    modality: str
    level: str
    bands: tuple[str, ...]
    dtype: str
    units: str
    gsd_m: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    wavelength_nm: tuple[float, ...] | None = None
    storage: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self):
        n = len(self.bands)
        for field in ("gsd_m", "mean", "std"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"SensorSpec {self.name}: {field} has {len(getattr(self, field))} entries, expected {n}")
        for dtype, scale, offset in self.storage:
            kind = np.dtype(dtype).kind
            if kind not in "uif" or dtype == self.dtype or (kind == "f" and (scale, offset) != (1.0, 0.0)) \
                    or not scale > 0:
                raise ValueError(f"SensorSpec {self.name}: bad storage encoding {(dtype, scale, offset)}")

    @property
    def storage_dtypes(self) -> tuple[str, ...]:
        """dtypes a record of this sensor may hold: `dtype`, then the `storage` encodings."""
        return (self.dtype,) + tuple(dtype for dtype, _, _ in self.storage)

    def encoding(self, dtype) -> tuple[float, float]:
        """(scale, offset) of records stored as `dtype`: value = code * scale + offset."""
        name = np.dtype(dtype).name
        if name == self.dtype:
            return 1.0, 0.0
        for stored, scale, offset in self.storage:
            if stored == name:
                return float(scale), float(offset)
        raise KeyError(f"sensor {self.name} has no {name} storage; it stores {self.storage_dtypes}")

    def quantise(self, values: np.ndarray, dtype) -> np.ndarray:
        """Values in `units` -> codes of storage `dtype` (rounded; non-finite -> the reserved code; clipped)."""
        dtype = np.dtype(dtype)
        scale, offset = self.encoding(dtype)
        values = np.asarray(values)
        if dtype.kind == "f" or dtype.name == self.dtype:
            return values.astype(dtype)
        top = np.iinfo(dtype).max
        codes = np.rint((values.astype(np.float64) - offset) / scale)
        finite = np.isfinite(codes)
        codes = np.clip(np.where(finite, codes, 0), 0, top - 1).astype(dtype)
        codes[~finite] = top
        return codes

    def dequantise(self, codes: np.ndarray) -> np.ndarray:
        """Stored array (any encoding of this sensor) -> float32 values in `units` (non-finite code -> NaN)."""
        codes = np.asarray(codes)
        scale, offset = self.encoding(codes.dtype)
        if codes.dtype.kind == "f" or codes.dtype.name == self.dtype:
            return codes.astype(np.float32)
        values = codes.astype(np.float32) * np.float32(scale) + np.float32(offset)
        values[codes == np.iinfo(codes.dtype).max] = np.nan
        return values

    def normaliser(self, dtype=None) -> tuple[np.ndarray, np.ndarray]:
        """float32 [C] (m, s) with (code - m) / s = (value - mean) / std for records stored as `dtype`.

        The dequantisation is folded into the constants (m = (mean - offset) / scale,
        s = std / scale), so normalising quantised codes costs what normalising
        `dtype` values does; results agree with dequantise-then-normalise
        within float32 rounding.
        """
        scale, offset = (1.0, 0.0) if dtype is None else self.encoding(dtype)
        mean = (np.asarray(self.mean, np.float64) - offset) / scale
        std = np.asarray(self.std, np.float64) / scale
        return mean.astype(np.float32), std.astype(np.float32)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    def band_index(self, band: str) -> int:
        try:
            return self.bands.index(band)
        except ValueError:
            raise KeyError(f"sensor {self.name} has no band {band!r}; bands are {self.bands}") from None

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """(x - mean) / std per band, channels last. Returns float32."""
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return (values.astype(np.float32) - mean) / std

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float32) * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SensorSpec":
        d = dict(d)
        for key in ("bands", "gsd_m", "mean", "std", "wavelength_nm"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        d["storage"] = tuple((str(t), float(sc), float(of)) for t, sc, of in d.get("storage") or ())
        return cls(**d)


_S2_L1C_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
_S2_L1C_GSD = (60.0, 10.0, 10.0, 10.0, 20.0, 20.0, 20.0, 10.0, 20.0, 60.0, 60.0, 20.0, 20.0)
_S2_L1C_WAVELENGTH = (443.0, 490.0, 560.0, 665.0, 705.0, 740.0, 783.0, 842.0, 865.0, 945.0, 1375.0, 1610.0, 2190.0)
_L2A_KEEP = tuple(i for i, b in enumerate(_S2_L1C_BANDS) if b != "B10")  # L2A drops the cirrus band

S2_L1C = SensorSpec(
    name="s2_l1c",
    modality="s2",
    level="L1C",
    bands=_S2_L1C_BANDS,
    dtype="uint16",
    units="reflectance*10000",
    gsd_m=_S2_L1C_GSD,
    mean=(1605.57504906, 1390.78157673, 1314.8729939, 1363.52445545, 1549.44374991, 2091.74883118, 2371.7172463,
          2299.90463006, 2560.29504086, 830.06605044, 22.10351321, 2177.07172323, 1524.06546312),
    std=(786.78685367, 850.34818441, 875.06484736, 1138.84957046, 1122.17775652, 1161.59187054, 1274.39184232,
         1248.42891965, 1345.52684884, 577.31607053, 51.15431158, 1336.09932639, 1136.53823676),
    wavelength_nm=_S2_L1C_WAVELENGTH,
)

S2_L2A = SensorSpec(
    name="s2_l2a",
    modality="s2",
    level="L2A",
    bands=tuple(_S2_L1C_BANDS[i] for i in _L2A_KEEP),
    dtype="uint16",
    units="reflectance*10000",
    gsd_m=tuple(_S2_L1C_GSD[i] for i in _L2A_KEEP),
    mean=(752.40087073, 884.29673756, 1144.16202635, 1297.47289228, 1624.90992062, 2194.6423161, 2422.21248945,
          2517.76053101, 2581.64687018, 2645.51888987, 2368.51236873, 1805.06846033),
    std=(1108.02887453, 1155.15170768, 1183.6292542, 1368.11351514, 1370.265037, 1355.55390699, 1416.51487101,
         1474.78900051, 1439.3086061, 1582.28010962, 1455.52084939, 1343.48379601),
    wavelength_nm=tuple(_S2_L1C_WAVELENGTH[i] for i in _L2A_KEEP),
)

# S1 storage: builds write uint16 codes of dB (S1_STORAGE_DTYPE, data_pipelines/features.py),
# step 0.002 dB over [-80, 51.068] dB (error <= 0.001 dB, against a band std of ~5 dB
# and float16's 0.016 dB step at |x| >= 16); code 65535 = non-finite. float32 records
# (older builds) and float16 / uint8 (step 0.35 dB over [-60, 28.9] dB) read as well.
S1_STORAGE_DTYPE = "uint16"
S1_GRD = SensorSpec(
    name="s1_grd",
    modality="s1",
    level="GRD",
    bands=("VV", "VH"),
    dtype="float32",
    units="dB",
    gsd_m=(10.0, 10.0),
    mean=(-12.54847273, -20.19237134),
    std=(5.25697717, 5.91150917),
    storage=(("uint16", 0.002, -80.0), ("float16", 1.0, 0.0), ("uint8", 0.35, -60.0)),
)

# ---- SSL4EO-S12 re-releases: same bands, other encodings and statistics ----------
#
# SSL4EO-S12 v1.1 (zarr.zip shards; DLR-MF-DAS/SSL4EO-S12-v1.1 README and
# zarr_dataset.py): S2 is int16 *with the +1000 offset* of ESA processing
# baseline 04.00 kept in the values (zarr_dataset.py: "These S2 mean statistics
# include a +1000 offset to align with the newest ESA processing version"), so a
# v1.1 pixel is reflectance*10000 + 1000 and its statistics differ from v1's by
# about +1000 (means) and slightly (stds). The builder stores these values as
# uint16 unchanged (negative values are refused), so the record format is v1's.
# S1 is float16 dB (stored as float32); its statistics are the release's too.
S2_L1C_V11 = dataclasses.replace(
    S2_L1C, name="s2_l1c_v11", units="reflectance*10000+1000",
    mean=(2607.345, 2393.068, 2320.225, 2373.963, 2562.536, 3110.071, 3392.832, 3321.154, 3583.77, 1838.712,
          1021.753, 3205.112, 2545.798),
    std=(786.523, 849.702, 875.318, 1143.578, 1126.248, 1161.98, 1273.505, 1246.79, 1342.755, 576.795, 45.626,
         1340.347, 1145.036))
S2_L2A_V11 = dataclasses.replace(
    S2_L2A, name="s2_l2a_v11", units="reflectance*10000+1000",
    mean=(1793.243, 1924.863, 2184.553, 2340.936, 2671.402, 3240.082, 3468.412, 3563.244, 3627.704, 3711.071,
          3416.714, 2849.625),
    std=(1160.144, 1201.092, 1219.943, 1397.225, 1400.035, 1373.136, 1429.17, 1485.025, 1447.836, 1652.703,
         1471.002, 1365.307))
S1_GRD_V11 = dataclasses.replace(S1_GRD, name="s1_grd_v11", mean=(-12.577, -20.265), std=(5.179, 5.872))

# SSL4EO-S12's 8-bit compressed release (zhu-xlab/SSL4EO-S12 README, mediaTUM
# 1702379): "the raw 16/32-bit values are normalized by mean and std and
# converted to uint8, plus a default geotiff JPEG compression with quality 75",
# with the reference loader's `normalize`: v = uint8(clip(255 * (x - (m - 2s)) /
# (4s), 0, 255)) (truncation), m / s the v1 statistics of the band (S2_L1C,
# S2_L2A, S1_GRD above). Records keep the uint8 values. Their normalisation
# statistics are derived from that encoding, not measured: mean 127.0 (127.5
# minus the 0.5 lost to truncation) and std 255 / 4 = 63.75, so `normalise`
# gives (x - m) / s of the 16-bit value within quantisation for |z| < 2 (the
# encoding clips beyond), i.e. the same inputs a model sees from s2_l1c / s1_grd.
UINT8_SCALE_MEAN, UINT8_SCALE_STD = 127.0, 63.75


def _uint8_of(spec: SensorSpec) -> SensorSpec:
    units = f"uint8 = 255*(x-(m-2s))/(4s) clipped, x in {spec.units}, m/s of {spec.name}"
    return dataclasses.replace(spec, name=f"{spec.name}_uint8", dtype="uint8", units=units, storage=(),
                               mean=(UINT8_SCALE_MEAN,) * spec.num_bands, std=(UINT8_SCALE_STD,) * spec.num_bands)


S2_L1C_UINT8 = _uint8_of(S2_L1C)
S2_L2A_UINT8 = _uint8_of(S2_L2A)
S1_GRD_UINT8 = _uint8_of(S1_GRD)

SENSORS: dict[str, SensorSpec] = {s.name: s for s in (S2_L1C, S2_L2A, S1_GRD, S2_L1C_V11, S2_L2A_V11, S1_GRD_V11,
                                                      S2_L1C_UINT8, S2_L2A_UINT8, S1_GRD_UINT8)}

# RGB composite band names per modality, used for pictures.
RGB_BANDS = {"s2": ("B4", "B3", "B2"), "s1": ("VV", "VH", "VV/VH")}


def get_sensor(name: str) -> SensorSpec:
    try:
        return SENSORS[name]
    except KeyError:
        raise KeyError(f"unknown sensor {name!r}; known: {sorted(SENSORS)}") from None


def validate_array(
    values: np.ndarray,
    spec: SensorSpec,
    *,
    record_id: str,
    field: str,
    num_seasons: int | None = None,
    spatial_shape: Sequence[int] | None = None,
    check_finite: bool = True,
) -> None:
    """Checks one record field `[seasons, H, W, bands]` against `spec`.

    Raises BadRecordError naming the record and field on: wrong rank, band
    count, dtype, season count, spatial shape, or non-finite values.
    """
    where = f"record {record_id!r}, field {field!r} (sensor {spec.name})"
    if not (hasattr(values, "shape") and hasattr(values, "dtype")):  # an undecoded frame keeps its shape / dtype
        values = np.asarray(values)
    dtype = np.dtype(values.dtype)
    dtype_name = dtype.name  # numpy builds this string on every access: once per call (runs per record)
    if values.ndim != 4:
        raise BadRecordError(f"{where}: expected [seasons, H, W, bands], got shape {values.shape}")
    if values.shape[-1] != spec.num_bands:
        hint = ""
        other = [s.name for s in SENSORS.values() if s.modality == spec.modality and s.num_bands == values.shape[-1]]
        if other:
            hint = f" (this looks like {other[0]}: L1C has 13 bands incl. B10, L2A has 12)"
        raise BadRecordError(f"{where}: {values.shape[-1]} bands, expected {spec.num_bands} {spec.bands}{hint}")
    if dtype_name not in spec.storage_dtypes:
        stored = " or ".join(spec.storage_dtypes)
        raise BadRecordError(f"{where}: dtype {values.dtype}, expected {stored} ({spec.units})")
    if num_seasons is not None and values.shape[0] != num_seasons:
        raise BadRecordError(f"{where}: {values.shape[0]} seasons, expected {num_seasons}")
    if spatial_shape is not None and tuple(values.shape[1:3]) != tuple(spatial_shape):
        raise BadRecordError(f"{where}: spatial shape {values.shape[1:3]}, expected {tuple(spatial_shape)}")
    if check_finite and dtype.kind == "f" and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise BadRecordError(f"{where}: {bad} non-finite values (NaN/Inf)")
    if check_finite and dtype_name != spec.dtype and dtype.kind in "ui":
        top = np.iinfo(dtype).max  # quantised storage: the reserved code marks a non-finite value
        if values.max(initial=0) == top:
            bad = int((values == top).sum())
            raise BadRecordError(f"{where}: {bad} non-finite values (NaN/Inf, stored as code {top})")


def check_compatible(trained: Mapping[str, SensorSpec], evaluated: Mapping[str, SensorSpec]) -> None:
    """Raises SensorMismatchError when data for a modality differs from training.

    `trained` / `evaluated` map modality -> spec. Only modalities present in
    both are compared; bands, order, level and units must agree.
    """
    for modality, spec in evaluated.items():
        if modality not in trained:
            raise SensorMismatchError(
                f"modality {modality!r} ({spec.name}) was not seen in training; trained on {sorted(trained)}")
        ref = trained[modality]
        problems = []
        if ref.level != spec.level:
            problems.append(f"level {spec.level} vs trained {ref.level}")
        if ref.bands != spec.bands:
            problems.append(f"bands {spec.bands} vs trained {ref.bands}")
        if ref.units != spec.units:
            problems.append(f"units {spec.units} vs trained {ref.units}")
        if problems:
            raise SensorMismatchError(f"modality {modality!r}: " + "; ".join(problems))


def specs_to_json(specs: Mapping[str, SensorSpec]) -> str:
    """Serialises modality -> spec (written as sensors.json in checkpoints)."""
    return json.dumps({m: s.to_dict() for m, s in specs.items()}, indent=2)


def specs_from_json(text: str) -> dict[str, SensorSpec]:
    return {m: SensorSpec.from_dict(d) for m, d in json.loads(text).items()}
