"""Galileo evaluation: kNN-20 / kNN-5 and the BatchNorm + Linear probe (Tseng et al. 2025).

Read from nasaharvest/galileo @ 0f0b5b9 (2026-04-21):

- src/eval/knn.py `_run_knn_for_k`: nn.CosineSimilarity between the query and
  every train embedding, torch.topk(k), votes one_hot(label) weighted by
  exp(similarity / 0.07), prediction = argmax of the summed votes (torch argmax:
  first maximum, so ties go to the lower class). `run_knn`: "KNN-5" / "KNN-20";
  single-label -> sklearn accuracy_score; multi-label -> one binary kNN per
  class (num_classes=2 on that class's 0/1 column, same neighbours), micro F1
  (sklearn f1_score(average="micro")) of the stacked predictions; a class is
  predicted iff its positive neighbours' weight is larger than its negative
  neighbours' (a tie predicts 0). eval.py reports it on val and test; nothing
  is chosen on val.
- src/eval/linear_probe.py: PROBING_LRs["LP"] = the 16 values
  1e-4, 3e-4, 5e-4, 8e-4, 1e-3, 3e-3, 5e-3, 8e-3, 1e-2, 3e-2, 5e-2, 8e-2,
  0.1, 0.3, 0.5, 0.8; `train_probe_cls`: nn.Sequential(BatchNorm1d(D),
  Linear(D, C)) (torch defaults: BN affine, eps 1e-5, momentum 0.1; Linear
  U(+-1/sqrt(D)) init), torch.optim.AdamW(lr) (defaults betas 0.9 / 0.999,
  eps 1e-8, weight_decay 0.01 on every parameter), 50 epochs, loss
  CrossEntropyLoss / MultiLabelSoftMarginLoss; before each optimiser step
  `adjust_learning_rate(epoch + i / len(loader))` (src/galileo.py): linear
  warmup from 0 over int(0.1 * 50) = 5 epochs, then half-cycle cosine to
  min_lr 1e-5 at epoch 50. Training runs under bfloat16 autocast (not
  reproduced here: float32). `evaluate_probe_cls` (probe.eval(): BN running
  stats): multi-label micro F1 of sigmoid(logits) > 0.5, single-label
  accuracy; val and test are scored after the last epoch (no best-epoch pick).
- eval.py: --batch_size default 128; embedding loaders: train
  shuffle=True (drop_last False), val / test unshuffled; every lr of
  PROBING_LRs and 5 run ids are written with their val and test scores
  (RUNS_PER_SPLIT["LP"] = 5); the lr is chosen on val afterwards. Here: the lr
  with the best val score (ties: the first, i.e. smallest lr), its test score
  reported. GalileoWrapper(add_layernorm_on_exit=True) for kNN / LP.
- src/eval/eval.py `get_loaders`: no train augmentation for kNN / LP
  (DownstreamAugs(enabled=False) unless FT). src/eval/datasets/geobench.py:
  no resize (GeoBench tiles at their native size: m-eurosat 64 px,
  m-bigearthnet 120 px; patch_size 4 by default); bands normalised by
  src/eval/preprocess.py `normalize_bands` with eval.py's default for Galileo
  {"stats": "OURS", "type": "norm_no_clip", "std_multiplier": 2.0}:
  x' = (x - (mean - 2 std)) / (4 std), no clipping.

allenai/olmoearth_pretrain @ 0a8852e olmoearth_pretrain/evals/{knn.py,
linear_probe.py} keeps the same recipe (cosine top-k, exp(sim / 0.07) votes,
k = 20 default; BatchNorm1d + Linear, AdamW, 10% warmup, min_lr 1e-5) and
adds optional validation every `eval_interval` epochs with best-epoch
selection; that variant is not implemented here.

All 16 learning rates train at once here (`vmap`) on the same batch order and
the same head init, drawn from `seed`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import optax

from seamo_jax.evaluate.protocols import bn_linear, common

NAME = "galileo"
PROBING_LRS = (1e-4, 3e-4, 5e-4, 8e-4, 1e-3, 3e-3, 5e-3, 8e-3, 1e-2, 3e-2, 5e-2, 8e-2, 1e-1, 3e-1, 5e-1, 8e-1)
DEFAULTS = {
    "knn_ks": (20, 5),
    "knn_temperature": 0.07,
    "knn_similarity": "cosine",
    "lr_grid": PROBING_LRS,
    "epochs": 50,
    "batch_size": 128,
    "warmup_epochs": 5,          # int(0.1 * 50)
    "min_lr": 1e-5,
    "optimizer": "AdamW(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)",
    "adamw_weight_decay": 0.01,
    "bn_eps": 1e-5,
    "bn_affine": True,
    "drop_last": False,
    "multi_label_threshold": 0.5,
    "selection": "lr with the best val score after the last epoch (ties: smallest lr)",
}


def warmup_cosine(max_lr, steps_per_epoch: int, num_epochs: int, warmup_epochs: int, min_lr: float):
    """lr(step) of Galileo's `adjust_learning_rate` at fractional epoch step / steps_per_epoch."""

    def lr(step):
        epoch = step / steps_per_epoch
        warm = max_lr * epoch / max(warmup_epochs, 1)
        progress = (epoch - warmup_epochs) / (num_epochs - warmup_epochs)
        cos = min_lr + (max_lr - min_lr) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
        return jnp.where(epoch < warmup_epochs, warm, cos)

    return lr


