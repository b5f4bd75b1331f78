"""Copernicus-Bench linear probing (Wang et al. 2025, "Towards a Unified Copernicus Foundation Model").

Read from zhu-xlab/Copernicus-FM @ da95635 (2025-10-02), directory Copernicus-Bench/:

- src/foundation_models/copernicusfm_wrapper.py (dofa/gfm/vit wrappers are
  the same): encoder frozen; head = nn.Sequential(BatchNorm1d(D,
  affine=False, eps=1e-6), Linear(D, C)); Linear weight trunc_normal_(std=0.01),
  bias left at torch's default U(+-1/sqrt(D)); only the head is optimised.
  Loss: CrossEntropyLoss (single-label) / MultiLabelSoftMarginLoss (multi-label).
  Features: `forward_features` of models_dwv.py global-pools the patch tokens
  (mean, cls token excluded) and applies `fc_norm` (a LayerNorm that the
  checkpoint does not contain, so it stays at weight 1, bias 0).
- src/foundation_models/lightning_task.py `configure_optimizers`: for
  classification torch.optim.SGD(head params, lr, weight_decay) with no
  momentum argument, but the OneCycleLR scheduler (max_lr = lr,
  total_steps = len(train_loader) * epochs, pct_start = warmup / total = 0,
  anneal_strategy "cos", stepped every optimiser step) keeps torch's default
  cycle_momentum=True, base_momentum 0.85, max_momentum 0.95, div_factor 25,
  final_div_factor 1e4. So momentum is not 0: with pct_start 0 the schedule
  is one cosine phase, and optimiser step s (0-based, T steps) runs at
      pct = (s + 1) / T,
      lr  = min_lr + (lr - min_lr) * (1 + cos(pi * pct)) / 2,  min_lr = lr / 25 / 1e4,
      momentum = 0.95 + (0.85 - 0.95) * (1 + cos(pi * pct)) / 2   (0.85 -> 0.95).
  Weight decay (coupled, torch SGD) applies to the Linear weight and bias.
- src/configs/config.yaml: batch_size 64, weight_decay 0.0001, epochs 50,
  warmup_epochs 0, seed 0 (scripts/run.sh passes seed=42).
- scripts/exp_config_copernicusfm.py: lr 0.1 for EuroSAT-S1/S2 and LCZ-S2
  (single-label), lr 1 for BigEarthNet-S1/S2 and LC100Cls-S3 (multi-label),
  batch 64, 50 epochs.
- src/datasets/data_module.py: train loader shuffle=True, drop_last=True;
  val / test loaders unshuffled, batch 64.
- src/main.py: ModelCheckpoint(monitor="val_acc1", mode="max") on the
  validation score after every epoch; trainer.test on the best checkpoint
  (strictly better only, so ties keep the earlier epoch).
- src/util/misc.py `cls_metric`: single-label timm top-1 accuracy;
  multi-label torchmetrics multilabel_average_precision(sigmoid(logits),
  average="micro") as "acc1" (micro mAP). Lightning logs it per batch and
  averages per epoch weighted by batch size: for accuracy that is the overall
  accuracy, for micro mAP it is the mean of per-batch (64-sample) micro APs,
  not the AP of the whole split. `metric_averaging="global"` (default) scores
  the whole split; "per_batch" reproduces the logged number.
- src/datasets/cobench_eurosats2_wrapper.py, cobench_bigearthnets12_wrapper.py
  `ClsDataAugmentation`: K.Normalize(band_stats mean, std) (z-score per band,
  stats from the dataset yaml), K.Resize(224, align_corners=True)
  (kornia default bilinear), and for train only RandomHorizontalFlip(0.5) +
  RandomVerticalFlip(0.5). src/configs/dataset/cobench_*.yaml: image_resolution 224.

Here: frozen features in, the head trained in JAX (`bn_linear.train_bn_linear`)
with optax SGD (coupled weight decay, momentum via `inject_hyperparams`) and
the OneCycle schedules above. Flips act on images, so train features may come
as A views per sample ([A, N, D], e.g. identity / hflip / vflip / hvflip):
each epoch draws one view per sample uniformly, which is the two independent
p = 0.5 flips; A = 1 trains without augmentation. Val / test features are the
un-augmented images.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import optax

from seamo_jax.evaluate.protocols import bn_linear, common

NAME = "copernicus_bench"
DEFAULTS = {
    "epochs": 50,
    "batch_size": 64,
    "weight_decay": 1e-4,
    "lr_single_label": 0.1,   # EuroSAT-S1/S2, LCZ-S2
    "lr_multi_label": 1.0,    # BigEarthNet-S1/S2, LC100Cls-S3
    "momentum": "OneCycleLR cycle_momentum: 0.85 -> 0.95",
    "lr_schedule": "OneCycleLR cos, pct_start 0, div_factor 25, final_div_factor 1e4",
    "base_momentum": 0.85,
    "max_momentum": 0.95,
    "div_factor": 25.0,
    "final_div_factor": 1e4,
    "bn_eps": 1e-6,
    "head_weight_init_std": 0.01,
    "drop_last": True,
    "selection": "best validation epoch (strictly better), scored on test",
}
LR_BY_DATASET = {"eurosat": 0.1, "bigearthnet": 1.0}


def one_cycle(max_lr, total_steps: int, *, div_factor: float = 25.0, final_div_factor: float = 1e4,
              base_momentum: float = 0.85, max_momentum: float = 0.95):
    """(lr(step), momentum(step)) of torch OneCycleLR with pct_start = 0 and cos annealing.

    Works on traced `max_lr` and step counts (optax schedules).
    """
    min_lr = max_lr / div_factor / final_div_factor

    def cos_weight(step):
        return (1.0 + jnp.cos(math.pi * (step + 1.0) / total_steps)) / 2.0

    def lr(step):
        return min_lr + (max_lr - min_lr) * cos_weight(step)

    def momentum(step):
        return max_momentum + (base_momentum - max_momentum) * cos_weight(step)

    return lr, momentum


def make_sgd(hyper, steps_per_epoch: int, num_epochs: int) -> optax.GradientTransformation:
    """torch SGD(weight_decay) whose lr and momentum follow `one_cycle` (OptimizerFactory)."""
    lr, momentum = one_cycle(hyper["lr"], steps_per_epoch * num_epochs)
    return optax.chain(
        optax.add_decayed_weights(hyper["weight_decay"]),          # torch: grad += wd * p
        optax.inject_hyperparams(optax.trace)(decay=momentum),      # buf = m * buf + grad
        optax.scale_by_learning_rate(lr),                           # p -= lr * buf
    )


def _score(task: str, logits: np.ndarray, labels: np.ndarray, averaging: str, batch_size: int) -> float:
    if task == "single_label":
        return common.top1_accuracy(logits, labels)
    if averaging == "global":
        return common.micro_average_precision(logits, labels)
    # Lightning's epoch value: per-batch micro AP, averaged with batch-size weights.
    values, weights = [], []
    for start in range(0, len(logits), batch_size):
        ap = common.micro_average_precision(logits[start:start + batch_size], labels[start:start + batch_size])
        if not np.isnan(ap):
            values.append(ap)
            weights.append(min(batch_size, len(logits) - start))
    return float(np.average(values, weights=weights)) if values else float("nan")


def run(inputs: common.ProbeInputs, *, seed: int = 0, dataset_kind: str | None = None, lr: float | None = None,
        epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
        weight_decay: float = DEFAULTS["weight_decay"], metric_averaging: str = "global") -> dict:
    """Copernicus-Bench linear probe on frozen features.

    Args:
      inputs: validated features; train_views [A, N, D] (A >= 1 augmented views).
      seed: seeds the batch order, view draws and head init.
      dataset_kind: "eurosat" (lr 0.1) / "bigearthnet" (lr 1.0) / None (by task).
      lr: explicit peak learning rate (overrides dataset_kind).
      metric_averaging: "global" (metric of the whole split) or "per_batch"
        (multi-label: batch-size-weighted mean of per-batch micro AP, as logged).
    Returns:
      {"linear_probe": {...}}: test / val metric at the best validation epoch,
      best_epoch (0-based), val_per_epoch, test_last_epoch, hyperparameters.
    """
    if metric_averaging not in ("global", "per_batch"):
        raise ValueError(f"metric_averaging must be 'global' or 'per_batch', got {metric_averaging!r}")
    if lr is None:
        lr = LR_BY_DATASET[dataset_kind] if dataset_kind is not None else (
            DEFAULTS["lr_single_label"] if inputs.task == "single_label" else DEFAULTS["lr_multi_label"])
    num_train = inputs.train_views.shape[1]
    if num_train < batch_size:
        raise common.TooFewSamplesError(f"copernicus_bench drops the last partial batch: needs >= {batch_size} train "
                         f"samples, got {num_train}")
    plan = bn_linear.batch_plan(seed, num_epochs=epochs, num_samples=num_train, batch_size=batch_size,
                             drop_last=True, num_views=inputs.num_views)
    init = bn_linear.torch_linear_init(seed + 1, inputs.train_views.shape[2], inputs.num_classes,
                                    weight_std=DEFAULTS["head_weight_init_std"])
    loss = "cross_entropy" if inputs.task == "single_label" else "multilabel_soft_margin"
    config = bn_linear.BNLinearConfig(loss=loss, bn_affine=False, bn_eps=DEFAULTS["bn_eps"])
    state = bn_linear.train_bn_linear(inputs.train_views, inputs.targets(inputs.train_y), plan, init,
                                   {"lr": [lr], "weight_decay": [weight_decay]}, make_sgd, config)
    state = bn_linear.select(state, 0)                                                  # [E, ...]
    val_logits = bn_linear.bn_linear_logits(state, inputs.val_x, config.bn_eps)          # [E, Nv, C]
    val_scores = [_score(inputs.task, v, inputs.val_y, metric_averaging, batch_size) for v in val_logits]
    best = int(np.argmax(val_scores))                                                 # first best epoch
    test_logits = bn_linear.bn_linear_logits(bn_linear.select(state, best), inputs.test_x, config.bn_eps)
    last_logits = bn_linear.bn_linear_logits(bn_linear.select(state, -1), inputs.test_x, config.bn_eps)
    variant = common.TOP1_OA if inputs.task == "single_label" else common.MICRO_MAP
    return {"linear_probe": {
        "metric_variant": variant,
        "test": _score(inputs.task, test_logits, inputs.test_y, metric_averaging, batch_size),
        "val": val_scores[best],
        "best_epoch": best,
        "val_per_epoch": [float(v) for v in val_scores],
        "test_last_epoch": _score(inputs.task, last_logits, inputs.test_y, metric_averaging, batch_size),
        "metric_averaging": metric_averaging,
        "hyperparameters": {"lr": float(lr), "epochs": epochs, "batch_size": batch_size,
                            "weight_decay": weight_decay, "num_views": inputs.num_views,
                            "steps_per_epoch": plan.steps_per_epoch},
    }}


PROTOCOL = common.Protocol(
    name=NAME,
    description="Copernicus-Bench: frozen encoder, BatchNorm1d(affine=False) + Linear, SGD + OneCycle, "
                "50 epochs, batch 64, best val epoch",
    methods=("linear_probe",),
    primary_method="linear_probe",
    metric_variants={"single_label": {"linear_probe": common.TOP1_OA},
                     "multi_label": {"linear_probe": common.MICRO_MAP}},
    input_size=224,
    input_interpolation="bilinear (kornia Resize, align_corners=True)",
    normalisation="z-score per band with the dataset's band_stats mean/std (K.Normalize), before resizing",
    source="zhu-xlab/Copernicus-FM@da95635 Copernicus-Bench/src/{main.py, foundation_models/lightning_task.py, "
           "foundation_models/copernicusfm_wrapper.py, util/misc.py, datasets/data_module.py, "
           "datasets/cobench_eurosats2_wrapper.py, configs/config.yaml}, scripts/exp_config_copernicusfm.py",
    hyperparameters=DEFAULTS,
    uses_val=True,
    accepts_views=True,
    run=run,
)
