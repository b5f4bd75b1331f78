"""The base config: every key any stage reads, with its default and what it means.

Experiment files start from `base.get_config()` and change what they change;
library code reads `config.section.key` directly (no `.get(key, default)`),
so this file is the one place a default lives. The config is locked: a key
that is not here is an error naming the closest valid key, in an experiment
file as on the command line (`--config.model.sizee=tiny`).

Values "" / 0 / () mean "not set" where the comment says so; the stage that
reads the key resolves them (e.g. data.data_dir "" = $SEAMO_DATA_DIR or
<workdir>/tfds). Free-form sections (data.builder_kwargs, data.sensors,
probe.builder_kwargs, probe.sensors) are replaced whole by an experiment:
`config.data.builder_kwargs = ml_collections.ConfigDict({...})`; their keys
are checked by the builder / sensor registry they go to.

Defaults are the SeaMo method at demo scale: the recipe of the paper
(S1 + S2, 4 seasons, non-aligned crops, TM fusion, per-modality MAE
decoders) with a tiny ViT on the built-in synthetic data.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0                             # init and everything seeded from it
    config.init_from = ""                       # warm start: another run's workdir / checkpoints dir (local or URL)

    # ---- data (seamo_jax/data, data_pipelines/) ----
    config.data = ml_collections.ConfigDict()
    config.data.builder = "synthetic_seasons"   # TFDS builder name (data_pipelines/registry.py)
    config.data.builder_kwargs = ml_collections.ConfigDict()  # builder constructor arguments (replaced whole)
    config.data.manual_dir = ""                 # real builders: the downloaded release (`seamo data build`)
    config.data.data_dir = ""                   # "" = $SEAMO_DATA_DIR or <workdir>/tfds
    config.data.split = "train"
    config.data.modalities = ("s2", "s1")       # order = modality axis of the batch mask
    config.data.sensors = ml_collections.ConfigDict({"s2": "s2_l1c", "s1": "s1_grd"})  # modality -> seamo_jax.sensors name
    config.data.seasons = 4                     # seasons per sample fed to the model
    config.data.season_subsample = False        # True: draw `seasons` of the record's seasons at random
    config.data.crop_size = 32                  # view size in pixels
    config.data.overlap_range = (0.5, 1.0)      # area overlap between views of different seasons
    config.data.region_selection = "partial"    # same | partial (pairwise overlap in overlap_range) | disjoint (data/crops.py)
    config.data.region_reading = "overlap"      # overlap: equal crop_size windows | crop_area: CropMAE-style crops, resized
    config.data.fraction = 1.0                  # train on this fixed fraction of the records, in (0, 1]
    config.data.fraction_seed = 0               # seeds the record subset of `fraction` (independent of shuffle_seed)
    config.data.flip = True                     # flips/rot90, identical for all views of a sample
    config.data.modality_dropout = 0.0          # P(a modality's views are dropped); dropped views are not scored
    config.data.batch_size = 64                 # global batch
    config.data.worker_count = 0                # grain worker processes (0 = in-process)
    config.data.prefetch = 2                    # batches of samples Grain reads ahead
    config.data.worker_batch_slots = True       # worker_count > 0: workers write batches into shared-memory
                                                # buffers they reuse (data/shm_batches.py) | False: Grain's new
                                                # segment per batch (~3 CPU-ms more per SSL4EO sample)
    config.data.read_threads = 2                # Grain reader threads
    config.data.record_reader = "pread"         # local shards: one preadv per record into a reused buffer
                                                # (data_pipelines/record_files.py; ~1 CPU-ms less per SSL4EO
                                                # record, no riegeli hash check) | array_record: its reader
                                                # (hashes checked; always used for gs:// shards)
    config.data.skip_bad_records = False        # True: a corrupt record is skipped and counted, not fatal
    config.data.views = "device"                # device: the jitted step cuts, resamples and normalises the views
                                                # from the stored tiles (data/device_views.py; the host only reads
                                                # and draws windows) | host: the input pipeline makes float32 views
    config.data.native_resize = "auto"          # views="host": auto: crop_area views through the compiled host kernel
                                                # where it builds (bitwise the numpy path, ~1/3 its CPU) | off: numpy
    config.data.shuffle_seed = 0

    # ---- masking ----
    config.mask = ml_collections.ConfigDict()
    config.mask.ratio = 0.75
    # True: S1 and S2 of a season share the mask. False (per-view independent masks, MAE convention): the
    # paper's text we follow does not say the modalities share masks (docs/DESIGN.md).
    config.mask.shared_across_modalities = False

    # ---- model (seamo_jax/models) ----
    config.model = ml_collections.ConfigDict()
    config.model.size = "tiny"                  # tiny | vit_s16 | vit_b16 | vit_l16 | vit_h14 (models/sizes.py)
    config.model.patch_size = 8
    config.model.num_seasons = 0                # season-embedding rows; 0 = data.seasons
    config.model.fusion = "tm"                  # tm | none
    config.model.num_fusion_blocks = 1
    config.model.decoder_dim = 64
    config.model.decoder_depth = 1
    config.model.decoder_heads = 4
    config.model.norm_pix_loss = True
    config.model.season_encoding = "per_season"  # per_season (paper: one sequence per season, shared weights) | joint
    # view (MAE's per-view table) | tile (from crop offsets); docs/ablation.md: no difference within the CI.
    config.model.position_frame = "view"
    config.model.tm_carry = "aux_queries"       # aux_queries (paper Fig. 3) | mean_add
    # Stochastic depth of the encoder blocks in pretraining (models/vit.py: linear 0 -> rate over depth);
    # 0 = off (MAE pretrains without it). Fine-tuning sets its own rate: finetune.drop_path.
    config.model.drop_path = 0.0
    config.model.dtype = "float32"              # compute dtype; params stay float32
    config.model.remat_policy = "none"          # none | full | dots_saveable | dots_with_no_batch_dims_saveable
    config.model.scan_layers = False            # unrolled: shorter CPU steps (docs/performance.md "Layer layout"); checkpoints are layout-free
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

    # ---- optimiser (seamo_jax/train/optimizer.py): AdamW, linear warmup, cosine ----
    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1.5e-3         # peak lr for the global batch
    config.optim.warmup_steps = 40
    config.optim.end_lr_ratio = 0.05            # final lr / peak lr
    config.optim.weight_decay = 0.05
    config.optim.b1 = 0.9
    config.optim.b2 = 0.95
    config.optim.clip_grad_norm = 1.0           # 0 = no clipping
    config.optim.layer_decay = 1.0              # layer-wise lr decay of the encoder blocks; 1.0 = off
    config.optim.grad_accum_steps = 1

    # ---- training loop (seamo_jax/train) ----
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 500
    config.train.log_every = 10
    config.train.checkpoint_every = 250
    config.train.keep_checkpoints = 2
    config.train.keep_best = 0                  # > 0: also keep the N checkpoints of lowest loss
    config.train.async_checkpointing = True     # Orbax saves in the background; the loop waits before the next save
    config.train.checkpoint_compression = False  # zstd saves ~8% on fp32 state for ~5x write CPU
    config.train.recon_every = 250              # reconstruction PNGs every N steps; 0 = never
    config.train.progress_bar = True
    config.train.prefetch_batches = 2           # batches prepared + placed on device ahead, in a thread
    # The model's logical activation constraints (batch/length/embed) pin activation layouts on FSDP /
    # tensor-parallel meshes; False leaves them to XLA's propagation.
    config.train.activation_constraints = True

    # ---- probe (`seamo probe`, `seamo demo`; seamo_jax/evaluate) ----
    config.probe = ml_collections.ConfigDict()
    config.probe.builder = "synthetic_seasons"  # "" = config.data.builder
    config.probe.builder_kwargs = ml_collections.ConfigDict()  # replaced whole, like data.builder_kwargs
    config.probe.sensors = ml_collections.ConfigDict()  # modality -> sensor, only for in-memory sources (tests)
    config.probe.data_dir = ""                  # "" = config.data.data_dir or $SEAMO_DATA_DIR
    config.probe.manual_dir = ""                # real builders (eurosat_ms): where the raw files are
    config.probe.build_dataset = False          # True: build the probe dataset if missing (one process; `seamo demo`)
    config.probe.train_split = "train"
    config.probe.test_split = "test"
    config.probe.skip_bad_records = False
    config.probe.modalities = ("s2", "s1")      # with probe.seasons: the one input set when input_sets is ()
    config.probe.seasons = 4
    config.probe.input_sets = ()                # ({"name", "modalities", "seasons"}, ...); () = modalities x seasons
    config.probe.num_train = 0                  # labelled samples read from the train split; 0 = all
    config.probe.num_test = 0                   # 0 = the whole test split
    config.probe.label_fractions = (0.01, 0.1, 1.0)  # stratified label subsets, saved under <out>/splits
    config.probe.seeds = (0, 1, 2)
    config.probe.encoders = ("pretrained", "random_init", "band_stats")  # + "texture" (evaluate/texture.py)
    # Evaluation protocols, on features cached once per (encoder, input set, input size) and shared:
    # seamo (L-BFGS logistic regression + kNN-20, this project's) | copernicus_bench | galileo | torchgeo_bench,
    # each as its benchmark runs it (seamo_jax/evaluate/protocols/; README "Evaluate a checkpoint").
    config.probe.protocols = ("seamo",)
    config.probe.input_size = 0                 # 0 = each protocol's own (224 px for copernicus_bench / torchgeo_bench,
                                                # the view size otherwise); > 0 = this size for every protocol
    config.probe.knn_k = 20
    config.probe.knn_temperature = 0.07
    config.probe.l2_grid = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    config.probe.val_fraction = 0.2             # carved from train (seeded) to choose the L2 weight
    config.probe.max_iter = 500                 # L-BFGS iterations cap
    config.probe.tol = 1e-5                     # gradient-norm tolerance
    config.probe.batch_size = 64                # feature-extraction global batch
    config.probe.crop = "center"                # "center" crop of crop_size, or "full" tile
    config.probe.crop_size = 0                  # 0 = the encoder's training view size
    config.probe.pool = "mean"                  # mean of patch tokens, or "cls"
    config.probe.init_seed = 0                  # random-init encoder seed = init_seed + probe seed
    config.probe.cache_dir = ""                 # "" = <out>/feature_cache
    config.probe.out_dir = ""                   # "" = <checkpoint>/probe
    config.probe.resplit_test_fraction = 0.0    # > 0: pool train+test, fresh stratified split per seed

    # ---- fine-tuning (`seamo finetune`; seamo_jax/finetune): the MAE fine-tuning recipe ----
    # Data are the probe's, read through evaluate/probe_data.load_probe_data from config.probe (builder,
    # builder_kwargs, sensors, data_dir, manual_dir, build_dataset, train/test splits, num_train, num_test,
    # crop, crop_size, skip_bad_records, resplit_test_fraction): not duplicated here, so a fine-tune and a
    # probe of one config read the same arrays and test split, and (evaluate/splits.py's saved files, in
    # the same <out>/splits) the same label subsets. The sweep axes default to the probe's too ("()"),
    # but are separate keys: a fine-tune costs one training run per (input set, encoder, label fraction,
    # seed) where a probe costs one solve, so a config may sweep fewer. The architecture is the
    # checkpoint's (its config.json); config.model / config.data describe it only for
    # encoders=("random_init",) without a checkpoint. Mesh and rules: config.mesh, config.sharding_rules;
    # checkpoint I/O: config.train.async_checkpointing / checkpoint_compression; batches prepared ahead:
    # config.train.prefetch_batches; activation constraints: config.train.activation_constraints (the same
    # machinery as pretraining).
    config.finetune = ml_collections.ConfigDict()
    config.finetune.input_sets = ()             # like probe.input_sets; () = the probe's input sets
    config.finetune.label_fractions = ()        # () = probe.label_fractions (subsets: evaluate/splits.py)
    config.finetune.seeds = ()                  # () = probe.seeds; a seed fixes the label subset (as the probe's),
                                                # head init, batch order, augmentation and drop-path draws
    config.finetune.encoders = ("pretrained",)  # + "random_init": the same architecture trained from scratch
    config.finetune.init_seed = 0               # random_init encoder seed = init_seed + seed (as probe.init_seed)
    config.finetune.pool = "mean"               # mean of patch tokens -> fc_norm -> linear head (MAE global_pool); "cls"
    config.finetune.epochs = 100.0              # MAE ViT-B: 100 (ViT-L/H: 50); an epoch is >= 1 step
    config.finetune.num_steps = 0               # > 0: optimiser steps per run whatever the subset size (overrides epochs)
    config.finetune.warmup_epochs = 5.0         # linear warmup (MAE: 5), then cosine; fixed num_steps: same share
    config.finetune.batch_size = 1024           # global batch (MAE ViT-B: 1024); must divide by the data shards
    config.finetune.base_learning_rate = 5e-4   # MAE blr: peak lr = blr * batch_size / 256
    config.finetune.min_learning_rate = 1e-6    # end of the cosine (MAE min_lr)
    config.finetune.layer_decay = 0.65          # layer-wise lr decay (MAE ViT-B 0.65, ViT-L/H 0.75); 1.0 = off
    config.finetune.weight_decay = 0.05         # AdamW, on kernels only (train/optimizer.py), as MAE
    config.finetune.b1 = 0.9                    # AdamW betas: torch's defaults, as MAE fine-tuning
    config.finetune.b2 = 0.999
    config.finetune.clip_grad_norm = 0.0        # 0 = no clipping (MAE fine-tuning)
    config.finetune.drop_path = 0.1             # stochastic depth of the encoder blocks (MAE ViT-B 0.1, ViT-L/H 0.2)
    config.finetune.label_smoothing = 0.1       # single-label cross-entropy (MAE 0.1); multi-label BCE has none
    config.finetune.augment = True              # random flip / rot90 per sample, the same for all its views
                                                # (MAE's RandAugment, mixup, cutmix and random erasing are not used)
    config.finetune.val_fraction = 0.0          # > 0: stratified val carve of the labelled subset; the test is scored
                                                # with the params of the best val evaluation. 0 = final params (MAE)
    config.finetune.eval_every = 0              # steps between val evaluations (val_fraction > 0); 0 = once an epoch
    config.finetune.eval_batch_size = 0         # 0 = batch_size
    config.finetune.checkpoint_every = 500      # Orbax checkpoint every N steps (and at the end) of each run,
                                                # <out>/runs/<input>/<encoder>/fraction_<f>/seed_<s>/checkpoints
    config.finetune.keep_checkpoints = 1        # most recent checkpoints kept per run
    config.finetune.delete_checkpoints = False  # True: checkpoints only serve resuming: no final save, and a
                                                # run's checkpoints are removed once its result.json is written
    config.finetune.log_every = 10              # metrics.jsonl / TensorBoard in each run dir
    config.finetune.progress_bar = True
    config.finetune.dtype = ""                  # compute dtype; "" = the checkpoint's model.dtype
    config.finetune.out_dir = ""                # "" = probe.out_dir, else <checkpoint>/probe: beside probe_results.*
    config.lock()
    return config
