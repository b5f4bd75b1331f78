"""Initialise some params from another run's checkpoint (progressive training).

Phase 2 of SeaMo (4 seasons + TM fusion) starts from phase 1 (1 season, no
fusion). Every param whose path and shape exist in the phase-1 checkpoint is
copied; the rest (TM blocks, anything resized) keeps its fresh init. The
report lists both, so a silently mismatched name cannot go unnoticed.
"""

from __future__ import annotations

from typing import Any

import jax

from seamo_jax.models import layer_layout

PyTree = Any


def _flat(tree: PyTree) -> dict[str, Any]:
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def warm_start_params(params: PyTree, pretrained: PyTree, shardings: PyTree) -> tuple[PyTree, dict[str, list[str]]]:
    """Copies matching leaves of `pretrained` into `params`.

    Args:
      params: freshly initialised (sharded) params.
      pretrained: params read with `load_params` (any placement).
      shardings: NamedSharding tree of `params`; copied leaves are placed with it.
    Returns:
      (params, report) with report keys "copied", "fresh" (not in the
      checkpoint or different shape) and "unused" (checkpoint-only leaves).
    """
    # Phase 1 may have run with the other `scan_layers` setting.
    source = _flat(layer_layout.match_layout(pretrained, like=params))
    report: dict[str, list[str]] = {"copied": [], "fresh": [], "unused": []}
    used = set()

    def take(path, leaf, sharding):
        key = jax.tree_util.keystr(path)
        old = source.get(key)
        if old is None or tuple(old.shape) != tuple(leaf.shape):
            report["fresh"].append(key)
            return leaf
        used.add(key)
        report["copied"].append(key)
        return jax.device_put(jax.numpy.asarray(old, leaf.dtype), sharding)

    params = jax.tree_util.tree_map_with_path(take, params, shardings)
    report["unused"] = sorted(set(source) - used)
    return params, report
