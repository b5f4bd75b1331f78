"""End-to-end fine-tuning (MAE recipe) on the built-in synthetic seasons data, beside its probe.

    seamo finetune --config finetune_synthetic --checkpoint runs/demo/pretrain    # results beside the probe's
    seamo finetune --config finetune_synthetic:fast ...                          # tests: tiny sizes

The data, input sets (S2+S1 x 4 seasons, S2 only, S1 only, one season),
label fractions (1/10/100%) and seeds (3) are those of probe_synthetic.py,
so finetune_results.json rows compare with probe_results.json rows of the
same checkpoint, subset for subset. The MAE recipe (base.py's finetune
section: AdamW, layer-wise lr decay, drop path, warmup + cosine, label
smoothing, global mean pool + fc_norm) is scaled for the demo's tiny
encoder (4 blocks, width 128) and ~1k labelled tiles:

  batch 64, blr 5e-3 (peak lr 1.25e-3: on the land-cover set, 100 steps from
  the ablation's 150-step SeaMo reached 91.2% / 85.4% top-1 with 100% / 10%
  of the labels at seed 0, the linear probe's 91.2% / 83.0%; blr 1e-3 gave
  76.2% / 72.9% over 3 seeds), 15 epochs with 1 of warmup (an epoch is at
  least one step, so the 1% subset still gets 15 steps),
  layer decay 0.75 (MAE's 0.65 is for 12 blocks; over this 4-block encoder
  0.75 gives the embeddings 0.75^5 = 24% of the head's rate), drop path
  0.05 (DeiT-tiny scale), weight decay 0.05.

`get_config(arg)`: "" = the demo sweep; "fast" = probe_synthetic:fast data and a few steps, for tests;
"land_cover" / "land_cover_fast": the same on probe_synthetic's land-cover labels (and its input sets).
"""

import ml_collections

from seamo_jax.experiments import probe_synthetic

VARIANTS = probe_synthetic.VARIANTS  # "", "fast", "land_cover", "land_cover_fast"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown finetune_synthetic variant {arg!r}; use one of {VARIANTS}")
    config = probe_synthetic.get_config(arg)
    ft = config.finetune
    ft.batch_size = 64
    ft.base_learning_rate = 5e-3
    ft.epochs = 15.0
    ft.warmup_epochs = 1.0
    ft.layer_decay = 0.75
    ft.drop_path = 0.05
    ft.checkpoint_every = 100
    if arg.endswith("fast"):
        ft.batch_size = 16
        ft.num_steps = 6
        ft.warmup_epochs = 2.0  # of 15: 1 warmup step of 6
        ft.checkpoint_every = 3
        ft.log_every = 2
        ft.progress_bar = False
    return config
