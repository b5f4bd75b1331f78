"""SeaMo ViT-L/16 on SSL4EO-S12 on a TPU pod slice (v5e-64 / v4-64), FSDP.

Scales the phase-2 SeaMo recipe (4 seasons, S1 + S2, TM fusion, 224-px
non-aligned crops of 264-px tiles) to a ViT-L/16 encoder (~304M params).
Params, gradients and AdamW moments are sharded over all chips ("fsdp" axis,
ZeRO-3 style), the batch over ("data", "fsdp"); no tensor parallelism (ViT-L
fits comfortably once sharded). bf16 compute, fp32 params, scanned blocks
with `dots_with_no_batch_dims_saveable` remat.

    seamo pretrain --distributed --config seamo_vitl_pod --workdir gs://bucket/seamo_vitl \\
        [--config.init_from=gs://bucket/seamo_p1_vitl]

Run the same command on every host of the slice (multi-controller JAX;
`--distributed` calls `jax.distributed.initialize()`, which reads the TPU
environment). Expected cost (estimate): ~3.5x the ViT-B FLOPs per sample (~1.7e12),
100 epochs at global batch 4096 (~6.1k steps, 2.5e7 samples) is ~4e19 FLOPs:
~15-20 h on v5e-64 (197 TFLOP/s bf16 per chip) or ~8-10 h on v4-64 at
~40% MFU. Per chip: ~0.3 GB of sharded params + opt state, activations for
64 samples with remat fit 16 GB HBM (v5e). Preemptible slices are fine:
SIGTERM saves and exits; rerunning resumes from the newest checkpoint.

Several slices (multi-slice over DCN, e.g. 2 x v5e-256 = 512 chips): keep
`mesh.shape` as the layout INSIDE one slice and set how many slices each
axis spans with `mesh.dcn_shape`; the mesh is shape * dcn_shape. Only `data`
may span slices (`mesh.dcn_axes`), so params stay FSDP-sharded inside a
slice (over ICI) and are replicated across slices, whose gradients are
all-reduced over DCN once per step:

    seamo pretrain --distributed --config seamo_vitl_pod --workdir gs://bucket/seamo_vitl \
        --config.mesh.dcn_shape='(2, 1, 1)' --config.data.batch_size=8192

gives mesh (data=2, fsdp=256, model=1): shape (1, -1, 1) fills one slice's
256 chips. Slices are told apart by the devices' `slice_index` (TPU); on
multi-node GPU one process is one slice, or set `mesh.devices_per_slice`
(e.g. 8 with one process per GPU on 8-GPU nodes).

`get_config(arg)`: "" (v5e-64 / v4-64 defaults) or "v4-32".
"""

import ml_collections

from seamo_jax.experiments import seamo_vitb_ssl4eo


VARIANTS = ("", "v4-32")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown seamo_vitl_pod variant {arg!r}; use '' or 'v4-32'")
    config = seamo_vitb_ssl4eo.get_config("phase2")
    config.model.size = "vit_l16"
    config.model.decoder_dim = 512
    config.model.decoder_depth = 8
    config.model.num_fusion_blocks = 2
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "dots_with_no_batch_dims_saveable"

    # Pure FSDP: one "fsdp" axis over all chips; batch split over (data, fsdp).
    config.mesh.shape = (1, -1, 1)              # inside one slice
    config.mesh.dcn_shape = (1, 1, 1)           # slices per axis: (2, 1, 1) for 2 slices (docstring)
    config.sharding_rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", None),
        ("heads", None),
        ("kv", None),
        ("length", None),
        ("patch", None),
        ("layers", None),
    )

    config.data.batch_size = 4096 if arg == "" else 2048
    config.data.worker_count = 16
    steps_per_epoch = 250_000 // config.data.batch_size
    config.optim.learning_rate = 1.5e-4 * config.data.batch_size / 256
    config.optim.warmup_steps = 10 * steps_per_epoch
    config.optim.clip_grad_norm = 1.0           # larger model, bf16: clip for stability
    config.train.num_steps = 100 * steps_per_epoch
    config.train.checkpoint_every = 500         # preemptible slices: lose at most ~500 steps
    config.train.keep_checkpoints = 2
    config.train.log_every = 20
    config.train.recon_every = 1000
    return config
