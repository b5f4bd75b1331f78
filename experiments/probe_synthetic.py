"""Linear / kNN probe on the built-in synthetic seasons data (labels need spatial structure).

    seamo probe --config experiments/probe_synthetic.py --checkpoint runs/demo --out runs/demo/probe
    seamo probe --config experiments/probe_synthetic.py:fast ...        # tests: tiny sizes

Compares, in one run, the pretrained encoder, a random init of the same
architecture and per-band statistics, on four input sets (S2+S1 x 4 seasons,
S2 only, S1 only, one season), at 1% / 10% / 100% of the training labels,
over 3 seeds. The data/model/mesh sections are those of demo_cpu.py (used
for the random-init encoder when no checkpoint is given; with a checkpoint
its own config defines the architecture).

`get_config(arg)`: "" = the full probe; "fast" = tiny, for tests.
"""

import pathlib

import ml_collections

from seamo_jax.configs import load_config_file


def _demo_config(arg: str) -> ml_collections.ConfigDict:
    return load_config_file(f"{pathlib.Path(__file__).with_name('demo_cpu.py')}:{arg}")


def probe_defaults(probe: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills every probe key seamo_jax.evaluate.run_probe reads (documented here, defaults there)."""
    probe.data_dir = ""                      # "" = config.data.data_dir or $SEAMO_DATA_DIR
    probe.manual_dir = ""                    # real builders (eurosat_ms): where the raw files are
    probe.build_dataset = False              # True: build the probe dataset if missing (one process; `seamo demo`)
    probe.num_test = None                    # None = the whole test split
    probe.label_fractions = (0.01, 0.1, 1.0)  # stratified label subsets, saved under <out>/splits
    probe.encoders = ("pretrained", "random_init", "band_stats")
    probe.knn_k = 20
    probe.knn_temperature = 0.07
    probe.l2_grid = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    probe.val_fraction = 0.2                 # carved from train (seeded) to choose the L2 weight
    probe.max_iter = 500                     # L-BFGS iterations cap
    probe.tol = 1e-5                         # gradient-norm tolerance
    probe.batch_size = 64                    # feature-extraction global batch
    probe.crop = "center"                    # "center" crop of crop_size, or "full" tile
    probe.pool = "mean"                      # mean of patch tokens, or "cls"
    probe.init_seed = 0                      # random-init encoder seed = init_seed + probe seed
    probe.cache_dir = ""                     # "" = <out>/feature_cache
    probe.out_dir = ""
    probe.resplit_test_fraction = 0.0        # > 0: pool train+test, fresh stratified split per seed
    return probe


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "fast"):
        raise ValueError(f"unknown probe_synthetic variant {arg!r}; use '' or 'fast'")
    config = _demo_config(arg)
    probe = probe_defaults(config.probe)
    probe.crop_size = config.data.crop_size
    probe.input_sets = (
        {"name": "S2+S1, 4 seasons", "modalities": ("s2", "s1"), "seasons": (0, 1, 2, 3)},
        {"name": "S2, 4 seasons", "modalities": ("s2",), "seasons": (0, 1, 2, 3)},
        {"name": "S1, 4 seasons", "modalities": ("s1",), "seasons": (0, 1, 2, 3)},
        {"name": "S2+S1, season 0", "modalities": ("s2", "s1"), "seasons": (0,)},
    )
    if arg == "fast":
        probe.num_train = 48
        probe.num_test = 24
        probe.label_fractions = (0.25, 1.0)
        probe.l2_grid = (1e-3, 1e-1)
        probe.max_iter = 100
        probe.batch_size = 16
    return config
