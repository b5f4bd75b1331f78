"""Linear / kNN probe on EuroSAT-MS (13-band Sentinel-2 L1C, 10 classes), S2-only, one season.

    seamo probe --config experiments/probe_eurosat.py --checkpoint runs/x --out runs/x/probe_eurosat \
        --config.probe.manual_dir=/path/to/EuroSAT_MS
    seamo probe --config experiments/probe_eurosat.py:sample ...   # the 200-tile sample in shared/data

EuroSAT tiles are single images (S = 1), so the encoder sees S2 season 0 at
the full 64 x 64 tile (the position embedding is computed, so any multiple
of the patch size works). "sample": the 200-tile real subset; with 20 tiles
per class a fixed split is too noisy, so train+test are pooled and re-split
(stratified 50/50) per seed, over 5 seeds, and the spread is reported.

`get_config(arg)`: "" = full EuroSAT; "sample" = the 200-tile sample.
"""

import pathlib

import ml_collections

from seamo_jax.configs import load_config_module

# The read-only sample of real EuroSAT-MS tiles shipped beside the repository (../shared).
SAMPLE_DIR = str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "eurosat_ms_sample")


def _load(name: str, arg: str = "") -> ml_collections.ConfigDict:
    module = load_config_module(pathlib.Path(__file__).with_name(name))
    return module if not arg and name == "probe_synthetic.py" else module.get_config(arg)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "sample"):
        raise ValueError(f"unknown probe_eurosat variant {arg!r}; use '' or 'sample'")
    config = _load("demo_cpu.py", "")
    # Without a checkpoint the random-init baseline needs an S2-only architecture.
    config.data.modalities = ("s2",)
    config.data.sensors = {"s2": "s2_l1c"}
    config.model.fusion = "none"
    probe = _load("probe_synthetic.py").probe_defaults(config.probe)
    probe.builder = "eurosat_ms"
    probe.train_split = "train"
    probe.test_split = "test"
    probe.modalities = ("s2",)
    probe.seasons = 1
    probe.input_sets = ({"name": "S2, 1 season", "modalities": ("s2",), "seasons": (0,)},)
    probe.crop = "full"
    probe.crop_size = 64
    probe.num_train = None
    probe.label_fractions = (0.01, 0.1, 1.0)
    probe.seeds = (0, 1, 2)
    if arg == "sample":
        probe.manual_dir = SAMPLE_DIR
        probe.resplit_test_fraction = 0.5
        probe.label_fractions = (1.0,)
        probe.seeds = (0, 1, 2, 3, 4)
    return config
