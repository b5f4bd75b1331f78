"""Input pipeline throughput vs a bare numpy loop and vs the train step. Prints ONE JSON line.

Full pipeline = read ArrayRecord shards from disk + decode + non-aligned crop
+ flip + normalise + mask + batch (seamo_jax.data.pipeline), on
SSL4EO-S12-sized records (4 seasons x (12 S2-L2A + 2 S1) bands x 264 px,
224-px crops, patch 16). Baseline = a single-threaded numpy crop + normalise
loop over the same records held in memory, in the same run.

    python benchmarks/input_pipeline.py --workers 2
    python benchmarks/input_pipeline.py --sweep 0,1,2,4          # best of the sweep + all points
    python benchmarks/input_pipeline.py --train-samples-per-s 410  # ratio vs a known train step rate

Records are written as in production: the TFDS feature dict of every builder
(`data_pipelines.features.record_features`, image bytes in tf.Example) through
the parallel writer (`data_pipelines.writer`), and read back with TFDS's
ArrayRecord data source (`tfds.builder_from_directory(...).as_data_source`,
what `data_pipelines.registry.load_source` returns), so the pipeline rate
includes TFDS's tf.Example parsing and decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from experiments.demo_cpu import get_config  # noqa: E402
from seamo_jax import sensors  # noqa: E402
from seamo_jax.data import crops, pipeline, testing  # noqa: E402


def _config(args: argparse.Namespace):
    config = get_config()
    config.data.sensors = {"s2": "s2_l2a", "s1": "s1_grd"}
    config.data.seasons = args.seasons
    config.data.crop_size = args.crop
    # The "overlap" reading (crop + normalise, no resize) as measured before; windows of a 224 crop in a 264
    # tile overlap >= 0.675, and an unreachable range is an error (seamo_jax/data/crops.py).
    config.data.overlap_range = (max(0.5, crops.min_feasible_overlap(args.tile, args.crop)), 1.0)
    config.data.batch_size = args.batch_size
    config.data.read_threads = args.read_threads
    config.model.patch_size = args.patch
    return config


def _write_records(args: argparse.Namespace, directory: str) -> tuple[object, list[dict]]:
    """Writes `args.num_records` records as a TFDS ArrayRecord dataset; returns (data source, records)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415  (only the benchmark's writer side needs it here)

    from data_pipelines import writer
    from data_pipelines.features import record_features

    num_classes = 4
    records = testing.make_records(args.num_records, seed=0, num_classes=num_classes, num_seasons=args.seasons,
                                   tile_size=args.tile, s2_bands=12)
    features = record_features(num_seasons=args.seasons, tile_size=args.tile, s2_sensor=sensors.S2_L2A,
                               with_s1=True, class_names=[f"c{i}" for i in range(num_classes)])
    template = writer.split_template(directory, "input_pipeline_bench", "train")
    split = writer.write_split(features, [{k: r[k] for k in features} for r in records], len(records), template,
                               num_shards=max(1, args.num_records // 16), num_workers=1)
    writer.write_metadata(directory, features, [split])
    return tfds.builder_from_directory(directory).as_data_source(split="train"), records


def pipeline_rate(config, source, workers: int, batches: int, warmup: int) -> float:
    """Samples/s of the full Grain pipeline after `warmup` batches (worker start-up excluded)."""
    it = pipeline.make_train_iterator(config, source, shard_index=0, shard_count=1, seed=0,
                                      worker_count=workers)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    elapsed = time.perf_counter() - start
    assert batch["mask"].shape[0] == config.data.batch_size
    if workers:
        it.close()
    return batches * config.data.batch_size / elapsed


def numpy_rate(records: list[dict], args: argparse.Namespace, samples: int) -> float:
    """Bare loop: random crop of every season + normalise both modalities, in memory."""
    rng = np.random.default_rng(0)
    specs = {"s2": sensors.S2_L2A, "s1": sensors.S1_GRD}
    start = time.perf_counter()
    for i in range(samples):
        record = records[i % len(records)]
        y, x = rng.integers(0, args.tile - args.crop + 1, size=2)
        for m, spec in specs.items():
            spec.normalise(record[m][:, y:y + args.crop, x:x + args.crop])
    return samples / (time.perf_counter() - start)


def train_rate(args: argparse.Namespace) -> tuple[float | None, str | None]:
    if args.train_samples_per_s:
        return args.train_samples_per_s, None
    script = REPO_ROOT / "benchmarks" / "train_step.py"
    if not script.exists() or args.skip_train:
        return None, "train_samples_per_s unavailable (benchmarks/train_step.py absent or skipped); " \
                     "pass --train-samples-per-s"
    try:
        command = [sys.executable, str(script), "--model", "vit_b16", "--seasons", str(args.seasons),
                   "--modalities", "s2,s1", "--fusion", "tm", "--img", str(args.crop), "--patch", str(args.patch),
                   "--in-chans", "12", "--batch", "2", "--steps", "2"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=args.train_timeout, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        for key in ("train_samples_per_s", "samples_per_s", "samples_per_sec"):
            if key in result:
                return float(result[key]), None
        return None, f"train_step.py printed no samples/s key: {sorted(result)}"
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError, OSError) as e:
        return None, f"train_step.py failed: {type(e).__name__}: {str(e)[:200]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--sweep", default="", help="comma-separated worker counts, e.g. 0,1,2,4")
    parser.add_argument("--num-records", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--read-threads", type=int, default=2)
    parser.add_argument("--seasons", type=int, default=4)
    parser.add_argument("--tile", type=int, default=264)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--data-dir", default="", help="where to write the shards (default: a temp dir)")
    parser.add_argument("--train-samples-per-s", type=float, default=None)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--train-timeout", type=int, default=900)
    args = parser.parse_args()

    config = _config(args)
    with tempfile.TemporaryDirectory(dir=args.data_dir or None) as directory:
        source, records = _write_records(args, directory)
        worker_counts = [int(w) for w in args.sweep.split(",")] if args.sweep else [args.workers]
        sweep = [{"workers": w, "pipeline_samples_per_s": pipeline_rate(config, source, w, args.batches, args.warmup)}
                 for w in worker_counts]
        base = numpy_rate(records, args, samples=args.batches * args.batch_size)
    best = max(sweep, key=lambda point: point["pipeline_samples_per_s"])
    train, note = train_rate(args)
    result = {
        "pipeline_samples_per_s": round(best["pipeline_samples_per_s"], 2),
        "workers": best["workers"],
        "numpy_samples_per_s": round(base, 2),
        "ratio_vs_numpy": round(best["pipeline_samples_per_s"] / base, 3),
        "batch_size": args.batch_size,
        "record": f"{args.seasons}x({12}+2)x{args.tile}px, crop {args.crop}, patch {args.patch}",
        "cpu_count": os.cpu_count(),
    }
    if train is not None:
        result["train_samples_per_s"] = round(train, 2)
        result["ratio_vs_train"] = round(best["pipeline_samples_per_s"] / train, 3)
    else:
        result["note"] = note
    if len(sweep) > 1:
        result["sweep"] = [{k: round(v, 2) if isinstance(v, float) else v for k, v in p.items()} for p in sweep]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
