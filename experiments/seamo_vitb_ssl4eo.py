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

    seamo data build --config experiments/seamo_vitb_ssl4eo.py:phase2 --data-dir /data/tfds \\
        --manual-dir /data/ssl4eo-s12                                  # once, on one machine
    gcloud storage cp -r /data/tfds gs://b/tfds                        # ArrayRecord is written locally
    seamo pretrain --config experiments/seamo_vitb_ssl4eo.py:phase1 --workdir gs://b/seamo/p1 \\
        --config.data.data_dir=gs://b/tfds
    seamo pretrain --config experiments/seamo_vitb_ssl4eo.py:phase2 --workdir gs://b/seamo/p2 \\
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

STEPS_PER_EPOCH = 122  # ~250k SSL4EO-S12 locations / global batch 2048


def get_config(arg: str = "phase2") -> ml_collections.ConfigDict:
    if arg not in ("phase1", "phase2"):
        raise ValueError(f"unknown seamo_vitb_ssl4eo variant {arg!r}; use 'phase1' or 'phase2'")
    phase1 = arg == "phase1"
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.init_from = ""                       # phase 2: phase 1's workdir (set on the command line)

    # ---- data ----
    config.data = ml_collections.ConfigDict()
    config.data.builder = "ssl4eo_s12"
    config.data.data_dir = ""                   # "" = $SEAMO_DATA_DIR or <workdir>/tfds
    config.data.manual_dir = ""                 # extracted SSL4EO-S12 release, needed the first time
    config.data.builder_kwargs = {}
    config.data.split = "train"
    config.data.modalities = ("s2", "s1")
    config.data.sensors = {"s2": "s2_l1c", "s1": "s1_grd"}
    config.data.seasons = 1 if phase1 else 4
    config.data.season_subsample = phase1       # phase 1: one of the 4 seasons at random
    config.data.crop_size = 224
    config.data.overlap_range = (0.5, 1.0)
    # crop_area: 224-px windows of 264-px tiles always overlap >= 0.675, so the paper's [0.5, 1.0] is read as
    # the crop area relative to the tile (CropMAE-style crops resized to 224; crops.py); "overlap" needs >= 290-px tiles.
    config.data.region_selection = "partial"    # same | partial | disjoint (paper Table 10: partial is best)
    config.data.region_reading = "crop_area"    # overlap | crop_area
    config.data.fraction = 0.25 if phase1 else 1.0  # phase 1: a fixed quarter of the locations
    config.data.fraction_seed = 0               # seeds the record subset of `fraction`
    config.data.flip = True
    config.data.modality_dropout = 0.0
    config.data.batch_size = 2048
    config.data.worker_count = 8
    config.data.prefetch = 2
    config.data.skip_bad_records = True         # a few SSL4EO-S12 patches are corrupt
    config.data.shuffle_seed = 0

    # ---- masking ----
    config.mask = ml_collections.ConfigDict()
    config.mask.ratio = 0.75
    config.mask.shared_across_modalities = False  # independent masks per view (MAE convention; paper: not stated)

    # ---- model ----
    config.model = ml_collections.ConfigDict()
    config.model.name = "seamo"
    config.model.size = "vit_b16"
    config.model.patch_size = 16
    config.model.num_seasons = 4                # season table sized for phase 2, so phase 1 transfers it
    config.model.fusion = "none" if phase1 else "tm"
    config.model.num_fusion_blocks = 2
    config.model.decoder_dim = 512
    config.model.decoder_depth = 8
    config.model.decoder_heads = 16
    config.model.norm_pix_loss = True
    config.model.season_encoding = "per_season"  # paper text: each season its own sequence (see docstring)
    config.model.position_frame = "view"        # MAE convention; ablation: view = tile within the CI (docs/ablation.md)
    config.model.tm_carry = "aux_queries"       # paper Fig. 3
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "dots_with_no_batch_dims_saveable"
    config.model.scan_layers = True
    config.model.attention_impl = "xla"         # jax.nn.dot_product_attention; "cudnn" = flash on GPUs, "pallas_tpu" = flash on TPUs
    config.model.cpu_kernels = "auto"           # CPU kernels only on 1-device fp32 CPU runs (never with bf16): models/backend.py

    # ---- parallelism: data parallel with params/opt state sharded over fsdp ----
    config.mesh = ml_collections.ConfigDict()
    config.mesh.shape = (-1, 1, 1)
    config.mesh.axes = ("data", "fsdp", "model")
    config.mesh.dcn_shape = (1, 1, 1)           # one slice; multi-slice: see experiments/seamo_vitl_pod.py
    config.mesh.dcn_axes = ("data",)            # only `data` may span slices (DCN)
    config.mesh.slice_granularity = "auto"      # auto: TPU slice_index, else one process = one slice
    config.mesh.devices_per_slice = 0           # > 0: N consecutive devices form a slice (e.g. 8 GPUs of a node)
    config.mesh.allow_split_physical_axes = False
    config.sharding_rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", "model"),
        ("heads", "model"),
        ("kv", None),
        ("length", None),
        ("patch", None),
        ("layers", None),
    )

    # ---- optimiser: MAE recipe, lr = 1.5e-4 * batch / 256 ----
    epochs = 20 if phase1 else 200
    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1.5e-4 * config.data.batch_size / 256
    config.optim.warmup_steps = (2 if phase1 else 20) * STEPS_PER_EPOCH
    config.optim.end_lr_ratio = 0.0
    config.optim.weight_decay = 0.05
    config.optim.b1 = 0.9
    config.optim.b2 = 0.95
    config.optim.clip_grad_norm = 0.0           # MAE trains without clipping
    config.optim.layer_decay = 1.0
    config.optim.grad_accum_steps = 1

    # ---- loop ----
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = epochs * STEPS_PER_EPOCH
    config.train.log_every = 50
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3
    config.train.checkpoint_compression = False  # zstd saves ~8% on fp32 state for ~5x write CPU
    config.train.keep_best = 0
    config.train.recon_every = 2000
    config.train.progress_bar = True
    config.train.prefetch_batches = 2           # batches prepared + placed on device ahead, in a thread
    config.train.activation_constraints = True

    # ---- probe (seamo probe / evaluation) ----
    config.probe = ml_collections.ConfigDict()
    config.probe.builder = "eurosat_ms"
    config.probe.train_split = "train"
    config.probe.test_split = "test"
    config.probe.modalities = ("s2",)
    config.probe.seasons = 1
    config.probe.seeds = (0, 1, 2)
    config.probe.num_train = 0                  # 0 = all labelled training samples
    return config
