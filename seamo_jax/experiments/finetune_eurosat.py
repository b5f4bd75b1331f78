"""End-to-end fine-tuning (MAE recipe) on EuroSAT-MS (13-band S2 L1C, 10 classes), beside its probe.

    seamo finetune --config finetune_eurosat --checkpoint runs/p2 --config.probe.manual_dir=/path/to/EuroSAT_MS
    seamo finetune --config finetune_eurosat:sample --checkpoint runs/p2   # the 200-tile sample in shared/data

Data, input set (S2, one season, the full 64 x 64 tile), label fractions
and seeds are those of probe_eurosat.py (its "sample" variant pools the
200 tiles and re-splits them 50/50 per seed, over 5 seeds), so the rows of
finetune_results.json compare with probe_results.json subset for subset.
Recipe: MAE's ViT-B fine-tuning (base.py: blr 5e-4, layer decay 0.65, drop
path 0.1, weight decay 0.05, label smoothing 0.1, 5 warmup epochs, cosine)
with batch 256 (peak lr 5e-4) and 50 epochs: EuroSAT's ~16k training tiles
give 64 steps an epoch at that batch, where MAE's 1024 would give 16.

`get_config(arg)`: "" = full EuroSAT; "sample" = the 200-tile sample (batch 32, 30 epochs, 3 of warmup).
"""

import ml_collections

from seamo_jax.experiments import probe_eurosat

VARIANTS = ("", "sample")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown finetune_eurosat variant {arg!r}; use '' or 'sample'")
    config = probe_eurosat.get_config(arg)
    ft = config.finetune
    ft.batch_size = 256
    ft.epochs = 50.0
    ft.checkpoint_every = 500
    if arg == "sample":
        ft.batch_size = 32
        ft.epochs = 30.0
        ft.warmup_epochs = 3.0
        ft.checkpoint_every = 50
    return config
