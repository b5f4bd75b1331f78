"""Record reading and validation: bad records are named, or counted and skipped.

A record (docs/contracts.md section 1) is checked against the sensor specs of
the configured modalities (shape, band count, dtype, season count, NaN/Inf)
before any augmentation. On failure:

* `skip_bad_records=False`: `BadRecordError` naming the source index, the
  shard file when the source is ArrayRecord-backed, and the field;
* `skip_bad_records=True`: the sample transform returns a `BadRecordMarker`;
  `SkipBadRecordsIterDataset` drops markers before batching and attaches the
  number dropped to the next good element (`skipped_records`), so the count
  crosses Grain worker processes inside the batches; `CountSkippedIterDataset`
  (the last stage) pops it and keeps a running total that is part of the
  iterator state (`TrainIterator.bad_records_skipped`).

A shard that cannot be read (truncated / corrupt ArrayRecord file) always
raises `CorruptShardError` naming the shard file: that is broken data, not one
bad sample.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from typing import Any, Mapping

import grain
import numpy as np

from seamo_jax.data import band_groups
from seamo_jax.sensors import BadRecordError, SensorSpec, validate_array

SOURCE_INDEX_KEY = "_source_index"
SKIPPED_KEY = "skipped_records"


class CorruptShardError(RuntimeError):
    """A shard file of the source cannot be read (truncated or corrupt)."""


@dataclasses.dataclass(frozen=True)
class BadRecordMarker:
    """Stands in for a record that failed validation (skip_bad_records=True)."""

    source_index: int
    message: str


def _array_record_source(source: Any) -> Any | None:
    """The array_record ArrayRecordDataSource under a tfds/grain source, if any."""
    for _ in range(4):  # tfds -> array_record (-> grain wrappers); bounded walk
        if source is None:
            return None
        if hasattr(source, "_read_instructions") and hasattr(source, "_prefix_sums"):
            return source
        source = getattr(source, "data_source", None) or getattr(source, "_data_source", None)
    return None


def shard_of(source: Any, index: int) -> str | None:
    """File name of the ArrayRecord shard holding record `index`, or None."""
    inner = _array_record_source(source)
    if inner is None:
        return None
    try:
        shard = bisect.bisect_right(inner._prefix_sums, int(index))  # pylint: disable=protected-access
        return str(inner._read_instructions[shard].filename)  # pylint: disable=protected-access
    except (IndexError, AttributeError, TypeError):
        return None


def shard_paths(source: Any) -> list[str]:
    """All shard files of an ArrayRecord-backed source ([] otherwise)."""
    inner = _array_record_source(source)
    if inner is None:
        return []
    return [str(ri.filename) for ri in inner._read_instructions]  # pylint: disable=protected-access


def verify_array_record_shards(source: Any) -> None:
    """Opens every shard and checks it holds the records the source expects.

    A truncated ArrayRecord file opens without error but reports fewer records
    (its footer index is gone), so this catches it before training starts.
    Raises CorruptShardError naming the first bad shard.
    """
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

    inner = _array_record_source(source)
    if inner is None:
        return
    for ri in inner._read_instructions:  # pylint: disable=protected-access
        try:
            reader = array_record_module.ArrayRecordReader(str(ri.filename))
            have = reader.num_records()
            reader.close()
        except Exception as e:  # array_record raises bare RuntimeError without the path
            raise CorruptShardError(f"cannot open ArrayRecord shard {ri.filename}: {e}") from e
        if have < ri.end:
            raise CorruptShardError(
                f"ArrayRecord shard {ri.filename} holds {have} readable records, expected >= {ri.end} "
                f"(truncated or corrupt file)")


def fraction_indices(num_records: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Deterministic subset of record indices for `config.data.fraction`.

    The first ceil(fraction * num_records) entries of a permutation seeded by
    `seed` alone, sorted (so reads stay in file order): the same subset on
    every process, every run and every resume, and a larger fraction's subset
    contains a smaller one's (same seed). fraction = 1 gives arange(N).

    Returns:
      int64 [ceil(fraction * num_records)] sorted record indices.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"config.data.fraction must be in (0, 1], got {fraction}")
    num_records = int(num_records)
    if fraction == 1.0:
        return np.arange(num_records, dtype=np.int64)
    count = max(1, math.ceil(fraction * num_records - 1e-9)) if num_records else 0
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EA40F])).permutation(num_records)
    return np.sort(order[:count]).astype(np.int64)


class IndexedSource:
    """Wraps a random-access source: names shards on read errors and tags records.

    `__getitem__(i)` returns the record dict plus `_source_index` (the index
    in the wrapped source, so a later validation error can name the record
    after shuffling). With `indices` (e.g. `fraction_indices`) the wrapper
    exposes only those records: position i reads source record indices[i].
    """

    def __init__(self, source: Any, name: str = "source", indices: np.ndarray | None = None):
        self._source = source
        self._name = name
        self._indices = None if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._source) if self._indices is None else len(self._indices)

    def __getitem__(self, index) -> dict[str, Any]:
        index = int(index) if self._indices is None else int(self._indices[int(index)])
        try:
            record = self._source[index]
        except (KeyboardInterrupt, IndexError):
            raise
        except Exception as e:  # pylint: disable=broad-except
            shard = shard_of(self._source, index)
            where = f"shard {shard}" if shard else f"{self._name} {self._source!r}"
            raise CorruptShardError(f"failed to read record {index} from {where}: {type(e).__name__}: {e}") from e
        record = dict(record)
        record[SOURCE_INDEX_KEY] = index
        return record

    def describe(self, index: int) -> str:
        shard = shard_of(self._source, index)
        return f"{index}" + (f" (shard {shard})" if shard else "")

    def __repr__(self) -> str:
        return f"IndexedSource({self._source!r})"


def array_like(values: Any) -> Any:
    """The value itself when it has a shape and dtype (arrays, undecoded `encoded.EncodedArray` frames)."""
    return values if hasattr(values, "shape") and hasattr(values, "dtype") else np.asarray(values)


def validate_record(
    record: Mapping[str, Any],
    specs: Mapping[str, SensorSpec],
    *,
    record_id: str,
    min_seasons: int = 1,
) -> None:
    """Checks the fields of `specs` (modality -> spec) in one record.

    Each `record[m]` must be [S, H, W, C_m] with the spec's bands and dtype,
    finite, S >= min_seasons; all modalities must share S, H and W (they are
    cropped at the same windows). A native-layout record
    (`band_groups.record_layout`) holds instead one array per resolution group,
    `record[g.key]` [S, H / g.factor, W / g.factor, len(g.band_indices)], each
    checked alike against the spec's bands of that group.

    Raises:
      BadRecordError naming `record_id` and the field (the group key for native records).
    """
    reference = None
    for modality, spec in specs.items():
        try:
            layout = band_groups.record_layout(record, modality)
        except KeyError:
            raise BadRecordError(f"record {record_id!r}: missing field {modality!r} (have {sorted(record)})") from None
        if layout == "native":
            reference = _validate_native(record, modality, spec, record_id, reference, min_seasons)
            continue
        values = array_like(record[modality])
        expected = None if reference is None else reference[1]
        validate_array(values, spec, record_id=record_id, field=modality,
                       num_seasons=None if reference is None else reference[0], spatial_shape=expected)
        if values.shape[0] < min_seasons:
            raise BadRecordError(f"record {record_id!r}, field {modality!r}: {values.shape[0]} seasons, "
                                 f"need >= {min_seasons} (config.data.seasons)")
        if reference is None:
            reference = (values.shape[0], values.shape[1:3])


def _validate_native(record: Mapping[str, Any], modality: str, spec: SensorSpec, record_id: str,
                     reference: tuple[int, tuple[int, int]] | None, min_seasons: int
                     ) -> tuple[int, tuple[int, int]]:
    """Checks every group of a native record; returns (S, (H, W)) of its 10 m grid."""
    groups = band_groups.native_groups(spec, modality)
    missing = [g.key for g in groups if g.key not in record]
    extra = sorted(set(band_groups.group_keys(modality, record)) - {g.key for g in groups})
    if missing or extra:
        raise BadRecordError(f"record {record_id!r}: native {modality!r} groups of {spec.name} are "
                             f"{[g.key for g in groups]}; missing {missing}, unexpected {extra}")
    for group in groups:
        values = array_like(record[group.key])
        if reference is None:  # the finest group (factor 1) sets the grid
            validate_array(values, band_groups.group_spec(spec, group), record_id=record_id, field=group.key)
            reference = (values.shape[0], (values.shape[1] * group.factor, values.shape[2] * group.factor))
            if values.shape[0] < min_seasons:
                raise BadRecordError(f"record {record_id!r}, field {group.key!r}: {values.shape[0]} seasons, "
                                     f"need >= {min_seasons} (config.data.seasons)")
            continue
        (height, width), f = reference[1], group.factor
        if height % f or width % f:
            raise BadRecordError(f"record {record_id!r}, field {group.key!r}: grid {height}x{width} is not "
                                 f"divisible by the group's factor {f}")
        validate_array(values, band_groups.group_spec(spec, group), record_id=record_id, field=group.key,
                       num_seasons=reference[0], spatial_shape=(height // f, width // f))
    return reference


class _SkipBadRecordsIterator(grain.DatasetIterator):
    """Drops BadRecordMarkers; tags the next good element with how many it dropped."""

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)

    def __next__(self) -> dict[str, Any]:
        skipped = 0
        while True:
            element = next(self._parent)
            if isinstance(element, BadRecordMarker):
                skipped += 1
                logging.warning("skipping bad record %d: %s", element.source_index, element.message)
                continue
            element[SKIPPED_KEY] = np.int32(skipped)
            return element

    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)


class SkipBadRecordsIterDataset(grain.IterDataset):
    """Per-element stage (before batching): see module docstring."""

    def __iter__(self) -> _SkipBadRecordsIterator:
        return _SkipBadRecordsIterator(self._parent.__iter__())


class _CountSkippedIterator(grain.DatasetIterator):
    """Pops `skipped_records` [B] from each batch; keeps the running total in its state."""

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)
        self.bad_records_skipped = 0

    def __next__(self) -> dict[str, Any]:
        batch = next(self._parent)
        skipped = batch.pop(SKIPPED_KEY, None)
        if skipped is not None:
            new = int(np.sum(skipped))
            if new:
                self.bad_records_skipped += new
                logging.warning("skipped %d bad records so far", self.bad_records_skipped)
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"pipeline": self._parent.get_state(), "bad_records_skipped": self.bad_records_skipped}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["pipeline"])
        self.bad_records_skipped = int(state["bad_records_skipped"])


class CountSkippedIterDataset(grain.IterDataset):
    """Last stage of the train pipeline: see module docstring."""

    def __iter__(self) -> _CountSkippedIterator:
        return _CountSkippedIterator(self._parent.__iter__())


def describe_record(record: Mapping[str, Any], source: IndexedSource | None) -> str:
    """Human id of a record for error messages: index, shard, location id."""
    index = record.get(SOURCE_INDEX_KEY, "?")
    text = source.describe(index) if (source is not None and isinstance(index, int)) else str(index)
    location = record.get("location_id")
    if location is not None:
        location = location.decode() if isinstance(location, bytes) else str(location)
        text += f" location {location}"
    return text
