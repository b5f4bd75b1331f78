"""ArrayRecord shards read with one `preadv` per record, straight into the record's buffer.

array_record's reader copies a record several times on its way to Python
(chunk, decoded values, a staging string, then `bytes`), hashes it, and
allocates each copy afresh (page faults): a 3 MB SSL4EO-S12 record cost
1.7 CPU-ms alone and the whole worker pipeline 6.7 CPU-ms per sample with it,
4.3 ms with this reader (docs/performance.md, 2026-12-02). The records our writers produce
(`data_pipelines.writer`, the Beam path: `group_size:1`, `uncompressed`) sit in
the file as plain bytes, interrupted only by riegeli's 24-byte block headers
every 64 KiB. `RecordFiles` reads a record's whole chunk with one `os.preadv`
whose buffers skip those headers, so the record arrives in one contiguous
buffer with no copy in user space, and returns a memoryview of it.

Format (riegeli's records_format.md, array_record's layout.proto):
  * a block header (24 bytes) at every multiple of 64 KiB;
  * a chunk: header (40 bytes: header hash, data size, data hash, type, record
    count [7 bytes], decoded size), then its data; a simple chunk (type "r")
    holds a compression byte (0 = none), a varint size, the varint record
    sizes, then the records;
  * the last 64 KiB: the postscript chunk (`RiegeliPostscript`: footer offset,
    magic); at the footer offset a chunk of `RiegeliFooterMetadata` then one
    `ArrayRecordFooter` (chunk offset, decoded size, record count) per chunk.

What it leaves to array_record: a shard with compressed or transposed chunks
or several records per chunk is read by array_record's reader instead
(`UnsupportedShard`, per shard), and `open_records` gives None for bucket
paths (gs://: a read there is a network request, not a page-cache copy) so
the caller keeps array_record's reader. It checks the structure of every
chunk (type, record count, sizes against the footer) but not riegeli's
HighwayHash checksums, which no Python package here computes: a truncated or
overwritten shard still fails with the shard named, a flipped bit inside a
record only in the decoders after it. `config.data.record_reader =
"array_record"` keeps the checksummed path.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
import sys
import threading
from typing import Any, Sequence

import numpy as np

BLOCK_SIZE = 1 << 16
BLOCK_HEADER_SIZE = 24
CHUNK_HEADER_SIZE = 40
SIMPLE_CHUNK = ord("r")
ARRAY_RECORD_MAGIC = 0x71930E704FDAE05E


class UnsupportedShard(ValueError):
    """A shard this reader leaves to array_record (compressed, transposed, grouped or remote)."""


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(buffer):
            raise ValueError("truncated varint")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _proto_varints(message: memoryview) -> dict[int, int]:
    """field number -> value of the varint fields of a serialized proto (others skipped)."""
    fields, position = {}, 0
    while position < len(message):
        key, position = _varint(message, position)
        field, wire = key >> 3, key & 7
        if wire == 0:
            fields[field], position = _varint(message, position)
        elif wire == 1:
            fields[field] = struct.unpack_from("<Q", message, position)[0]
            position += 8
        elif wire == 2:
            size, position = _varint(message, position)
            if field == 1:  # RiegeliFooterMetadata.array_record_metadata: a nested message
                fields[field] = message[position:position + size]
            position += size
        elif wire == 5:
            position += 4
        else:
            raise ValueError(f"unexpected proto wire type {wire}")
    return fields


def _read_logical(fd: int, begin: int, end: int, buffers: BufferPool | None = None) -> memoryview:
    """File bytes [begin, end) without the block headers in that range, read by one preadv.

    Returns a memoryview of a buffer of its own (from `buffers` when given).
    """
    segments, size, position = [], 0, begin  # (is_data, length)
    while position < end:
        in_block = position % BLOCK_SIZE
        if in_block < BLOCK_HEADER_SIZE:  # inside a block header: read into scratch
            length = min(BLOCK_HEADER_SIZE - in_block, end - position)
            segments.append((False, length))
        else:
            length = min(BLOCK_SIZE - in_block, end - position)
            segments.append((True, length))
            size += length
        position += length
    # np.empty, not bytearray(size): a zero fill would touch (and fault in) every page before the read does.
    buffer = buffers.take(size) if buffers is not None else np.empty(size, np.uint8)
    view = memoryview(buffer).cast("B")[:size]
    scratch = memoryview(bytearray(BLOCK_HEADER_SIZE))
    pieces, offset = [], 0
    for is_data, length in segments:
        if is_data:
            pieces.append(view[offset:offset + length])
            offset += length
        else:
            pieces.append(scratch[:length])
    done = 0
    for start in range(0, len(pieces), _IOV_MAX):
        group = pieces[start:start + _IOV_MAX]
        want = sum(len(piece) for piece in group)
        got = os.preadv(fd, group, begin + done)
        if got != want:
            raise ValueError(f"short read: {got} of {want} bytes at offset {begin + done} (truncated file?)")
        done += got
    return view


_IOV_MAX = 1024  # Linux's IOV_MAX: buffers per preadv call (a 32 MiB chunk per call)


class BufferPool:
    """Reused record buffers: a buffer is free again once nothing references it.

    Fresh multi-MB allocations come from mmap or a just-trimmed heap, so every
    read would first page-fault its buffer in (~4 us a page on a VM: ~3 ms for
    a 3 MB record). Records live until their batch is built, so the pool grows
    to the records in flight and stays there. A buffer is free when only the
    pool refers to it: every memoryview or array made from it keeps it
    referenced through the buffer protocol.
    """

    def __init__(self, max_buffers: int = 256):
        self._buffers: list[np.ndarray] = []
        self._max = max_buffers
        self._lock = threading.Lock()

    def take(self, size: int) -> np.ndarray:
        with self._lock:
            for buffer in self._buffers:
                # 3 = the list, this loop's name, getrefcount's argument.
                if buffer.size >= size and sys.getrefcount(buffer) <= 3:
                    return buffer
            buffer = np.empty(-(-size // BLOCK_SIZE) * BLOCK_SIZE, np.uint8)  # rounded up: records vary a little
            if len(self._buffers) < self._max:
                self._buffers.append(buffer)
            return buffer

    def __len__(self) -> int:
        return len(self._buffers)


def _chunk(view: memoryview, where: str) -> tuple[int, int, memoryview]:
    """(chunk type, record count, data) of the chunk at the start of `view` (block headers removed)."""
    if len(view) < CHUNK_HEADER_SIZE:
        raise ValueError(f"{where}: truncated chunk header")
    data_size, = struct.unpack_from("<Q", view, 8)
    chunk_type = view[24]
    num_records = int.from_bytes(view[25:32], "little")
    if CHUNK_HEADER_SIZE + data_size > len(view):
        raise ValueError(f"{where}: chunk data of {data_size} bytes overruns its {len(view)}-byte span")
    return chunk_type, num_records, view[CHUNK_HEADER_SIZE:CHUNK_HEADER_SIZE + data_size]


def _simple_records(data: memoryview, num_records: int, where: str) -> list[memoryview]:
    """The records of an uncompressed simple chunk's data."""
    if not len(data) or data[0] != 0:
        raise UnsupportedShard(f"{where}: compressed chunk (compression type {data[0] if len(data) else None})")
    sizes_size, position = _varint(data, 1)
    sizes_end = position + sizes_size
    sizes = []
    while position < sizes_end:
        size, position = _varint(data, position)
        sizes.append(size)
    if len(sizes) != num_records or position != sizes_end:
        raise ValueError(f"{where}: {len(sizes)} record sizes for {num_records} records")
    records, position = [], sizes_end
    for size in sizes:
        records.append(data[position:position + size])
        position += size
    if position != len(data):
        raise ValueError(f"{where}: records of {position - sizes_end} bytes in {len(data) - sizes_end} bytes of values")
    return records


