"""Input pipeline cost per sample, vs a bare numpy loop and the train step. Prints ONE JSON line.

Full pipeline = read ArrayRecord shards from disk + decode + non-aligned crop
+ flip + normalise + mask + batch (seamo_jax.data.pipeline), on
SSL4EO-S12-sized records as `seamo_vitb_ssl4eo:phase2` reads them (4 seasons
x (13 S2-L1C + 2 S1) bands x 264 px, 224-px "partial" / "crop_area" views,
patch 16). Record content is the synthetic_seasons generator's (textures,
clouds, sensor noise and speckle; `--content random` for uniform noise), or
`--content ssl4eo`: the real SSL4EO-S12 location in
../shared/data/ssl4eo_s12_sample (`--ssl4eo-dir`), its 2 timestamps plus
the same two rotated by 90 degrees as seasons 3-4 and every record a
different flip/rotation of that, so codecs see real Sentinel data (the
synthetic noise is less compressible than real scenes). Reference = a
single-threaded numpy crop + normalise loop over the same records held in
memory, in the same run.

Per storage variant (`--storage`, each written to its own shards and measured
`--repeats` times, order alternating): cpu_ms_per_sample (process CPU time,
read threads and worker processes included, / samples, ArrayRecord to global
batch), bytes_per_sample (shard bytes on disk / records) and
pipeline_samples_per_s (wall), each the best of the repeats (on a shared
machine other processes only add time), with every repeat listed. A variant is "<storage>[+<codec>][+flags]":
S1 storage (default = uint16 dB codes, what new builds write; s1_f32 / s1_f16
/ s1_u16 / s1_u8), ArrayRecord codec (zstd1, zstd3, snappy; default none),
"+native" (S2 bands at their native 10/20/60 m sizes, `band_groups`),
"+blosc2" (every image array a blosc2 frame, `features.Blosc2Tensor`),
"+device" (config.data.views = "device": the host reads records and draws
windows, the jitted step makes the views, so the host CPU measured is all
the host does), "+numpy" for host crop_area views by the numpy resize
instead of the compiled kernel and "+segments" for Grain's new
shared-memory segment per worker batch (config.data.worker_batch_slots =
False) instead of the reused slots of `data/shm_batches.py`, "+arrayrecord"
for array_record's record reader instead of one preadv per record
(`data_pipelines/record_files.py`, config.data.record_reader). The baseline
"s1_f32+numpy+segments+arrayrecord" (builds and pipeline before 2026-12-01) is always
measured; the top-level keys are those
of `--report` (default: the first of `--storage`). "+device" variants also
report `device_views_ms_per_sample`: the jitted views on this process's
default JAX backend (on a CPU-only machine that is the CPU; not part of
cpu_ms_per_sample, which counts the input pipeline).

    python benchmarks/input_pipeline.py                           # default vs baseline
    python benchmarks/input_pipeline.py --storage default,s1_f16,s1_u8,default+numpy,default+zstd1
    python benchmarks/input_pipeline.py --content ssl4eo --storage default+native+blosc2+device,default+device
    python benchmarks/input_pipeline.py --workers 2              # default: 1 worker process, 0 read threads
    python benchmarks/input_pipeline.py --workers 0 --read-threads 2   # everything in this process
    python benchmarks/input_pipeline.py --sweep 0,1,2,4          # best of the sweep + all points
    python benchmarks/input_pipeline.py --train-samples-per-s 410  # ratio vs a known train step rate

Records are written as in production: the TFDS feature dict of every builder
(`data_pipelines.features.record_features`, image bytes in tf.Example) through
the parallel writer (`data_pipelines.writer`), and read back as
`data_pipelines.registry.load_source` reads them (TFDS's ArrayRecord data
source, records parsed by `data_pipelines.example_reader` and decoded by the
TFDS features), so the pipeline rate includes parsing and decoding.

Process layout (default): one Grain worker process reads, transforms and
batches, with no read threads, as `seamo_vitb_ssl4eo` does with 8 workers on
a training host; the CPU counted is the worker's and this process's. Read
threads inside a process add GIL hand-offs (on this 2-core VM ~1-2 CPU-ms
per sample at 2 threads); they pay off only when reads wait on a bucket.
The warm-up lets every worker make its shared-memory slots (a one-off page
fault cost per slot) before measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from seamo_jax.experiments.demo_cpu import get_config  # noqa: E402
from seamo_jax import sensors  # noqa: E402
from seamo_jax.data import crops, pipeline, shm_batches  # noqa: E402

from bench_records import TiledSource, make_records  # noqa: E402  (benchmarks/, this script's folder)


# Storage variants: S1 storage dtype (None = float32 dB) and ArrayRecord codec; "+numpy" = crop_area views by
# the numpy resize instead of the compiled kernel (seamo_jax/data/native_resize.py).
STORAGE = {
    "default": dict(s1_storage=sensors.S1_STORAGE_DTYPE),
    "s1_f32": dict(s1_storage=None),
    "s1_f16": dict(s1_storage="float16"),
    "s1_u16": dict(s1_storage="uint16"),
    "s1_u8": dict(s1_storage="uint8"),
}
CODECS = {"zstd1": "zstd:1", "zstd3": "zstd:3", "snappy": "snappy"}
FLAGS = ("numpy", "native", "blosc2", "device", "segments", "arrayrecord")
BASELINE = "s1_f32+numpy+segments+arrayrecord"  # what builds and the pipeline did before 2026-12-01


def storage_variant(name: str) -> dict:
    """"<storage>[+<codec>][+native][+blosc2][+device][+numpy][+segments][+arrayrecord]", e.g. "s1_u8+zstd1" -> record_features / writer /
    pipeline settings."""
    base, *options = name.split("+")
    if base not in STORAGE or any(o not in CODECS and o not in FLAGS for o in options):
        raise SystemExit(f"unknown storage variant {name!r}: use one of {sorted(STORAGE)} [+ {sorted(CODECS)}] "
                         f"[+ any of {FLAGS}]")
    variant = dict(STORAGE[base], compression="uncompressed", native_resize="numpy" not in options,
                   s2_layout="native" if "native" in options else "grid",
                   codec="blosc2" if "blosc2" in options else "none",
                   views="device" if "device" in options else "host",
                   worker_batch_slots="segments" not in options,
                   record_reader="array_record" if "arrayrecord" in options else "pread")
    for option in options:
        if option in CODECS:
            variant["compression"] = CODECS[option]
    return variant


def _config(args: argparse.Namespace):
    config = get_config()
    config.data.sensors = {"s2": "s2_l1c", "s1": "s1_grd"}
    config.data.seasons = args.seasons
    config.data.crop_size = args.crop
    config.data.region_selection = "partial"
    config.data.region_reading = args.reading
    if args.reading == "overlap":
        # Windows of a 224 crop in a 264 tile overlap >= 0.675; an unreachable range is an error (crops.py).
        config.data.overlap_range = (max(0.5, crops.min_feasible_overlap(args.tile, args.crop)), 1.0)
    else:
        config.data.overlap_range = (0.5, 1.0)  # seamo_vitb_ssl4eo: crop area in [0.5, 1] of the tile
    config.data.batch_size = args.batch_size
    config.data.read_threads = args.read_threads
    config.model.patch_size = args.patch
    return config


def write_records(args: argparse.Namespace, records: list[dict], directory: str, variant: dict) -> None:
    """Writes the records as a TFDS ArrayRecord dataset in `variant`'s storage."""
    from data_pipelines import writer
    from data_pipelines.features import record_features

    features = record_features(num_seasons=args.seasons, tile_size=args.tile, s2_sensor=sensors.S2_L1C,
                               with_s1=True, class_names=[f"c{i}" for i in range(4)],
                               s1_storage=variant["s1_storage"], s2_layout=variant["s2_layout"],
                               codec=variant["codec"])
    template = writer.split_template(directory, "input_pipeline_bench", "train")
    split = writer.write_split(features, [{k: r[k] for k in features} for r in records], len(records), template,
                               num_shards=max(1, args.num_records // 16), num_workers=1,
                               compression=variant["compression"])
    writer.write_metadata(directory, features, [split])


def open_source(directory: str, variant: dict) -> object:
    """The written split as `registry.load_source` opens it (`registry.open_split`; S2 frames undecoded for
    "+device", `lazy_decode`)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415  (only the benchmark's writer side needs it here)

    from data_pipelines import registry  # noqa: PLC0415

    return registry.open_split(tfds.builder_from_directory(directory), "train",
                               lazy_decode=variant["views"] == "device", record_reader=variant["record_reader"])


def bytes_on_disk(directory: str, num_records: int) -> float:
    """Bytes of the ArrayRecord shards per record."""
    total = sum(path.stat().st_size for path in pathlib.Path(directory).rglob("*.array_record-*"))
    return total / num_records


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its live and reaped children (Grain workers)."""
    total = time.process_time() + sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f)
                                      for f in ("ru_utime", "ru_stime"))
    try:
        import psutil  # noqa: PLC0415

        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    except ImportError:
        pass
    return total