def make_adamw(hyper, steps_per_epoch: int, num_epochs: int) -> optax.GradientTransformation:
    """torch AdamW (decoupled decay 0.01) with the warmup-cosine lr (OptimizerFactory)."""
    warmup = int(num_epochs * 0.1)
    lr = warmup_cosine(hyper["lr"], steps_per_epoch, num_epochs, warmup, DEFAULTS["min_lr"])
    return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=DEFAULTS["adamw_weight_decay"])


def knn_scores(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, *, task: str, num_classes: int,
               k: int, temperature: float = DEFAULTS["knn_temperature"]) -> np.ndarray:
    """Galileo kNN predictions: [Q] classes (single_label) or [Q, C] {0, 1} (multi_label)."""
    sim, idx = common.nearest_neighbours(train_x, query_x, k, "cosine")
    weight = np.exp(sim / temperature)                                         # [Q, k]
    if task == "single_label":
        votes = np.zeros((len(query_x), num_classes))
        np.add.at(votes, (np.arange(len(query_x))[:, None], train_y[idx]), weight)
        return votes.argmax(-1)
    neighbour_labels = train_y[idx]                                             # [Q, k, C]
    positive = np.einsum("qk,qkc->qc", weight, neighbour_labels)
    negative = np.einsum("qk,qkc->qc", weight, 1.0 - neighbour_labels)
    return (positive > negative).astype(np.int32)


