"""The project's own protocol (linear_probe.py, multilabel.py, knn.py), unchanged, in the registry.

Single-label: `linear_probe.linear_probe` (standardise with fit-set stats,
full-batch L-BFGS softmax, L2 from DEFAULT_L2_GRID chosen on a stratified 20%
carve of train, refit on all train) and `knn.knn_accuracy` (DINO kNN, k 20,
cosine, exp(sim / 0.07)). Multi-label: `multilabel.multilabel_probe` (same
recipe with per-class sigmoids, L2 chosen by val macro mAP; macro and micro
mAP reported). The protocol carves its validation split out of train itself,
so a given val split is not used.
"""

from __future__ import annotations

from seamo_jax.evaluate import knn, linear_probe, multilabel
from seamo_jax.evaluate.protocols import common

NAME = "seamo"


def run(inputs: common.ProbeInputs, *, seed: int = 0, dataset_kind: str | None = None) -> dict:
    """Runs the seamo protocol on train / test (val ignored); returns its methods."""
    del dataset_kind
    if inputs.task == "multi_label":
        result = multilabel.multilabel_probe(inputs.train_x, inputs.train_y, inputs.test_x, inputs.test_y, seed=seed)
        hyper = {"l2": result["l2"]}
        return {"linear_probe": {"metric_variant": common.MACRO_MAP, "test": result["macro_map"], "val": None,
                                 "hyperparameters": hyper, "val_sweep": result["val_macro_map"]},
                "linear_probe_micro": {"metric_variant": common.MICRO_MAP, "test": result["micro_map"],
                                       "val": None, "hyperparameters": hyper}}
    result = linear_probe.linear_probe(inputs.train_x, inputs.train_y, inputs.test_x, inputs.test_y,
                                       num_classes=inputs.num_classes, seed=seed)
    knn_top1 = knn.knn_accuracy(inputs.train_x, inputs.train_y, inputs.test_x, inputs.test_y,
                                num_classes=inputs.num_classes)
    return {"linear_probe": {"metric_variant": common.TOP1_OA, "test": result["accuracy"], "val": None,
                             "hyperparameters": {"l2": result["l2"]}, "val_sweep": result["val_accuracy"]},
            "knn_k20": {"metric_variant": common.TOP1_OA, "test": knn_top1, "val": None,
                        "hyperparameters": {"k": knn.DEFAULT_K, "temperature": knn.DEFAULT_TEMPERATURE}}}


PROTOCOL = common.Protocol(
    name=NAME,
    description="seamo: standardised features, L-BFGS softmax / sigmoid probe with L2 chosen on a carve of "
                "train; DINO cosine kNN-20",
    methods=("linear_probe", "knn_k20", "linear_probe_micro"),
    primary_method="linear_probe",
    metric_variants={"single_label": {"linear_probe": common.TOP1_OA, "knn_k20": common.TOP1_OA},
                     "multi_label": {"linear_probe": common.MACRO_MAP, "linear_probe_micro": common.MICRO_MAP}},
    input_size=None,
    input_interpolation=None,
    normalisation="set by the probe config (seamo_jax.evaluate.probe)",
    source="seamo_jax/evaluate/{linear_probe.py, multilabel.py, knn.py}",
    hyperparameters={"l2_grid": linear_probe.DEFAULT_L2_GRID, "val_fraction": 0.2, "knn_k": knn.DEFAULT_K,
                     "knn_temperature": knn.DEFAULT_TEMPERATURE},
    uses_val=False,
    accepts_views=False,
    run=run,
)
