"""SeaMo ViT-B/16 on SSL4EO-S12: the paper's progressive pretraining recipe.

Reproduces SeaMo (Li et al., arXiv 2412.19237): Sentinel-1 GRD (VV, VH) +
Sentinel-2 L1C (13 bands) over four seasons, 224-px non-aligned crops of
264-px tiles (crop area and season-to-season overlap in [0.5, 1.0],
data.region_reading = "crop_area"), patch 16, mask ratio
0.75, per-modality MAE decoders (512-d, 8 blocks), norm-pix MSE, S1 + S2
losses summed. Training is progressive:

  phase1: one season per sample (drawn at random; its index travels as
          batch key season_ids), no TM fusion, 20 epochs' worth of steps on
          a fixed 25% of the locations (data.fraction = 0.25).
  phase2: all four seasons with the TM fusion cascade, 200 epochs,
          initialised from phase 1's checkpoint (`config.init_from`).

    seamo data build --config seamo_vitb_ssl4eo:phase2 --data-dir /data/tfds \\
        --manual-dir /data/ssl4eo-s12                                  # once, on one machine
    gcloud storage cp -r /data/tfds gs://b/tfds                        # ArrayRecord is written locally
    seamo pretrain --config seamo_vitb_ssl4eo:phase1 --workdir gs://b/seamo/p1 \\
        --config.data.data_dir=gs://b/tfds
    seamo pretrain --config seamo_vitb_ssl4eo:phase2 --workdir gs://b/seamo/p2 \\
        --config.data.data_dir=gs://b/tfds --config.init_from=gs://b/seamo/p1

Expected cost (estimates, global batch 2048, ~250k locations => ~122
steps/epoch): ViT-B encoder sees 25% of 8 views x 196 tokens (~392 tokens),
the decoders all 1568: ~5e11 training FLOPs per 4-season sample. Phase 2
(24.4k steps, ~5e7 samples) is ~2.5e19 FLOPs: ~2-3 h on 8x H100 or a TPU
v4-32 at 40% MFU; phase 1 (1 season, ~2.4k steps) adds ~3%. Peak memory
with bf16 compute, `dots_with_no_batch_dims_saveable` remat and batch 2048
over 8 devices fits 80 GB per device; on 16 GB v5e chips use >= 64 chips or
grad_accum_steps. Measure your hardware with `benchmarks/train_step.py --model vit_b16 --dtype bfloat16
--seasons 4 --modalities s2,s1 --fusion tm --in-chans 12` (MFU against the chip's peak).

Where the paper leaves a detail open, the default follows (source in brackets):

  model.season_encoding = "per_season"   [paper text] the visible S1 + S2 tokens
      of ONE season form one encoder sequence ([cls] + M*V), seasons folded
      into the batch through shared weights (SiamMAE-style); seasons meet only
      in the TM fusion. "joint" (all seasons in one sequence) is the ablation.
  model.position_frame = "view"          [MAE convention] fixed sin-cos table
      per view from the token's grid index; "tile" measures positions in the
      tile frame from the crop offsets. Chosen by benchmarks/ablation.py
      (docs/ablation.md, 2026-12-01, land_cover synthetic set, same FLOPs,
      3 seeds): linear probe on S2+S1 x 4 seasons view 91.2 +- 0.0 % vs tile
      91.5 +- 3.9 %, kNN 84.2 vs 83.6: no difference within the CI, so the
      MAE convention stays (it also keeps the encoder blind to where crops
      of other seasons sit, which non-aligned cropping means to hide).
  model.tm_carry = "aux_queries"         [paper Fig. 3] the previous season's
      fused tokens, through a Linear, join the current season's queries as
      auxiliary tokens (models/fusion.py says how); "mean_add" adds their mean.
      The fusion blocks' output projections start at zero [our choice, so
      phase 2 starts from phase 1's function].
  mask.ratio = 0.75, independent masks per view
      (mask.shared_across_modalities = False) [MAE convention; the paper text
      we follow does not say S1 and S2 share masks]; the masked count is
      round(ratio*T) with halves up, one rule for data and model
      (seamo_jax/mask_count.py).
  data.modality_dropout = 0.0            [MAE convention: none]; when > 0 the
      dropped views are not scored (batch key modality_dropped).

`get_config(arg)`: "phase1" | "phase2" (default "phase2").
"""

import ml_collections

from seamo_jax.experiments import base

STEPS_PER_EPOCH = 122  # ~250k SSL4EO-S12 locations / global batch 2048


VARIANTS = ("phase1", "phase2")


def get_config(arg: str = "phase2") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown seamo_vitb_ssl4eo variant {arg!r}; use 'phase1' or 'phase2'")
    phase1 = arg == "phase1"
    config = base.get_config()                  # init_from: phase 2 takes phase 1's workdir (command line)

    # ---- data ----
    config.data.builder = "ssl4eo_s12"
    # S2 bands at their native 10/20/60 m sizes, blosc2 frames: 2.96 MB per 4-season location instead of 8.4 MB,
    # decoded into the batch, views made in the step (data.views = "device", base.py); docs/performance.md.
    config.data.builder_kwargs = ml_collections.ConfigDict({"s2_layout": "native", "codec": "blosc2"})
    config.data.seasons = 1 if phase1 else 4
    config.data.season_subsample = phase1       # phase 1: one of the 4 seasons at random
    config.data.crop_size = 224
    # crop_area: 224-px windows of 264-px tiles always overlap >= 0.675, so the paper's [0.5, 1.0] is read as
    # the crop area relative to the tile (CropMAE-style crops resized to 224; crops.py); "overlap" needs >= 290-px tiles.
    config.data.region_selection = "partial"    # paper Table 10: partial is best
    config.data.region_reading = "crop_area"
    config.data.fraction = 0.25 if phase1 else 1.0  # phase 1: a fixed quarter of the locations
    config.data.batch_size = 2048
    config.data.worker_count = 8
    config.data.skip_bad_records = True         # a few SSL4EO-S12 patches are corrupt

    # ---- model ----
    config.model.size = "vit_b16"
    config.model.patch_size = 16
    config.model.num_seasons = 4                # season table sized for phase 2, so phase 1 transfers it
    config.model.fusion = "none" if phase1 else "tm"
    config.model.num_fusion_blocks = 2
    config.model.decoder_dim = 512
    config.model.decoder_depth = 8
    config.model.decoder_heads = 16
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "dots_with_no_batch_dims_saveable"
    config.model.scan_layers = True
    # attention_impl "xla" = jax.nn.dot_product_attention; "cudnn" = flash on GPUs, "pallas_tpu" = flash on TPUs.
    # Multi-slice meshes: mesh.dcn_shape, see seamo_vitl_pod.py.

    # ---- optimiser: MAE recipe, lr = 1.5e-4 * batch / 256 ----
    epochs = 20 if phase1 else 200
    config.optim.learning_rate = 1.5e-4 * config.data.batch_size / 256
    config.optim.warmup_steps = (2 if phase1 else 20) * STEPS_PER_EPOCH
    config.optim.end_lr_ratio = 0.0
    config.optim.clip_grad_norm = 0.0           # MAE trains without clipping

    # ---- loop ----
    config.train.num_steps = epochs * STEPS_PER_EPOCH
    config.train.log_every = 50
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3
    config.train.recon_every = 2000

    # ---- probe (seamo probe): EuroSAT-MS, S2, one season ----
    config.probe.builder = "eurosat_ms"
    config.probe.modalities = ("s2",)
    config.probe.seasons = 1
    return config
