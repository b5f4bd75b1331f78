"""Published linear-probe / kNN protocols as pure functions on frozen feature arrays.

Each protocol is implemented as its benchmark's code runs it; the module of
each records the repository, commit, files and settings it was read from:

- `copernicus_bench` (copernicus_bench.py): Copernicus-Bench, BatchNorm1d
  (affine=False) + Linear, SGD with OneCycle lr / momentum, 50 epochs,
  batch 64, lr 0.1 (EuroSAT-like) / 1.0 (BigEarthNet), best val epoch;
  top-1 OA / micro mAP. Optional augmented train views [A, N, D].
- `galileo` (galileo.py): cosine kNN-20 / kNN-5 with exp(sim / 0.07) votes;
  BatchNorm1d + Linear, AdamW, 10% warmup + cosine, lr swept over 16 values
  on val; top-1 OA / micro F1 at 0.5.
- `torchgeo_bench` (torchgeo_bench.py): L-BFGS logistic regression, C from 20
  values in [1e-7, 1e2] on val, refit on train + val; Euclidean kNN-5; 95%
  bootstrap intervals from 500 test resamples; top-1 OA / micro mAP.
- `seamo` (seamo.py): the project's own protocol (linear_probe.py, knn.py,
  multilabel.py), unchanged.

Usage::

    result = run_protocol("galileo", train_x=..., train_y=..., val_x=..., val_y=...,
                          test_x=..., test_y=..., task="single_label", num_classes=10, seed=0)
    result["test"], result["metric_variant"]            # headline number and what it is
    result["methods"]["knn_k20"]["test"]                 # every method the protocol runs

Metric values are fractions in [0, 1].
"""

from __future__ import annotations

import inspect
from typing import Any

from seamo_jax.evaluate.protocols import bn_linear, common, copernicus_bench, galileo, seamo, torchgeo_bench
from seamo_jax.evaluate.protocols.common import (DATASET_KINDS, MACRO_MAP, MICRO_F1_05, MICRO_MAP, TASKS,
                                                 TOP1_OA, Protocol, ProbeInputs, check_inputs)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (copernicus_bench.PROTOCOL, galileo.PROTOCOL,
                                                      torchgeo_bench.PROTOCOL, seamo.PROTOCOL)}

__all__ = ["bn_linear", "common", "copernicus_bench", "galileo", "seamo", "torchgeo_bench", "PROTOCOLS", "Protocol", "ProbeInputs", "check_inputs", "get_protocol", "run_protocol", "TASKS",
           "DATASET_KINDS", "TOP1_OA", "MICRO_MAP", "MACRO_MAP", "MICRO_F1_05"]


def get_protocol(name: str) -> Protocol:
    """The registered protocol `name`; ValueError naming the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


def run_protocol(name: str, *, train_x: Any, train_y: Any, test_x: Any, test_y: Any, task: str,
                 num_classes: int, val_x: Any = None, val_y: Any = None, seed: int = 0,
                 dataset_kind: str | None = None, **options: Any) -> dict:
    """Runs protocol `name` on frozen features and returns a JSON-ready result.

    Args:
      name: a key of PROTOCOLS.
      train_x: [N, D] features, or [A, N, D] augmented views of every train
        sample (view 0 un-augmented; only protocols with accepts_views, i.e.
        copernicus_bench; A = 1 is no augmentation).
      train_y / val_y / test_y: [n] int classes in [0, num_classes)
        (single_label) or [n, num_classes] multi-hot {0, 1} (multi_label).
      val_x: [Nv, D]; required by copernicus_bench, galileo and torchgeo_bench
        (selection / refit), ignored by seamo (it carves its own).
      test_x: [Nt, D].
      task: "single_label" or "multi_label".
      num_classes: C >= 2.
      seed: seeds batch order, augmentation draws, head init and bootstrap.
      dataset_kind: "eurosat" / "bigearthnet" / None: copernicus_bench's lr
        (0.1 / 1.0; None picks by task); others ignore it.
      **options: protocol keyword options (e.g. epochs, lr_grid, c_grid,
        num_bootstrap), see each protocol's `run`.
    Returns:
      {"protocol", "task", "metric_variant" (of the primary method), "test"
       (primary method's test metric), "primary_method", "methods": {method:
       {"metric_variant", "test", "val", "hyperparameters", ...}}, "input_size",
       "input_interpolation", "normalisation", "source", "seed", "num_train",
       "num_val", "num_test", "num_views", "options"}.
    Raises:
      ValueError: unknown protocol / task / dataset_kind / option, wrong
        shapes, labels out of range, missing val split.
    """
    protocol = get_protocol(name)
    if dataset_kind not in DATASET_KINDS:
        raise ValueError(f"dataset_kind must be one of {DATASET_KINDS}, got {dataset_kind!r}")
    accepted = set(inspect.signature(protocol.run).parameters) - {"inputs", "seed", "dataset_kind"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for protocol {name!r}; accepted: {sorted(accepted)}")
    inputs = check_inputs(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x,
                          test_y=test_y, task=task, num_classes=num_classes, require_val=protocol.uses_val,
                          allow_views=protocol.accepts_views, protocol=name)
    methods = protocol.run(inputs, seed=int(seed), dataset_kind=dataset_kind, **options)
    primary = methods[protocol.primary_method]
    return {
        "protocol": name,
        "task": task,
        "metric_variant": primary["metric_variant"],
        "test": primary["test"],
        "primary_method": protocol.primary_method,
        "methods": methods,
        "input_size": protocol.input_size,
        "input_interpolation": protocol.input_interpolation,
        "normalisation": protocol.normalisation,
        "source": protocol.source,
        "seed": int(seed),
        "num_train": int(inputs.train_views.shape[1]),
        "num_val": None if inputs.val_x is None else int(len(inputs.val_x)),
        "num_test": int(len(inputs.test_x)),
        "num_views": inputs.num_views,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
    }
