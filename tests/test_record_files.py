"""data_pipelines/record_files.py: ArrayRecord shards read by one preadv per record, against array_record's reader."""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle

import numpy as np
import pytest
from array_record.python import array_record_module

from data_pipelines import record_files


@dataclasses.dataclass
class Instruction:  # the fields of TFDS's FileInstruction that RecordFiles reads
    filename: str
    skip: int
    take: int


def _write(path, records, options="group_size:1,uncompressed"):
    writer = array_record_module.ArrayRecordWriter(str(path), options)
    for record in records:
        writer.write(record)
    writer.close()


def _reference(path):
    reader = array_record_module.ArrayRecordReader(str(path))
    return [reader.read([i])[0] for i in range(reader.num_records())]


def _records(seed, sizes):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in sizes]


# Sizes around riegeli's 64 KiB blocks (a record's chunk crosses 0, 1 or many block headers), an empty
# record and one of 3 MB (an SSL4EO-S12 record, 46 blocks).
SIZES = [0, 1, 100, 65_536 - 64, 65_536, 65_536 + 17, 200_000, 3_000_000, 5, 131_072]


def test_records_equal_array_records_own_reader_across_block_boundaries(tmp_path):
    paths = [tmp_path / "a.array_record", tmp_path / "b.array_record"]
    _write(paths[0], _records(0, SIZES))
    _write(paths[1], _records(1, SIZES[::-1]))
    expected = _reference(paths[0]) + _reference(paths[1])
    source = record_files.RecordFiles([Instruction(str(p), 0, len(SIZES)) for p in paths])
    assert len(source) == 2 * len(SIZES)
    for i, record in enumerate(expected):
        assert bytes(source[i]) == record, i
    assert [bytes(r) for r in source.__getitems__([19, 0, 7])] == [expected[19], expected[0], expected[7]]
    with pytest.raises(IndexError):
        source[len(expected)]


def test_a_chunk_header_split_by_a_block_header_reads_back(tmp_path):
    """A record of ~64 KiB puts the next chunk's 40-byte header across riegeli's block boundary."""
    straddled = 0
    for first in range(65_390, 65_430, 3):
        path = tmp_path / f"{first}.array_record"
        records = [b"\1" * first, b"\2" * 7, b"\3" * 9]
        _write(path, records)
        shard = record_files._Shard(str(path))
        straddled += record_files.BLOCK_SIZE - record_files.CHUNK_HEADER_SIZE < shard.offsets[1] % record_files.BLOCK_SIZE
        assert [bytes(shard.read(i)) for i in range(3)] == records == _reference(path)
        shard.close()
    assert straddled >= 5  # the case this test is for did occur


def test_file_instructions_skip_and_take_select_the_same_records_as_tfds_would(tmp_path):
    path = tmp_path / "a.array_record"
    _write(path, _records(2, [10, 20, 30, 40, 50, 60]))
    expected = _reference(path)
    source = record_files.RecordFiles([Instruction(str(path), 2, 3), Instruction(str(path), 0, 1)])
    assert [bytes(source[i]) for i in range(len(source))] == expected[2:5] + expected[:1]


def test_buffers_are_reused_only_once_nothing_holds_their_record(tmp_path):
    path = tmp_path / "a.array_record"
    records = _records(3, [300_000] * 6)
    _write(path, records)
    source = record_files.RecordFiles([Instruction(str(path), 0, 6)])
    held = [source[i] for i in range(3)]  # held records keep their buffers: later reads must not overwrite them
    frames = [np.frombuffer(view[10:20], np.uint8) for view in held]  # as the decoders hold slices of them
    for i in range(3, 6):
        assert bytes(source[i]) == records[i]
    assert [bytes(view) for view in held] == records[:3]
    for frame, record in zip(frames, records):
        np.testing.assert_array_equal(frame, np.frombuffer(record[10:20], np.uint8))
    grown = len(source.buffers)
    assert grown == 4  # three held + the one each of the last three reads reused after the previous was dropped
    del held, frames, frame
    gc.collect()
    for _ in range(3):
        for i in range(6):
            assert bytes(source[i]) == records[i]
    assert len(source.buffers) == grown  # free buffers came back; nothing new was allocated


def test_compressed_or_grouped_shards_are_read_by_array_record(tmp_path):
    compressed, grouped = tmp_path / "brotli.array_record", tmp_path / "grouped.array_record"
    records = _records(4, [1000, 70_000, 5])
    _write(compressed, records, "group_size:1")  # array_record's default codec: brotli
    _write(grouped, records, "group_size:2,uncompressed")
    for path in (compressed, grouped):
        with pytest.raises(record_files.UnsupportedShard):
            record_files._Shard(str(path))
        source = record_files.RecordFiles([Instruction(str(path), 0, 3)])
        assert [bytes(source[i]) for i in range(3)] == records
        assert isinstance(source._shards[0], record_files._ArrayRecordShard)


def test_a_truncated_or_overwritten_shard_is_an_error_naming_it(tmp_path):
    path = tmp_path / "a.array_record"
    _write(path, _records(5, [200_000, 200_000]))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.array_record"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="truncated.array_record"):
        record_files.RecordFiles([Instruction(str(truncated), 0, 2)])[0]
    overwritten = tmp_path / "overwritten.array_record"
    chunk = record_files._Shard(str(path)).offsets[0]
    corrupt = bytearray(data)
    corrupt[chunk + 8:chunk + 16] = (10**9).to_bytes(8, "little")  # chunk 0's data size: beyond the file
    overwritten.write_bytes(corrupt)
    with pytest.raises(ValueError, match="overwritten.array_record record 0"):
        record_files.RecordFiles([Instruction(str(overwritten), 0, 2)])[0]


def test_pickled_sources_reopen_their_shards(tmp_path):
    path = tmp_path / "a.array_record"
    records = _records(6, [1000, 2000])
    _write(path, records)
    source = record_files.RecordFiles([Instruction(str(path), 0, 2)])
    assert bytes(source[1]) == records[1]
    again = pickle.loads(pickle.dumps(source))  # what a Grain worker process gets: no fds, no buffers
    assert again._shards == {} and len(again.buffers) == 0
    assert bytes(again[0]) == records[0]


def test_bucket_paths_keep_array_records_reader():
    assert record_files.open_records([Instruction("gs://bucket/x.array_record-00000-of-00001", 0, 3)]) is None
    assert record_files.open_records([]) is None
    local = record_files.open_records([Instruction(os.devnull, 0, 0)])
    assert isinstance(local, record_files.RecordFiles)