def pipeline_rate(config, source, workers: int, batches: int, warmup: int) -> dict:
    """Samples/s (wall) and CPU-ms per sample of the full Grain pipeline after `warmup` batches."""
    it = pipeline.make_train_iterator(config, source, shard_index=0, shard_count=1, seed=0,
                                      worker_count=workers)
    for _ in range(warmup):
        next(it)
    start, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        batch = next(it)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert batch["mask"].shape[0] == config.data.batch_size
    if workers:
        it.close()
    samples = batches * config.data.batch_size
    point = {"pipeline_samples_per_s": samples / elapsed, "cpu_ms_per_sample": 1e3 * cpu / samples}
    if config.data.views == "device":
        point["device_views_ms_per_sample"] = device_views_ms(config, batch)
    return point


def device_views_ms(config, batch: dict, repeats: int = 3) -> float:
    """Milliseconds per sample of the jitted views of one batch on the default JAX backend (best of repeats)."""
    import jax  # noqa: PLC0415

    from seamo_jax.data import device_views  # noqa: PLC0415

    view_spec = device_views.view_spec_from_config(config)
    views = jax.jit(lambda b: device_views.materialise(b, view_spec)["views"])
    placed = jax.device_put(batch)
    jax.block_until_ready(views(placed))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(views(placed))
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / config.data.batch_size


