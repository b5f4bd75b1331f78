"""Records and sources of benchmarks/input_pipeline.py: synthetic, random or the real SSL4EO-S12 location."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from seamo_jax import sensors
from seamo_jax.data import testing


def _ssl4eo_seasons(directory: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The real location's 2 timestamps: S2 L1C native groups {key: uint16 [2, h, w, n]} and S1 float32 dB
    [2, 264, 264, 2] (files in the release's layout, read with tifffile)."""
    import tifffile  # noqa: PLC0415

    from seamo_jax.data import band_groups  # noqa: PLC0415

    root = pathlib.Path(directory)
    s2_dirs = sorted(p for p in (root / "s2c").glob("*/*") if p.is_dir())[:2]
    s1_dirs = sorted(p for p in (root / "s1").glob("*/*") if p.is_dir())[:2]
    if len(s2_dirs) < 2 or len(s1_dirs) < 2:
        raise SystemExit(f"--content ssl4eo: {directory} lacks 2 s2c/<id>/<date> and s1/<id>/<product> folders")
    spec = sensors.S2_L1C
    groups = {}
    for group in band_groups.native_groups(spec, "s2"):
        groups[group.key] = np.stack([np.stack([tifffile.imread(d / f"{spec.bands[i]}.tif")
                                                for i in group.band_indices], -1) for d in s2_dirs])
    s1 = np.stack([np.stack([tifffile.imread(d / f"{b}.tif") for b in ("VV", "VH")], -1) for d in s1_dirs])
    return groups, s1.astype(np.float32)


def _dihedral(values: np.ndarray, index: int) -> np.ndarray:
    """Flip/rotation `index % 8` of [S, H, W, C] (copied, C-contiguous)."""
    out = np.rot90(values, k=index % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if (index // 4) % 2 else out)


def make_records(args: argparse.Namespace, num_classes: int = 4, s2_layout: str = "grid") -> list[dict]:
    """The benchmark's records (float32 S1 dB, uint16 S2 `s2` or native groups), as builders hand them to the
    writer."""
    from seamo_jax.data import band_groups  # noqa: PLC0415

    if args.content == "ssl4eo":
        groups, s1 = _ssl4eo_seasons(args.ssl4eo_dir)
        # Seasons 3-4: the two real timestamps rotated by 90 degrees (real content, not byte copies).
        groups = {k: np.concatenate([v, np.rot90(v, 1, axes=(1, 2))])[:args.seasons] for k, v in groups.items()}
        s1 = np.concatenate([s1, np.rot90(s1, 1, axes=(1, 2))])[:args.seasons]
        records = []
        for i in range(args.num_records):
            mine = {k: _dihedral(v, i) for k, v in groups.items()}
            record = {"s1": _dihedral(s1, i), "timestamps": np.arange(args.seasons, dtype=np.int64) * 86400 * 90,
                      "location_id": f"loc{i}".encode(), "latlon": np.zeros(2, np.float32),
                      "label": np.int64(i % num_classes)}
            if s2_layout == "native":
                record.update(mine)
            else:
                record["s2"] = band_groups.to_grid(mine, "s2", sensors.S2_L1C)
            records.append(record)
        return records
    if args.content == "random":
        return testing.make_records(args.num_records, seed=0, num_classes=num_classes, num_seasons=args.seasons,
                                    tile_size=args.tile, s2_bands=sensors.S2_L1C.num_bands)
    from data_pipelines.synthetic_seasons import generator  # noqa: PLC0415

    records = []
    for i in range(args.num_records):
        tile = generator.generate_tile(0, "train", i, args.tile)
        records.append({"s2": tile["s2"][:args.seasons], "s1": tile["s1"][:args.seasons],
                        "timestamps": tile["timestamps"][:args.seasons], "location_id": f"loc{i}".encode(),
                        "latlon": tile["latlon"], "label": np.int64(i % num_classes)})
    if s2_layout == "native":  # what the synthetic builder stores: coarse bands as block means
        for record in records:
            record.update(band_groups.block_means(record.pop("s2"), sensors.S2_L1C, "s2"))
    return records


class TiledSource:
    """`length` records: record i is `source[i % len(source)]`.

    Grain's shuffle (`index_shuffle`) costs ~1.2 ms of CPU per lookup on a
    32-record index space and ~12 us on SSL4EO-S12's 251,079 (measured
    2026-12-01), so the benchmark's few records are read through an index space
    of the real dataset's size (`--index-space`).
    """

    def __init__(self, source, length: int):
        self.source, self.length = source, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        return self.source[int(index) % len(self.source)]
