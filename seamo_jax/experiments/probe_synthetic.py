"""Linear / kNN probe on the built-in synthetic seasons data.

    seamo probe --config probe_synthetic --checkpoint runs/demo --out runs/demo/probe
    seamo probe --config probe_synthetic:fast ...        # tests: tiny sizes
    seamo probe --config probe_synthetic:land_cover ...  # land-cover labels

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

import ml_collections

from seamo_jax.experiments import demo_cpu

VARIANTS = ("", "fast", "land_cover", "land_cover_fast")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown probe_synthetic variant {arg!r}; use one of {VARIANTS}")
    land_cover = arg.startswith("land_cover")
    fast = arg.endswith("fast")
    config = demo_cpu.get_config("fast" if fast else "")
    probe = config.probe
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
        probe.builder_kwargs = ml_collections.ConfigDict(config.data.builder_kwargs.to_dict())
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
