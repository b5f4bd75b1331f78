"""Conversion throughput: records -> ArrayRecord on each build path, against a plain disk write.

Sources (`--source`):
  ssl4eo_s12         (default) `--records` locations generated in the release
                     layout (4 seasons x (13 S2 L1C band files at 264/132/44 px
                     + VV/VH at 264 px)), once, untimed, then converted with
                     `Ssl4eoS12(config l1c)`: GeoTIFF decode + resample + write.
  synthetic_seasons  `SyntheticSeasons(tile_size, 4 seasons)`: generation + write.

Paths (`--paths`, comma-separated, each run `--repeats` times, interleaved):
  local                  the default: data_pipelines.writer (spawned workers,
                         direct tf.Example bytes, `--workers` processes)
  local_tfds_serializer  the same writer with TFDS's ExampleSerializer
                         (synthetic_seasons only: what the direct bytes save)
  tfds                   TFDS's own serial writer (`writer="tfds"`); without
                         TensorFlow it fails on splits over 1 GB (its shuffler
                         spills to temporary buckets through tf.io.gfile)
  beam                   TFDS's Beam path, DirectRunner, `--workers` processes
                         (direct_running_mode=multi_processing)
  beam_tfds_writer       the same with TFDS's default shard writer (brotli)
                         instead of the builders' `_example_writer` (uncompressed)
  beam_in_memory         TFDS's Beam path, DirectRunner in this one process

Every run writes at least `--min-gb` GB (default 2: at ~9.5 MB a record the
page cache cannot hide the disk) into a fresh folder and fsyncs every file it
wrote inside the timed region. The disk reference, once per repeat, writes the
`local` output's byte count (or the first path's) sequentially to one file
in the same folder and fsyncs it. Prints one JSON line:

  paths.<path>.mb_per_s / records_per_s / seconds   one value per repeat
  paths.<path>.ratio_vs_disk                        per repeat, vs that repeat's disk reference
  paths.<path>.spread                               max/min - 1 of mb_per_s over repeats
  disk_mb_per_s                                     per repeat
  ratio_vs_disk                                     mean over repeats, first path (target >= 0.5)
  agree_within_10pct                                every spread (and the disk's) <= 0.10
  paths.<path>.error                                a path that failed (the others still run)

The ssl4eo_s12 inputs were just written, so they are read from the page
cache: this measures decode + resample + serialise + write, not cold storage.
Everything is removed at the end.

    python benchmarks/convert.py                                   # ssl4eo_s12, local, 2 repeats
    python benchmarks/convert.py --source synthetic_seasons --workers 2 \\
        --paths local,local_tfds_serializer,tfds,beam,beam_tfds_writer
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # for tests.fixtures_real_layouts (the layout writer)

import tensorflow_datasets as tfds  # noqa: E402

from data_pipelines import writer as writer_lib  # noqa: E402

PATHS = ("local", "local_tfds_serializer", "tfds", "beam", "beam_tfds_writer", "beam_in_memory")


def _record_bytes(source: str, tile_size: int, work_dir: str | None) -> int:
    """One record's fixed-shape payload, from the builder's feature dict (s2, s1 at their stored dtypes)."""
    import numpy as np

    folder = tempfile.mkdtemp(prefix="seamo_convert_info_", dir=work_dir)
    try:
        features = _builder(source, "local", folder, 2, tile_size, 1).info.features
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total = 0
    for feature in features.values():
        shape = getattr(feature, "shape", ())
        if shape and all(d is not None for d in shape):
            total += math.prod(shape) * np.dtype(feature.np_dtype).itemsize
    return total


def _fsync_tree(folder: str) -> tuple[int, int]:
    """fsyncs every file under `folder`; returns (ArrayRecord bytes, files)."""
    total = files = 0
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            files += 1
            if ".array_record" in name:
                total += os.path.getsize(path)
    return total, files


def sequential_write_mb_per_s(folder: str, num_bytes: int, block: int = 8 * 2**20) -> float:
    """MB/s of writing `num_bytes` to one new file in `folder` in `block`-sized writes, fsync included."""
    buffer = os.urandom(block)
    path = os.path.join(folder, "disk_reference.bin")
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        written = 0
        while written < num_bytes:
            written += f.write(buffer[: min(block, num_bytes - written)])
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    os.remove(path)
    return num_bytes / 1e6 / seconds


def _builder(source: str, path: str, data_dir: str, records: int, tile_size: int, workers: int):
    writer = "tfds" if path == "tfds" else "parallel"
    if source == "synthetic_seasons":
        from data_pipelines.synthetic_seasons.builder import SyntheticSeasons

        return SyntheticSeasons(data_dir=data_dir, tile_size=tile_size, num_train=records - 1, num_test=1,
                                num_workers=workers, writer=writer)
    from data_pipelines.ssl4eo_s12.builder import Ssl4eoS12, Ssl4eoS12Config

    config = Ssl4eoS12.builder_configs["l1c"]
    if tile_size != config.tile_size:
        config = Ssl4eoS12Config(name=f"l1c_t{tile_size}", tile_size=tile_size)
    return Ssl4eoS12(data_dir=data_dir, config=config, num_workers=workers, writer=writer)


def _convert(source: str, path: str, data_dir: str, manual_dir: str | None, records: int, tile_size: int,
             workers: int) -> tuple[float, int, int]:
    """One build on `path` into `data_dir`, fsync'd; returns (seconds, ArrayRecord bytes, records written)."""
    builder = _builder(source, path, data_dir, records, tile_size, workers)
    options: dict = {"manual_dir": manual_dir} if manual_dir else {}
    if path.startswith("beam"):
        from data_pipelines import beam_build

        options["beam_options"] = beam_build.pipeline_options(
            "runner=DirectRunner" if path == "beam_in_memory" else
            f"runner=DirectRunner,direct_num_workers={workers},direct_running_mode=multi_processing")
        if path == "beam_tfds_writer":  # TFDS's default shard writer (ArrayRecord default codec)
            from tensorflow_datasets.core import writer as tfds_writer

            builder._example_writer = lambda: tfds_writer.ExampleWriter(tfds.core.FileFormat.ARRAY_RECORD)
    start = time.perf_counter()
    if path == "local_tfds_serializer":  # what SyntheticSeasons._download_and_prepare does, TFDS's serializer
        plans = [writer_lib.SplitPlan(builder._make_example_fn(split), count,
                                      builder._get_filename_template(split))
                 for split, count in builder._split_sizes().items()]
        os.makedirs(os.fspath(builder.data_path), exist_ok=True)
        infos = writer_lib.write_splits(builder.info.features, plans, num_workers=workers,
                                        compression="uncompressed", fast_serializer=False)
        written = sum(info.num_examples for info in infos)
    else:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**options))
        written = sum(info.num_examples for info in builder.info.splits.values())
    out_bytes, _ = _fsync_tree(data_dir)
    seconds = time.perf_counter() - start
    return seconds, out_bytes, written


