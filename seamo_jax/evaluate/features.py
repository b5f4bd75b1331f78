"""Frozen-feature extraction: jitted encode, batched, sharded over the mesh's batch axes, cached.

Probing evaluates many classifiers (seeds x label fractions x kNN/linear) on
the same frozen features, so features are computed once per (encoder params,
input data, input subset, pooling) and cached as `.npy`. The cache key is a
sha256 over the *content* of the params and of the normalised views plus the
subset description, so a retrained checkpoint at the same path, a different
random init or a different crop can never hit a stale file.

Each batch is placed with the training batch sharding (dim 0 split over the
mesh axes the config's `sharding_rules` give the logical "batch" axis) and
params are replicated; the last batch is padded
to the full batch size so one compilation serves every batch, and the
padding rows are dropped.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seamo_jax.parallel import batch_mesh_axes, batch_sharding, data_parallel_size
from seamo_jax.paths import PathLike, user_path, write_bytes_atomic

PyTree = Any
# encode_fn(variables, views, offsets) -> pooled [B, D]
EncodeFn = Callable[[PyTree, Mapping[str, jax.Array], jax.Array], jax.Array]


def tree_digest(tree: PyTree) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every leaf (numpy or jax)."""
    digest = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.shape}|{array.dtype}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cache_key(params_digest: str, views: Mapping[str, np.ndarray], offsets: np.ndarray, description: Mapping[str, Any]) -> str:
    """Cache file stem for features of `params` on (views, offsets) under `description` (subset, pooling...)."""
    data_digest = tree_digest({"views": dict(views), "offsets": offsets})
    text = json.dumps({"params": params_digest, "data": data_digest, **description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if len(x) == rows:
        return x
    pad = np.zeros((rows - len(x), *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad], 0)


@functools.lru_cache(maxsize=32)
def _jitted(encode_fn: EncodeFn, in_sharding: NamedSharding):
    """One jit wrapper per (encode function object, batch sharding): repeated extractions reuse the compilation."""
    replicated = NamedSharding(in_sharding.mesh, P())
    return jax.jit(encode_fn, in_shardings=(replicated, in_sharding, in_sharding), out_shardings=replicated)


def extract_features(encode_fn: EncodeFn, variables: PyTree, views: Mapping[str, np.ndarray], offsets: np.ndarray, *,
                     mesh: Mesh, rules: Sequence[tuple] = (), batch_size: int = 64) -> np.ndarray:
    """Runs `encode_fn` over all samples in batches on `mesh`.

    Args:
      encode_fn: pure function (variables, views, offsets) -> pooled [B, D].
      variables: encoder variables ({"params": ...}), replicated on the mesh.
      views: modality -> [N, S, h, w, C_m] normalised float32.
      offsets: [N, S, 2] int32 crop origins.
      mesh: device mesh.
      rules: logical-axis rules (the model's activation constraints, and
        the mesh axes of "batch" that split each batch).
      batch_size: global batch; rounded up to a multiple of the data-parallel size.
    Returns:
      float32 [N, D].
    """
    batch_axes = batch_mesh_axes(rules)
    shards = data_parallel_size(mesh, batch_axes)
    batch_size = -(-max(int(batch_size), 1) // shards) * shards
    in_sharding = batch_sharding(mesh, batch_axes)
    replicated = NamedSharding(mesh, P())
    encode = _jitted(encode_fn, in_sharding)
    num = len(offsets)
    outputs = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        variables = jax.device_put(variables, replicated)
        for start in range(0, num, batch_size):
            stop = min(start + batch_size, num)
            batch_views = {m: jax.device_put(_pad_rows(np.asarray(v[start:stop], np.float32), batch_size), in_sharding)
                           for m, v in views.items()}
            batch_offsets = jax.device_put(_pad_rows(np.asarray(offsets[start:stop], np.int32), batch_size), in_sharding)
            pooled = encode(variables, batch_views, batch_offsets)
            outputs.append(np.asarray(pooled, np.float32)[:stop - start])
    return np.concatenate(outputs, 0)


def cached_features(cache_dir: PathLike | None, key: str, compute: Callable[[], np.ndarray],
                    description: Mapping[str, Any] | None = None) -> np.ndarray:
    """Loads `<cache_dir>/<key>.npy`, or computes, saves (atomically) and returns it.

    `description` is written beside it as `<key>.json` so a cache dir can be
    inspected by hand. cache_dir None disables caching.
    """
    if cache_dir is None:
        return compute()
    path = user_path(cache_dir) / f"{key}.npy"
    if path.exists():
        return np.load(io.BytesIO(path.read_bytes()))
    features = np.asarray(compute(), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    np.save(encoded, features)
    write_bytes_atomic(path, encoded.getvalue())
    if description is not None:
        path.with_suffix(".json").write_text(json.dumps(dict(description), indent=2, sort_keys=True, default=str))
    return features
