"""Frozen-feature evaluation: linear probe, kNN, multi-label mAP, band-statistics baseline, reports.

`run_probe(config, checkpoint_dir=None, out_dir=None)` (probe.py) is the entry point;
it is imported lazily so `seamo_jax.evaluate.knn` etc. stay light.
"""


def __getattr__(name):
    if name == "run_probe":
        from seamo_jax.evaluate.probe import run_probe
        return run_probe
    raise AttributeError(f"module 'seamo_jax.evaluate' has no attribute {name!r}")