class _Shard:
    """One ArrayRecord file: its fd and chunk offsets (group_size 1: chunk i holds record i)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self._read_index()
        except BaseException:
            os.close(self.fd)
            raise

    def _read_index(self) -> None:
        size = os.fstat(self.fd).st_size
        if size < BLOCK_SIZE or size % BLOCK_SIZE:
            raise ValueError(f"{self.path}: {size} bytes is not an ArrayRecord file (64 KiB blocks)")
        view = _read_logical(self.fd, size - BLOCK_SIZE, size)
        chunk_type, num, data = _chunk(view, f"{self.path} postscript")
        postscript = _proto_varints(_simple_records(data, num, f"{self.path} postscript")[0])
        if chunk_type != SIMPLE_CHUNK or postscript.get(2) != ARRAY_RECORD_MAGIC or 1 not in postscript:
            raise ValueError(f"{self.path}: no ArrayRecord postscript")
        footer_offset = postscript[1]
        view = _read_logical(self.fd, footer_offset, size - BLOCK_SIZE)
        chunk_type, num, data = _chunk(view, f"{self.path} footer")
        if chunk_type != SIMPLE_CHUNK:
            raise UnsupportedShard(f"{self.path}: footer chunk type {chunk_type}")
        footer = _simple_records(data, num, f"{self.path} footer")
        metadata = _proto_varints(_proto_varints(footer[0]).get(1, memoryview(b"")))
        entries = [_proto_varints(entry) for entry in footer[1:]]
        if metadata.get(1) != 1 or metadata.get(2) != len(entries):
            raise ValueError(f"{self.path}: ArrayRecord footer metadata {metadata}, {len(entries)} chunk entries")
        if any(entry.get(3) != 1 for entry in entries):
            raise UnsupportedShard(f"{self.path}: records grouped in chunks (group_size > 1)")
        self.offsets = [entry[1] for entry in entries] + [footer_offset]
        self.decoded_sizes = [entry.get(2, 0) for entry in entries]
        self.num_records = len(entries)

    def read(self, index: int, buffers: BufferPool | None = None) -> memoryview:
        """Record `index` of this file, a memoryview of a buffer of its own (from `buffers`)."""
        where = f"{self.path} record {index}"
        view = _read_logical(self.fd, self.offsets[index], self.offsets[index + 1], buffers)
        chunk_type, num, data = _chunk(view, where)
        if chunk_type != SIMPLE_CHUNK:
            raise UnsupportedShard(f"{where}: chunk type {chunk_type!r} (transposed?)")
        record, = _simple_records(data, num, where)
        if len(record) != self.decoded_sizes[index]:
            raise ValueError(f"{where}: {len(record)} bytes, the footer says {self.decoded_sizes[index]}")
        return record

    def close(self) -> None:
        os.close(self.fd)


class _ArrayRecordShard:
    """A shard `_Shard` does not read (compressed, transposed, grouped), read by array_record."""

    def __init__(self, path: str):
        from array_record.python import array_record_module  # noqa: PLC0415

        self.path = path
        self._reader = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0,max_parallelism:0")

    def read(self, index: int, buffers: BufferPool | None = None) -> bytes:
        del buffers
        return self._reader.read([index])[0]

    def close(self) -> None:
        self._reader.close()


class RecordFiles:
    """Raw records of a split's shards: `len`, `[i]`, `__getitems__` -> memoryviews (or bytes).

    Args:
      file_instructions: TFDS `FileInstruction`s of the split
        (`info.splits[split].file_instructions`: filename, skip, take), local paths.
    A shard opens on first use (a split can have thousands), in each process
    anew after pickling; a shard this reader does not cover (`UnsupportedShard`)
    is read by array_record instead.
    """

    def __init__(self, file_instructions: Sequence[Any]):
        self._setup([(str(fi.filename), int(fi.skip), int(fi.take)) for fi in file_instructions])

    def _setup(self, instructions: list[tuple[str, int, int]]) -> None:
        self._instructions = instructions
        self._ends = list(itertools.accumulate(take for _, _, take in instructions))
        self._shards: dict[int, _Shard | _ArrayRecordShard] = {}
        self._lock = threading.Lock()
        self.buffers = BufferPool()

    def __getstate__(self):
        return {"instructions": self._instructions}

    def __setstate__(self, state):
        self._setup(state["instructions"])

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _shard(self, number: int) -> _Shard | _ArrayRecordShard:
        shard = self._shards.get(number)
        if shard is None:
            with self._lock:
                shard = self._shards.get(number)
                if shard is None:
                    path = self._instructions[number][0]
                    try:
                        shard = _Shard(path)
                    except UnsupportedShard:
                        shard = _ArrayRecordShard(path)
                    self._shards[number] = shard
        return shard

    def __getitem__(self, index: int) -> memoryview | bytes:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        number = bisect.bisect_right(self._ends, index)
        _, skip, take = self._instructions[number]
        local = skip + index - (self._ends[number] - take)
        shard = self._shard(number)
        try:
            return shard.read(local, self.buffers)
        except UnsupportedShard:  # a chunk the index did not reveal (transposed): array_record from now on
            with self._lock:
                shard.close()
                shard = self._shards[number] = _ArrayRecordShard(shard.path)
            return shard.read(local)

    def __getitems__(self, indices: Sequence[int]) -> list[memoryview | bytes]:
        return [self[i] for i in indices]

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards = {}

    def __repr__(self) -> str:
        return f"RecordFiles({len(self._instructions)} shards, {len(self)} records)"


def open_records(file_instructions: Sequence[Any]) -> RecordFiles | None:
    """`RecordFiles` of a split, or None when a shard is not a local file (gs://: array_record reads it)
    or the platform has no preadv."""
    if not hasattr(os, "preadv") or not file_instructions or any("://" in str(fi.filename)
                                                                  for fi in file_instructions):
        return None
    return RecordFiles(file_instructions)