def numpy_rate(records: list[dict], args: argparse.Namespace, samples: int) -> float:
    """Bare loop: random crop of every season + normalise both modalities, in memory."""
    rng = np.random.default_rng(0)
    specs = {"s2": sensors.S2_L1C, "s1": sensors.S1_GRD}
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
                   "--in-chans", "13", "--batch", "2", "--steps", "2"]
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
    parser.add_argument("--workers", type=int, default=1,
                        help="Grain worker processes (config.data.worker_count); 0 = read in this process")
    parser.add_argument("--sweep", default="", help="comma-separated worker counts, e.g. 0,1,2,4")
    parser.add_argument("--storage", default="default",
                        help="comma-separated storage variants besides 'baseline', e.g. s1_f16,s1_u8+zstd1")
    parser.add_argument("--report", default="", help="variant of the top-level keys (default: first of --storage)")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per variant (order alternates)")
    parser.add_argument("--content", choices=("synthetic", "random", "ssl4eo"), default="synthetic")
    parser.add_argument("--ssl4eo-dir", default=str(REPO_ROOT.parent / "shared" / "data" / "ssl4eo_s12_sample"),
                        help="--content ssl4eo: a location folder tree in the SSL4EO-S12 v1 layout (s2c/, s1/)")
    parser.add_argument("--reading", choices=("crop_area", "overlap"), default="crop_area")
    parser.add_argument("--num-records", type=int, default=32)
    parser.add_argument("--index-space", type=int, default=251079,
                        help="records Grain indexes (the written ones, tiled; TiledSource); 0 = just those")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=48,
                        help="measured batches; ~50 or more, so the batches the pipeline buffers (a few) weigh little")
    parser.add_argument("--warmup", type=int, default=None,
                        help="batches before measuring (default: enough for every worker to have made its "
                             "shared-memory slots, a one-off cost)")
    parser.add_argument("--read-threads", type=int, default=0,
                        help="Grain read threads per process (0: worker processes give the parallelism; threads "
                             "in a process only add GIL hand-offs when records are on a local disk)")
    parser.add_argument("--seasons", type=int, default=4)
    parser.add_argument("--tile", type=int, default=264)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--data-dir", default="", help="where to write the shards (default: a temp dir)")
    parser.add_argument("--train-samples-per-s", type=float, default=None)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--train-timeout", type=int, default=900)
    args = parser.parse_args()

    names = [BASELINE] + [n for n in args.storage.split(",") if n and n != BASELINE]
    report = args.report or (names[1] if len(names) > 1 else BASELINE)
    if report not in names:
        raise SystemExit(f"--report {report!r} is not among the measured variants {names}")
    variants = {name: storage_variant(name) for name in names}
    worker_counts = [int(w) for w in args.sweep.split(",")] if args.sweep else [args.workers]
    config = _config(args)
    records = {layout: make_records(args, s2_layout=layout)
               for layout in sorted({variants[n]["s2_layout"] for n in names} | {"grid"})}
    measured: dict[str, dict] = {name: {"points": []} for name in names}
    if args.data_dir:
        os.makedirs(args.data_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.data_dir or None) as root:
        sources, written = {}, {}
        for name in names:
            v = variants[name]
            key = (v["s1_storage"], v["compression"], v["s2_layout"], v["codec"])  # other flags: same shards
            if key not in written:
                directory = os.path.join(root, f"v{len(written)}")
                write_records(args, records[v["s2_layout"]], directory, v)
                written[key] = (directory, bytes_on_disk(directory, args.num_records))
            directory, measured[name]["bytes_per_sample"] = written[key]
            source = open_source(directory, v)
            sources[name] = TiledSource(source, args.index_space) if args.index_space else source
        for repeat in range(args.repeats):
            for name in (names if repeat % 2 == 0 else names[::-1]):  # A B .. then .. B A
                config.data.native_resize = "auto" if variants[name]["native_resize"] else "off"
                config.data.views = variants[name]["views"]
                config.data.worker_batch_slots = variants[name]["worker_batch_slots"]
                for w in worker_counts:
                    warmup = args.warmup if args.warmup is not None else \
                        4 + w * shm_batches.slots_per_worker(config.data.prefetch)
                    point = pipeline_rate(config, sources[name], w, args.batches, warmup)
                    measured[name]["points"].append({"workers": w, "repeat": repeat, **point})
        base = numpy_rate(records["grid"], args, samples=args.batches * args.batch_size)

    def summary(name: str) -> dict:
        points = measured[name]["points"]
        by_workers = {w: [p for p in points if p["workers"] == w] for w in worker_counts}
        # Best of the repeats: other processes on a shared machine only ever add time (cache, SMT, steal).
        best = max(worker_counts, key=lambda w: max(p["pipeline_samples_per_s"] for p in by_workers[w]))
        chosen = by_workers[best]
        return {
            "workers": best,
            "pipeline_samples_per_s": round(max(p["pipeline_samples_per_s"] for p in chosen), 2),
            "cpu_ms_per_sample": round(min(p["cpu_ms_per_sample"] for p in chosen), 3),
            "bytes_per_sample": int(measured[name]["bytes_per_sample"]),
            "repeats": [{"samples_per_s": round(p["pipeline_samples_per_s"], 2),
                         "cpu_ms_per_sample": round(p["cpu_ms_per_sample"], 3)} for p in chosen],
            **({"device_views_ms_per_sample": round(min(p["device_views_ms_per_sample"] for p in chosen), 3)}
               if variants[name]["views"] == "device" else {}),
            **variants[name],
        }

    summaries = {name: summary(name) for name in names}
    top, baseline = summaries[report], summaries[BASELINE]
    train, note = train_rate(args)
    result = {
        "pipeline_samples_per_s": top["pipeline_samples_per_s"],
        "workers": top["workers"],
        "numpy_samples_per_s": round(base, 2),
        "ratio_vs_numpy": round(top["pipeline_samples_per_s"] / base, 3),
        "cpu_ms_per_sample": top["cpu_ms_per_sample"],
        "bytes_per_sample": top["bytes_per_sample"],
        "storage": report,
        "baseline_storage": BASELINE,
        "baseline": {k: baseline[k] for k in ("pipeline_samples_per_s", "cpu_ms_per_sample", "bytes_per_sample")},
        "cpu_ratio_vs_baseline": round(top["cpu_ms_per_sample"] / baseline["cpu_ms_per_sample"], 3),
        "bytes_ratio_vs_baseline": round(top["bytes_per_sample"] / baseline["bytes_per_sample"], 3),
        "variants": summaries,
        "batch_size": args.batch_size,
        "record": f"{args.seasons}x({sensors.S2_L1C.num_bands}+2)x{args.tile}px {args.content}, "
                  f"crop {args.crop} {args.reading}, patch {args.patch}",
        "cpu_count": os.cpu_count(),
    }
    if train is not None:
        result["train_samples_per_s"] = round(train, 2)
        result["ratio_vs_train"] = round(top["pipeline_samples_per_s"] / train, 3)
    else:
        result["note"] = note
    if len(worker_counts) > 1:
        result["sweep"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()}
                           for p in measured[report]["points"]]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
