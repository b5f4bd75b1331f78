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

    def __post_init__(self):
        n = len(self.bands)
        for field in ("gsd_m", "mean", "std"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"SensorSpec {self.name}: {field} has {len(getattr(self, field))} entries, expected {n}")

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
)

SENSORS: dict[str, SensorSpec] = {s.name: s for s in (S2_L1C, S2_L2A, S1_GRD)}

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
    values = np.asarray(values)
    if values.ndim != 4:
        raise BadRecordError(f"{where}: expected [seasons, H, W, bands], got shape {values.shape}")
    if values.shape[-1] != spec.num_bands:
        hint = ""
        other = [s.name for s in SENSORS.values() if s.modality == spec.modality and s.num_bands == values.shape[-1]]
        if other:
            hint = f" (this looks like {other[0]}: L1C has 13 bands incl. B10, L2A has 12)"
        raise BadRecordError(f"{where}: {values.shape[-1]} bands, expected {spec.num_bands} {spec.bands}{hint}")
    if values.dtype != np.dtype(spec.dtype):
        raise BadRecordError(f"{where}: dtype {values.dtype}, expected {spec.dtype} ({spec.units})")
    if num_seasons is not None and values.shape[0] != num_seasons:
        raise BadRecordError(f"{where}: {values.shape[0]} seasons, expected {num_seasons}")
    if spatial_shape is not None and tuple(values.shape[1:3]) != tuple(spatial_shape):
        raise BadRecordError(f"{where}: spatial shape {values.shape[1:3]}, expected {tuple(spatial_shape)}")
    if check_finite and np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise BadRecordError(f"{where}: {bad} non-finite values (NaN/Inf)")


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
