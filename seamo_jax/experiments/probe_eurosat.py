"""Linear / kNN probe on EuroSAT-MS (13-band Sentinel-2 L1C, 10 classes), S2-only, one season.

    seamo probe --config probe_eurosat --checkpoint runs/x --out runs/x/probe_eurosat \
        --config.probe.manual_dir=/path/to/EuroSAT_MS
    seamo probe --config probe_eurosat:sample ...   # the 200-tile sample in shared/data

EuroSAT tiles are single images (S = 1), so the encoder sees S2 season 0 at
the full 64 x 64 tile (the position embedding is computed, so any multiple
of the patch size works). "sample": the 200-tile real subset; with 20 tiles
per class a fixed split is too noisy, so train+test are pooled and re-split
(stratified 50/50) per seed, over 5 seeds, and the spread is reported.

`get_config(arg)`: "" = full EuroSAT; "sample" = the 200-tile sample.
"""

import pathlib

import ml_collections

from seamo_jax.experiments import base

# The read-only sample of real EuroSAT-MS tiles beside a source checkout (../shared/data); "" elsewhere,
# then pass --config.probe.manual_dir.
_SAMPLE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "eurosat_ms_sample"
SAMPLE_DIR = str(_SAMPLE) if _SAMPLE.is_dir() else ""


VARIANTS = ("", "sample")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown probe_eurosat variant {arg!r}; use '' or 'sample'")
    config = base.get_config()
    # Without a checkpoint the random-init baseline needs an S2-only architecture.
    config.data.modalities = ("s2",)
    config.data.sensors = ml_collections.ConfigDict({"s2": "s2_l1c"})
    config.model.fusion = "none"
    probe = config.probe
    probe.builder = "eurosat_ms"
    probe.modalities = ("s2",)
    probe.seasons = 1
    probe.input_sets = ({"name": "S2, 1 season", "modalities": ("s2",), "seasons": (0,)},)
    probe.crop = "full"
    probe.crop_size = 64
    if arg == "sample":
        probe.manual_dir = SAMPLE_DIR
        probe.resplit_test_fraction = 0.5
        probe.label_fractions = (1.0,)
        probe.seeds = (0, 1, 2, 3, 4)
    return config
