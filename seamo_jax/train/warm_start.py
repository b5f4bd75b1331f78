"""Initialise some params from another run's checkpoint (progressive training).

Phase 2 of SeaMo (4 seasons + TM fusion) starts from phase 1 (1 season, no
fusion). Every param whose path and shape exist in the phase-1 checkpoint is
copied; the rest (TM blocks, anything resized) keeps its fresh init. The
report lists both, so a silently mismatched name cannot go unnoticed.

The checkpoint is read straight into the fresh params' shardings
(`checkpoint.restore_params`, a partial Orbax restore) and merged inside one
jit, so on a pod every host reads only its own shards and no host ever holds
the full params.
"""

from __future__ import annotations

from typing import Any

import jax

from seamo_jax.models import layer_layout
from seamo_jax.paths import PathLike
from seamo_jax.train import checkpoint as ckpt_lib

PyTree = Any


def warm_start_params(params: PyTree, checkpoint_dir: PathLike, shardings: PyTree, step: int | None = None
                      ) -> tuple[PyTree, dict[str, list[str]]]:
    """`params` with every leaf the checkpoint has (same path and shape) replaced by the checkpoint's.

    Args:
      params: freshly initialised, sharded params (global arrays).
      checkpoint_dir: the run to start from (workdir or checkpoints/ dir, local or URL).
      shardings: NamedSharding tree of `params`; the result keeps it.
      step: checkpoint step (default latest).
    Returns:
      (params, report) with report keys "copied", "fresh" (not in the
      checkpoint or different shape) and "unused" (checkpoint-only leaves).
    """
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params, shardings)
    restored, report = ckpt_lib.restore_params(checkpoint_dir, target, step=step)

    def merge(fresh: PyTree, pretrained: dict) -> PyTree:
        # Phase 1 may have run with the other `scan_layers` setting: convert
        # inside jit, so the (un)stacking is a device-side slice of shards.
        source = ckpt_lib.flat_leaves(layer_layout.match_layout(pretrained, like=fresh))
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: source.get(jax.tree_util.keystr(path), leaf).astype(leaf.dtype), fresh)

    merged = jax.jit(merge, out_shardings=shardings, donate_argnums=0)(params, restored)
    return merged, report