def _score(task: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    if task == "single_label":
        return common.top1_accuracy(predictions, labels)
    return common.micro_f1(predictions, labels)


def run(inputs: common.ProbeInputs, *, seed: int = 0, dataset_kind: str | None = None,
        lr_grid=PROBING_LRS, epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
        knn_ks=DEFAULTS["knn_ks"], temperature: float = DEFAULTS["knn_temperature"]) -> dict:
    """Galileo kNN and linear probe on frozen features.

    Args:
      inputs: validated features (val needed: it picks the learning rate).
      seed: seeds the batch order and the head init.
      dataset_kind: unused (the protocol sweeps lr instead), accepted for a uniform API.
      lr_grid: learning rates swept (default the 16 of PROBING_LRs["LP"]).
      knn_ks: neighbour counts (default 20 and 5).
    Returns:
      {"linear_probe": {...}, "knn_k20": {...}, "knn_k5": {...}}.
    """
    del dataset_kind
    task = inputs.task
    variant = common.TOP1_OA if task == "single_label" else common.MICRO_F1_05
    out: dict = {}
    num_train = inputs.train_views.shape[1]
    plan = bn_linear.batch_plan(seed, num_epochs=epochs, num_samples=num_train, batch_size=batch_size,
                             drop_last=False)
    init = bn_linear.torch_linear_init(seed + 1, inputs.train_views.shape[2], inputs.num_classes)
    loss = "cross_entropy" if task == "single_label" else "multilabel_soft_margin"
    config = bn_linear.BNLinearConfig(loss=loss, bn_affine=True, bn_eps=DEFAULTS["bn_eps"])
    lr_grid = [float(v) for v in lr_grid]
    state = bn_linear.train_bn_linear(inputs.train_views, inputs.targets(inputs.train_y), plan, init,
                                   {"lr": lr_grid}, make_adamw, config)
    final = bn_linear.select(state, slice(None), -1)                                   # [L, ...] last epoch

    def predict(logits):
        return logits.argmax(-1) if task == "single_label" else (logits > 0).astype(np.int32)  # sigmoid > 0.5

    val_logits = bn_linear.bn_linear_logits(final, inputs.val_x, config.bn_eps)        # [L, Nv, C]
    test_logits = bn_linear.bn_linear_logits(final, inputs.test_x, config.bn_eps)
    val = [_score(task, predict(v), inputs.val_y) for v in val_logits]
    test = [_score(task, predict(t), inputs.test_y) for t in test_logits]
    best = int(np.argmax(val))
    out["linear_probe"] = {
        "metric_variant": variant, "test": test[best], "val": val[best],
        "hyperparameters": {"lr": lr_grid[best], "epochs": epochs, "batch_size": batch_size,
                            "steps_per_epoch": plan.steps_per_epoch},
        "sweep": [{"lr": lr, "val": v, "test": t} for lr, v, t in zip(lr_grid, val, test)],
    }
    for k in knn_ks:
        scores = {}
        for split, (x, y) in {"val": (inputs.val_x, inputs.val_y), "test": (inputs.test_x, inputs.test_y)}.items():
            if x is None:
                scores[split] = None
                continue
            pred = knn_scores(inputs.train_x, inputs.train_y, x, task=task, num_classes=inputs.num_classes,
                              k=k, temperature=temperature)
            scores[split] = _score(task, pred, y)
        out[f"knn_k{k}"] = {"metric_variant": variant, "test": scores["test"], "val": scores["val"],
                            "hyperparameters": {"k": int(k), "temperature": temperature, "similarity": "cosine"}}
    return out


PROTOCOL = common.Protocol(
    name=NAME,
    description="Galileo: cosine kNN (k=20, 5; exp(sim/0.07) votes) and BatchNorm1d + Linear with AdamW, "
                "50 epochs, 10% warmup + cosine, lr swept over 16 values on val",
    methods=("linear_probe", "knn_k20", "knn_k5"),
    primary_method="linear_probe",
    metric_variants={"single_label": {m: common.TOP1_OA for m in ("linear_probe", "knn_k20", "knn_k5")},
                     "multi_label": {m: common.MICRO_F1_05 for m in ("linear_probe", "knn_k20", "knn_k5")}},
    input_size=None,
    input_interpolation=None,
    normalisation="per band x' = (x - (mean - 2 std)) / (4 std), no clipping (norm_no_clip, std_multiplier 2, "
                  "Galileo's 'OURS' pretraining statistics); tiles at native size (no resize)",
    source="nasaharvest/galileo@0f0b5b9 src/eval/{knn.py, linear_probe.py, eval.py, preprocess.py, "
           "datasets/geobench.py}, src/galileo.py (adjust_learning_rate), eval.py",
    hyperparameters=DEFAULTS,
    uses_val=True,
    accepts_views=False,
    run=run,
)
