"""Linear / kNN probe on the built-in synthetic seasons data.

    seamo probe --config experiments/probe_synthetic.py --checkpoint runs/demo --out runs/demo/probe
    seamo probe --config experiments/probe_synthetic.py:fast ...        # tests: tiny sizes
    seamo probe --config experiments/probe_synthetic.py:land_cover ...  # land-cover labels

Compares, in one run, the pretrained encoder, a random init of the same
architecture and per-band statistics, on four input sets (S2+S1 x 4 seasons,
S2 only, S1 only, one season), at 1% / 10% / 100% of the training labels,
over 3 seeds. The data/model/mesh sections are those of demo_cpu.py (used
for the random-init encoder when no checkpoint is given; with a checkpoint
its own config defines the architecture).

Label sets (data_pipelines/synthetic_seasons/builder.py):
  * "" / "fast": scene-layout labels (need spatial structure, not band statistics).
  * "land_cover" / "land_cover_fast": the tile's dominant land cover; crop types
    differ in their calendar, flooded / dry vegetation and urban / bare soil in
    SAR, and clouds hide S2 dates. Builds `labels="land_cover"` (its own
    directory, "..._land_cover"); encoders add the texture baseline, input sets
    add S2-only single seasons so the value of the seasons shows.

`get_config(arg)`: "" = the full probe; "fast" = tiny, for tests;
"land_cover" / "land_cover_fast" likewise on the land-cover labels.
"""

import pathlib

import ml_collections

from seamo_jax.configs import load_config_file

VARIANTS = ("", "fast", "land_cover", "land_cover_fast")


def _demo_config(arg: str) -> ml_collections.ConfigDict:
    return load_config_file(f"{pathlib.Path(__file__).with_name('demo_cpu.py')}:{arg}")


def probe_defaults(probe: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills every probe key seamo_jax.evaluate.run_probe reads (documented here, defaults there)."""
    probe.data_dir = ""                      # "" = config.data.data_dir or $SEAMO_DATA_DIR
    probe.manual_dir = ""                    # real builders (eurosat_ms): where the raw files are
    probe.build_dataset = False              # True: build the probe dataset if missing (one process; `seamo demo`)
    probe.num_test = None                    # None = the whole test split
    probe.label_fractions = (0.01, 0.1, 1.0)  # stratified label subsets, saved under <out>/splits
    probe.encoders = ("pretrained", "random_init", "band_stats")  # + "texture" (seamo_jax/evaluate/texture.py)
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
    if arg not in VARIANTS:
        raise ValueError(f"unknown probe_synthetic variant {arg!r}; use one of {VARIANTS}")
    land_cover = arg.startswith("land_cover")
    fast = arg.endswith("fast")
    config = _demo_config("fast" if fast else "")
    probe = probe_defaults(config.probe)
    probe.crop_size = config.data.crop_size
    probe.input_sets = (
        {"name": "S2+S1, 4 seasons", "modalities": ("s2", "s1"), "seasons": (0, 1, 2, 3)},
        {"name": "S2, 4 seasons", "modalities": ("s2",), "seasons": (0, 1, 2, 3)},
        {"name": "S1, 4 seasons", "modalities": ("s1",), "seasons": (0, 1, 2, 3)},
        {"name": "S2+S1, season 0", "modalities": ("s2", "s1"), "seasons": (0,)},
    )
    if land_cover:
        # Pretraining data and probe data: the land-cover tiles (same sizes as the demo's).
        config.data.builder_kwargs.labels = "land_cover"
        probe.builder_kwargs = dict(config.data.builder_kwargs.to_dict())
        probe.encoders = ("pretrained", "random_init", "band_stats", "texture")
        probe.input_sets = probe.input_sets + (
            {"name": "S2, season 1 (spring)", "modalities": ("s2",), "seasons": (1,)},
            {"name": "S2, season 2 (summer)", "modalities": ("s2",), "seasons": (2,)},
        )
    if fast:
        probe.num_train = 48
        probe.num_test = 24
        probe.label_fractions = (0.25, 1.0)
        probe.l2_grid = (1e-3, 1e-1)
        probe.max_iter = 100
        probe.batch_size = 16
    return config
