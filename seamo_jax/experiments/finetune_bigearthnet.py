"""End-to-end fine-tuning (MAE recipe) on BigEarthNet (S2 L2A, optional S1; 19-class multi-label).

    seamo data build --builder bigearthnet --data-dir /data/tfds --manual-dir /data/BigEarthNet   # once
    seamo finetune --config finetune_bigearthnet --checkpoint runs/p2_l2a --config.probe.data_dir=/data/tfds
    seamo finetune --config finetune_bigearthnet:s2_s1 ...        # BigEarthNet-MM: S2+S1, S2 only, S1 only

Multi-label: sigmoid binary cross-entropy over the 19 classes (no label
smoothing), scored as micro mAP (`finetune_micro_map`, the headline, as
Copernicus-Bench / torchgeo report) and macro mAP, with the probe's AP
definition (evaluate/multilabel.py). BigEarthNet is Sentinel-2 L2A (12
bands): the checkpoint must be pretrained on L2A (`ssl4eo_s12` config
l2a); an L1C checkpoint is refused by the sensor check. The 120 x 120
patches are centre-cropped to 112 px (7 x 16 or 14 x 8 patches).
Recipe: base.py's MAE ViT-B recipe with batch 256 (peak lr 5e-4) and
20 epochs (2 of warmup): with ~240k training patches (v2) that is ~19k steps.

`get_config(arg)`: "" = S2 only; "s2_s1" = the S2 + S1 builder config and three input sets.
"""

import ml_collections

from seamo_jax.experiments import base

VARIANTS = ("", "s2_s1")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown finetune_bigearthnet variant {arg!r}; use '' or 's2_s1'")
    with_s1 = arg == "s2_s1"
    config = base.get_config()
    # Without a checkpoint (finetune.encoders=("random_init",)) the architecture comes from here.
    config.data.modalities = ("s2", "s1") if with_s1 else ("s2",)
    config.data.sensors = ml_collections.ConfigDict({"s2": "s2_l2a", "s1": "s1_grd"} if with_s1 else {"s2": "s2_l2a"})
    config.data.seasons = 1
    config.data.crop_size = 112
    config.model.fusion = "tm" if with_s1 else "none"
    config.model.patch_size = 16
    probe = config.probe
    probe.builder = "bigearthnet"
    probe.builder_kwargs = ml_collections.ConfigDict({"config": "s2_s1"} if with_s1 else {})
    probe.train_split, probe.test_split = "train", "test"
    probe.modalities = config.data.modalities
    probe.seasons = 1
    probe.crop = "center"
    probe.crop_size = 112
    probe.input_sets = (({"name": "S2+S1, 1 season", "modalities": ("s2", "s1"), "seasons": (0,)},
                         {"name": "S2, 1 season", "modalities": ("s2",), "seasons": (0,)},
                         {"name": "S1, 1 season", "modalities": ("s1",), "seasons": (0,)}) if with_s1 else
                        ({"name": "S2, 1 season", "modalities": ("s2",), "seasons": (0,)},))
    ft = config.finetune
    ft.batch_size = 256
    ft.epochs = 20.0
    ft.warmup_epochs = 2.0
    ft.label_smoothing = 0.0  # read only by single-label tasks; 0 says so in the results
    ft.checkpoint_every = 1000
    return config
