"""Synthetic records and a minimal ArrayRecord round trip, for tests and benchmarks.

Not a dataset builder (data_pipelines/ owns those): records follow the schema
of docs/contracts.md section 1 with random content, and are serialised with
`np.savez` (uncompressed) so tests need neither TFDS builders nor TensorFlow.
"""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np


def make_record(
    rng: np.random.Generator,
    *,
    num_seasons: int = 4,
    tile_size: int = 48,
    s2_bands: int = 13,
    with_s1: bool = True,
    label: int | None = None,
    location_id: str = "loc",
) -> dict[str, Any]:
    """A random record: s2 uint16 [S, H, W, C], s1 float32 [S, H, W, 2] (dB), metadata."""
    shape = (num_seasons, tile_size, tile_size)
    record: dict[str, Any] = {
        "s2": rng.integers(0, 10000, size=shape + (s2_bands,), dtype=np.uint16),
        "timestamps": np.arange(num_seasons, dtype=np.int64) * 7_776_000 + 1_600_000_000,
        "location_id": location_id.encode(),
        "latlon": np.asarray([48.0, 11.0], np.float32),
    }
    if with_s1:
        record["s1"] = rng.normal(-15.0, 5.0, size=shape + (2,)).astype(np.float32)
    if label is not None:
        record["label"] = np.int64(label)
    return record


def make_records(num: int, seed: int = 0, num_classes: int = 4, **kwargs) -> list[dict[str, Any]]:
    """`num` random records with labels i % num_classes and location ids "loc{i}"."""
    rng = np.random.default_rng(seed)
    return [make_record(rng, label=i % num_classes, location_id=f"loc{i}", **kwargs) for i in range(num)]


def serialise(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in record.items()})
    return buffer.getvalue()


def deserialise(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data)) as npz:
        record = {k: npz[k] for k in npz.files}
    record["location_id"] = record["location_id"].item()
    return record


def write_array_record_shards(directory: str, records: Sequence[dict[str, Any]], num_shards: int = 2,
                              prefix: str = "records") -> list[str]:
    """Writes records contiguously into `num_shards` files; returns paths."""
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, len(records), num_shards + 1).astype(int)
    paths = []
    for shard in range(num_shards):
        path = os.path.join(directory, f"{prefix}.array_record-{shard:05d}-of-{num_shards:05d}")
        # group_size:1 = one record per chunk, what random access wants (as TFDS writes).
        writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
        for record in records[bounds[shard]:bounds[shard + 1]]:
            writer.write(serialise(record))
        writer.close()
        paths.append(path)
    return paths


class _Shard:
    """FileInstruction-like (filename/skip/take) so opening does not read every file."""

    def __init__(self, filename: str, num_records: int):
        self.filename = filename
        self.skip = 0
        self.take = num_records
        self.examples_in_shard = num_records


class ArrayRecordSource:
    """Random-access source of records over ArrayRecord shards written above.

    Mirrors the TFDS data source layout (`.data_source` is array_record's
    ArrayRecordDataSource), so shard names appear in read errors.
    """

    def __init__(self, paths: Sequence[str], counts: Sequence[int] | None = None):
        from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top

        if counts is not None:
            paths = [_Shard(p, n) for p, n in zip(paths, counts)]
        self.data_source = array_record_data_source.ArrayRecordDataSource(list(paths))

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index) -> dict[str, Any]:
        return deserialise(self.data_source[int(index)])

    def __repr__(self) -> str:
        return f"ArrayRecordSource({len(self)} records)"


class RecordingSource:
    """Wraps a record list; `.read` is the set of indices read so far (which records a pipeline touched)."""

    def __init__(self, recs):
        self.recs, self.read = recs, set()

    def __len__(self):
        return len(self.recs)

    def __getitem__(self, i):
        self.read.add(int(i))
        return self.recs[i]
