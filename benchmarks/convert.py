"""Conversion throughput: SSL4EO-S12-layout GeoTIFFs -> ArrayRecord with the `ssl4eo_s12` builder.

Generates `--locations` locations in the release layout (4 seasons x (13 S2
L1C band files at 264/132/44 px + VV/VH at 264 px)), converts them with
`Ssl4eoS12(config l1c, num_workers=--workers)`, then writes the same number of
bytes sequentially to a plain file in the same folder as the disk reference.
Prints one JSON line:

  records_per_s   locations converted per second
  mb_per_s        MB (1e6 bytes) of ArrayRecord output per second
  disk_mb_per_s   plain sequential write of the same byte count, same run and disk
  ratio_vs_disk   mb_per_s / disk_mb_per_s (target >= 0.5)

Neither write is fsync'ed (the builder does not fsync either), and the input
files were just written, so they are read from the page cache: this measures
the decode + resample + serialise + write path, not cold storage.

    python benchmarks/convert.py --locations 24 --workers 1
    python benchmarks/convert.py --locations 24 --workers 2
    python benchmarks/convert.py --locations 24 --writer tfds    # TFDS's own writer
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # for tests.fixtures_real_layouts (the layout writer)

import tensorflow_datasets as tfds  # noqa: E402

from data_pipelines.ssl4eo_s12.builder import Ssl4eoS12, Ssl4eoS12Config  # noqa: E402
from tests.fixtures_real_layouts import write_ssl4eo_s12  # noqa: E402


def _dir_bytes(folder: str, suffix: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if suffix in f)
    return total


def sequential_write_mb_per_s(folder: str, num_bytes: int, block: int = 8 * 2**20) -> float:
    """MB/s of writing `num_bytes` to one new file in `folder` in `block`-sized writes."""
    buffer = os.urandom(block)
    path = os.path.join(folder, "disk_reference.bin")
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        written = 0
        while written < num_bytes:
            written += f.write(buffer[: min(block, num_bytes - written)])
    seconds = time.perf_counter() - start
    os.remove(path)
    return num_bytes / 1e6 / seconds


def run(locations: int, workers: int, tile_size: int, work_dir: str | None, writer: str = "parallel") -> dict:
    root = tempfile.mkdtemp(prefix="seamo_convert_", dir=work_dir)
    try:
        manual_dir = os.path.join(root, "raw")
        write_ssl4eo_s12(manual_dir, num_locations=locations, tile_size=tile_size, products=("s2c", "s1"))
        config = Ssl4eoS12.builder_configs["l1c"]
        if tile_size != config.tile_size:
            config = Ssl4eoS12Config(name=f"l1c_t{tile_size}", tile_size=tile_size)
        builder = Ssl4eoS12(data_dir=os.path.join(root, "tfds"), config=config, num_workers=workers, writer=writer)
        start = time.perf_counter()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        seconds = time.perf_counter() - start
        out_bytes = _dir_bytes(os.path.join(root, "tfds"), ".array_record")
        source = builder.as_data_source()["train"]
        assert len(source) == locations and source[0]["s2"].shape == (4, tile_size, tile_size, 13)
        disk = sequential_write_mb_per_s(root, out_bytes)
        mb_per_s = out_bytes / 1e6 / seconds
        return {
            "benchmark": "convert_ssl4eo_s12",
            "workers": workers,
            "writer": writer,
            "locations": locations,
            "tile_size": tile_size,
            "seconds": round(seconds, 3),
            "output_mb": round(out_bytes / 1e6, 1),
            "records_per_s": round(locations / seconds, 2),
            "mb_per_s": round(mb_per_s, 1),
            "disk_mb_per_s": round(disk, 1),
            "ratio_vs_disk": round(mb_per_s / disk, 3),
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tile-size", type=int, default=264)
    parser.add_argument("--writer", choices=("parallel", "tfds"), default="parallel",
                        help="data_pipelines.writer (default) or TFDS's single-process writer, for comparison")
    parser.add_argument("--work-dir", default=None, help="where to write (default: system temp dir)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.locations, args.workers, args.tile_size, args.work_dir, args.writer)))


if __name__ == "__main__":
    main()
