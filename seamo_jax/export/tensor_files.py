"""Params pytree <-> flat "a/b/c" names <-> safetensors files, numpy only.

Exported weights must be readable without JAX/Flax (a PyTorch user, a numpy
script), so files are safetensors with flat names and the loader below needs
only numpy + safetensors. Example (no JAX needed):

    from seamo_jax.export.tensor_files import load_numpy
    tensors = load_numpy("export/encoder.safetensors")            # {"encoder/cls_token": array, ...}
    tree = load_numpy("export/encoder.safetensors", nested=True)  # {"encoder": {"cls_token": ...}}

Or with the safetensors package alone: `safetensors.numpy.load_file(path)`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import safetensors.numpy
from etils import epath

from seamo_jax.paths import PathLike, user_path

SEPARATOR = "/"


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict of arrays -> {"a/b/c": np.ndarray}, keys in sorted order.

    Accepts Flax param dicts (FrozenDict, or boxed `nn.Partitioned` leaves
    after `nn.meta.unbox`) and jax/numpy leaves.
    """
    flat: dict[str, np.ndarray] = {}
    for key in sorted(tree):
        value = tree[key]
        name = f"{prefix}{SEPARATOR}{key}" if prefix else str(key)
        if SEPARATOR in str(key):
            raise ValueError(f"param name {key!r} contains the separator {SEPARATOR!r}")
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, name))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """{"a/b/c": x} -> {"a": {"b": {"c": x}}}; inverse of `flatten_tree`."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(SEPARATOR)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_tensors(path: PathLike, tensors: Mapping[str, np.ndarray],
                 metadata: Mapping[str, str] | None = None) -> epath.Path:
    """Writes flat tensors (contiguous copies, safetensors needs them) to `path` (local or URL)."""
    path = user_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    path.write_bytes(safetensors.numpy.save(contiguous, metadata=dict(metadata or {})))  # one whole-file write
    return path


def load_numpy(path: PathLike, nested: bool = False) -> dict[str, Any]:
    """Reads a safetensors file (local or URL) into numpy: flat {"a/b": array}, or nested dicts when `nested`."""
    flat = safetensors.numpy.load(user_path(path).read_bytes())
    return unflatten(flat) if nested else dict(flat)
