"""Device mesh construction from `config.mesh`.

The mesh has the named axes of `config.mesh.axes` (normally
`("data", "fsdp", "model")`). One entry of `config.mesh.shape` may be -1,
meaning "all remaining devices", so the same config runs on 8 fake CPU
devices, one GPU node or a pod slice.

Axis types are `Auto`: our modules are written for GSPMD-style sharding
propagation with logical constraints, not for explicit sharding in types
(jax >= 0.7 defaults `jax.make_mesh` to Explicit).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh


class MeshConfigError(ValueError):
    """`config.mesh` cannot be laid out on the available devices."""


def resolve_mesh_shape(shape: Sequence[int], axes: Sequence[str], num_devices: int) -> tuple[int, ...]:
    """Replaces a single -1 in `shape` so that prod(shape) == num_devices.

    Args:
      shape: requested sizes per axis, positive ints or one -1.
      axes: axis names (only used in error messages).
      num_devices: devices the mesh must cover exactly.
    Returns:
      the concrete shape, same length as `shape`.
    Raises:
      MeshConfigError: wrong length, zero/negative sizes, several -1, or a
        product that does not match the device count.
    """
    shape = tuple(int(s) for s in shape)
    axes = tuple(axes)
    if len(shape) != len(axes):
        raise MeshConfigError(f"config.mesh.shape {shape} has {len(shape)} entries but config.mesh.axes {axes} has {len(axes)}")
    if len(set(axes)) != len(axes):
        raise MeshConfigError(f"config.mesh.axes {axes} contains duplicate names")
    fill = [i for i, s in enumerate(shape) if s == -1]
    bad = [(a, s) for a, s in zip(axes, shape) if s == 0 or s < -1]
    if bad:
        raise MeshConfigError(f"config.mesh.shape {shape}: sizes must be positive or -1, got {bad}")
    if len(fill) > 1:
        raise MeshConfigError(f"config.mesh.shape {shape}: at most one axis may be -1, got {[axes[i] for i in fill]}")
    fixed = math.prod(s for s in shape if s != -1)
    if fill:
        if num_devices % fixed:
            raise MeshConfigError(
                f"config.mesh.shape {shape} over {axes}: the fixed axes need a multiple of {fixed} devices, "
                f"but {num_devices} devices are available")
        shape = tuple(num_devices // fixed if s == -1 else s for s in shape)
    elif fixed != num_devices:
        raise MeshConfigError(
            f"config.mesh.shape {shape} over {axes} needs {fixed} devices, but {num_devices} are available "
            f"(use -1 on one axis to fill with the remaining devices)")
    return shape


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the training mesh.

    Args:
      mesh_config: `config.mesh` with `shape` (ints, one may be -1) and `axes`.
      devices: devices to lay out; defaults to all global devices
        (`jax.devices()`, across processes).
    Returns:
      a `Mesh` with Auto axis types. With default devices the layout comes
      from `jax.make_mesh`, which orders devices for the physical topology
      (ICI rings on TPU); explicit devices are used in the order given.
    """
    axes = tuple(mesh_config.axes)
    device_list = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_config.shape, axes, len(device_list))
    axis_types = (AxisType.Auto,) * len(axes)
    if devices is None:
        return jax.make_mesh(shape, axes, axis_types=axis_types)
    return Mesh(np.asarray(device_list, dtype=object).reshape(shape), axes, axis_types=axis_types)


def data_parallel_size(mesh: Mesh, batch_axes: Sequence[str] = ("data", "fsdp")) -> int:
    """Number of shards of the batch dimension (product of the batch axes present)."""
    return math.prod(mesh.shape[a] for a in batch_axes if a in mesh.shape)