def _spread(values: list[float]) -> float:
    return round(max(values) / min(values) - 1, 3) if len(values) > 1 and min(values) > 0 else 0.0


def run(source: str = "ssl4eo_s12", paths: tuple[str, ...] = ("local",), repeats: int = 2, min_gb: float = 2.0,
        workers: int = 1, tile_size: int = 264, work_dir: str | None = None, records: int | None = None) -> dict:
    unknown = set(paths) - set(PATHS)
    if unknown or not paths:
        raise ValueError(f"unknown paths {sorted(unknown)}; choose from {PATHS}")
    if "local_tfds_serializer" in paths and source != "synthetic_seasons":
        raise ValueError("local_tfds_serializer is measured on --source synthetic_seasons")
    if records is None:
        records = max(2, math.ceil(min_gb * 1e9 / _record_bytes(source, tile_size, work_dir)))
    root = tempfile.mkdtemp(prefix="seamo_convert_", dir=work_dir)
    results = {path: {"seconds": [], "mb_per_s": [], "records_per_s": [], "ratio_vs_disk": []} for path in paths}
    disk: list[float] = []
    try:
        manual_dir = None
        if source == "ssl4eo_s12":
            from tests.fixtures_real_layouts import write_ssl4eo_s12

            manual_dir = os.path.join(root, "raw")
            write_ssl4eo_s12(manual_dir, num_locations=records, tile_size=tile_size, products=("s2c", "s1"))
        for _ in range(repeats):
            sizes = {}
            for path in paths:
                data_dir = os.path.join(root, f"tfds_{path}")
                try:
                    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress: stdout is the JSON line
                        seconds, out_bytes, written = _convert(source, path, data_dir, manual_dir, records,
                                                               tile_size, workers)
                except Exception as error:  # noqa: BLE001 - one failing path must not lose the others
                    results[path]["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                    continue
                finally:
                    shutil.rmtree(data_dir, ignore_errors=True)
                if written != records:
                    results[path]["error"] = f"wrote {written} records, expected {records}"
                    continue
                sizes[path] = out_bytes
                results[path]["seconds"].append(round(seconds, 2))
                results[path]["mb_per_s"].append(round(out_bytes / 1e6 / seconds, 1))
                results[path]["records_per_s"].append(round(written / seconds, 2))
                results[path]["output_mb"] = round(out_bytes / 1e6, 1)
            if not sizes:
                continue
            disk.append(round(sequential_write_mb_per_s(root, sizes.get("local", next(iter(sizes.values())))), 1))
            for path in sizes:
                results[path]["ratio_vs_disk"].append(round(results[path]["mb_per_s"][-1] / disk[-1], 3))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for path in paths:
        results[path]["spread"] = _spread(results[path]["mb_per_s"])
    first = results[paths[0]]["ratio_vs_disk"] or [0.0]
    return {
        "benchmark": f"convert_{source}",
        "source": source,
        "workers": workers,
        "tile_size": tile_size,
        "records": records,
        "repeats": repeats,
        "paths": results,
        "disk_mb_per_s": disk,
        "disk_spread": _spread(disk),
        "ratio_vs_disk": round(sum(first) / len(first), 3),
        "agree_within_10pct": all(r["spread"] <= 0.10 and "error" not in r for r in results.values())
        and _spread(disk) <= 0.10,
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("ssl4eo_s12", "synthetic_seasons"), default="ssl4eo_s12")
    parser.add_argument("--paths", default="local", help=f"comma-separated, from {','.join(PATHS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--min-gb", type=float, default=2.0, help="GB (1e9 bytes) each run writes at least")
    parser.add_argument("--records", type=int, default=None, help="records per run (default: from --min-gb)")
    parser.add_argument("--workers", type=int, default=1, help="writer / Beam worker processes")
    parser.add_argument("--tile-size", type=int, default=264)
    parser.add_argument("--work-dir", default=None, help="where to write (default: system temp dir)")
    args = parser.parse_args(argv)
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    print(json.dumps(run(args.source, paths, args.repeats, args.min_gb, args.workers, args.tile_size,
                         args.work_dir, args.records)))


if __name__ == "__main__":
    main()
