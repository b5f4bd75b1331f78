"""Tiny SeaMo on the built-in synthetic seasons data: the CPU demo.

Reproduces the full SeaMo recipe at toy scale: S1 + S2, 4 seasons,
non-aligned crops across seasons, TM fusion, per-modality MAE decoders
(all base-config defaults). Expected cost: a few minutes on 2 CPU cores
(`seamo demo`).

    seamo data build --config demo_cpu --data-dir runs/tfds
    seamo pretrain --config demo_cpu --workdir runs/demo --config.data.data_dir=runs/tfds
    seamo pretrain --config demo_cpu:fast --workdir /tmp/x ...   # tests

`get_config(arg)`: "" = the demo; "fast" = a few steps, for tests.
"""

import ml_collections

from seamo_jax.experiments import base


VARIANTS = ("", "fast")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown demo_cpu variant {arg!r}; use '' or 'fast'")
    config = base.get_config()
    # data_pipelines/synthetic_seasons: tile size and record counts.
    config.data.builder_kwargs = ml_collections.ConfigDict(
        {"tile_size": 48, "num_train": 1536, "num_test": 512, "seed": 0})
    config.probe.num_train = 1024               # labelled samples used to fit the demo's probe

    if arg == "fast":
        config.data.builder_kwargs.num_train = 64
        config.data.builder_kwargs.num_test = 32
        config.data.batch_size = 16
        config.train.num_steps = 6
        config.train.log_every = 2
        config.train.checkpoint_every = 3
        config.train.recon_every = 6
        config.optim.warmup_steps = 2
        config.probe.num_train = 64
    return config
