"""Tiny SeaMo on the built-in synthetic seasons data: the CPU demo.

Reproduces the full SeaMo recipe at toy scale: S1 + S2, 4 seasons,
non-aligned crops across seasons, TM fusion, per-modality MAE decoders.
Expected cost: a few minutes on 2 CPU cores (`seamo demo`).

    seamo pretrain --config experiments/demo_cpu.py --workdir runs/demo
    seamo pretrain --config experiments/demo_cpu.py:fast --workdir /tmp/x   # tests

`get_config(arg)`: "" = the demo; "fast" = a few steps, for tests.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.init_from = ""                       # warm start: another run's workdir / checkpoints dir (local or URL)

    # ---- data (seamo_jax/data, data_pipelines/) ----
    config.data = ml_collections.ConfigDict()
    config.data.builder = "synthetic_seasons"   # TFDS builder name
    config.data.manual_dir = ""                 # real builders: the downloaded release (`seamo data build`)
    config.data.data_dir = ""                   # "" = <workdir>/../tfds or $SEAMO_DATA_DIR
    config.data.split = "train"
    config.data.modalities = ("s2", "s1")       # order = modality axis of the batch mask
    config.data.sensors = {"s2": "s2_l1c", "s1": "s1_grd"}  # modality -> seamo_jax.sensors name
    config.data.seasons = 4                     # seasons per sample fed to the model
    config.data.season_subsample = False        # True: draw `seasons` of the record's seasons at random
    config.data.crop_size = 32                  # view size in pixels
    config.data.overlap_range = (0.5, 1.0)      # area overlap between views of different seasons
    config.data.region_selection = "partial"    # same | partial (pairwise overlap in overlap_range) | disjoint (seamo_jax/data/crops.py)
    config.data.region_reading = "overlap"      # overlap: equal crop_size windows | crop_area: CropMAE-style crops, area ratio in range, resized
    config.data.fraction = 1.0                  # train on this fixed fraction of the records, in (0, 1]
    config.data.fraction_seed = 0               # seeds the record subset of `fraction` (independent of shuffle_seed)
    config.data.flip = True                     # flips/rot90, identical for all views of a sample
    config.data.modality_dropout = 0.0
    config.data.batch_size = 64                 # global batch
    config.data.worker_count = 0                # grain worker processes (0 = in-process)
    config.data.prefetch = 2
    config.data.skip_bad_records = False
    config.data.shuffle_seed = 0
    # Passed to the TFDS builder (data_pipelines/synthetic_seasons): tile size and record counts.
    config.data.builder_kwargs = ml_collections.ConfigDict()
    config.data.builder_kwargs.tile_size = 48
    config.data.builder_kwargs.num_train = 1536
    config.data.builder_kwargs.num_test = 512
    config.data.builder_kwargs.seed = 0

    # ---- masking ----
    config.mask = ml_collections.ConfigDict()
    config.mask.ratio = 0.75
    # True: S1 and S2 of a season share the mask. False (per-view independent masks, MAE convention): the
    # paper's text we follow does not say the modalities share masks (docs/DESIGN.md).
    config.mask.shared_across_modalities = False

    # ---- model (seamo_jax/models) ----
    config.model = ml_collections.ConfigDict()
    config.model.name = "seamo"
    config.model.size = "tiny"                  # tiny | vit_s16 | vit_b16 | vit_l16 | vit_h14
    config.model.patch_size = 8
    config.model.num_seasons = 0                # season-embedding rows; 0 = data.seasons
    config.model.fusion = "tm"                  # tm | none
    config.model.num_fusion_blocks = 1
    config.model.decoder_dim = 64
    config.model.decoder_depth = 1
    config.model.decoder_heads = 4
    config.model.norm_pix_loss = True
    config.model.season_encoding = "per_season"  # per_season (paper: one sequence per season, shared weights) | joint
    # view (MAE's per-view table) | tile (from crop offsets); docs/ablation.md: 91.2 vs 91.5 % linear probe, within the CI.
    config.model.position_frame = "view"
    config.model.tm_carry = "aux_queries"       # aux_queries (paper Fig. 3) | mean_add
    config.model.dtype = "float32"              # compute dtype; params stay float32
    config.model.remat_policy = "none"          # none | full | dots_saveable | dots_with_no_batch_dims_saveable
    config.model.scan_layers = False            # unrolled: 5-19% shorter steps on CPU (docs/performance.md "Layer layout"); checkpoints are layout-free
    config.model.attention_impl = "xla"         # xla (jax.nn.dot_product_attention) | cudnn (GPU flash, bf16/fp16) | pallas_tpu | einsum
    config.model.cpu_kernels = "auto"           # auto (on for 1-device fp32 CPU runs) | on | off: seamo_jax/kernels, models/backend.py

    # ---- parallelism (seamo_jax/parallel) ----
    config.mesh = ml_collections.ConfigDict()
    config.mesh.shape = (-1, 1, 1)              # over axes (data, fsdp, model); -1 = fill with remaining devices
    config.mesh.axes = ("data", "fsdp", "model")
    config.mesh.dcn_shape = (1, 1, 1)           # slices per axis (multi-slice TPU / multi-node GPU); mesh = shape * dcn_shape
    config.mesh.dcn_axes = ("data",)            # axes allowed > 1 in dcn_shape (fsdp / model stay inside a slice)
    config.mesh.slice_granularity = "auto"      # what a slice is: auto (TPU: slice_index, else process) | slice | process
    config.mesh.devices_per_slice = 0           # > 0: N consecutive devices form a slice (one process per GPU)
    config.mesh.allow_split_physical_axes = False  # let mesh_utils split physical TPU axes to fit `shape`
    # logical axis -> mesh axes (MaxText style). None = replicated.
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

    # ---- optimiser (seamo_jax/train/optimizer.py) ----
    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1.5e-3         # peak lr for the global batch
    config.optim.warmup_steps = 40
    config.optim.end_lr_ratio = 0.05
    config.optim.weight_decay = 0.05
    config.optim.b1 = 0.9
    config.optim.b2 = 0.95
    config.optim.clip_grad_norm = 1.0
    config.optim.layer_decay = 1.0              # 1.0 = off
    config.optim.grad_accum_steps = 1

    # ---- training loop (seamo_jax/train) ----
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 500
    config.train.log_every = 10
    config.train.checkpoint_every = 250
    config.train.keep_checkpoints = 2
    config.train.checkpoint_compression = False  # zstd saves ~8% on fp32 state for ~5x write CPU
    config.train.recon_every = 250
    config.train.progress_bar = True
    config.train.prefetch_batches = 2           # batches prepared + placed on device ahead, in a thread

    # ---- probe used by `seamo demo` (seamo_jax/evaluate) ----
    config.probe = ml_collections.ConfigDict()
    config.probe.builder = "synthetic_seasons"
    config.probe.train_split = "train"
    config.probe.test_split = "test"
    config.probe.modalities = ("s2", "s1")
    config.probe.seasons = 4
    config.probe.seeds = (0, 1, 2)
    config.probe.num_train = 1024               # labelled samples used to fit the probe

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
    elif arg:
        raise ValueError(f"unknown demo_cpu variant {arg!r}; use '' or 'fast'")
    return config
