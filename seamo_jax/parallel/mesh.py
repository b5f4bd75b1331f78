"""Device mesh construction from `config.mesh`.

The mesh has the named axes of `config.mesh.axes` (normally
`("data", "fsdp", "model")`). One entry of `config.mesh.shape` may be -1,
meaning "all remaining devices", so the same config runs on 8 fake CPU
devices, one GPU node or a pod slice.

Axis types are `Auto`: our modules are written for GSPMD-style sharding
propagation with logical constraints, not for explicit sharding in types
(jax >= 0.7 defaults `jax.make_mesh` to Explicit).

Several slices (multi-slice TPU over DCN, multi-node GPU), as MaxText does:
`config.mesh.shape` is then the layout inside ONE slice (ICI; -1 fills a
slice's devices) and `config.mesh.dcn_shape` how many slices each axis
spans (one entry may be -1: all slices); the mesh has shape
`shape * dcn_shape` and is built by
`jax.experimental.mesh_utils.create_hybrid_device_mesh`, so along an axis
with dcn size 1 every device group lies inside one slice. Only the axes of
`config.mesh.dcn_axes` (default `("data",)`) may have dcn size > 1: FSDP
all-gathers and tensor-parallel collectives on the slow DCN links are a
config error unless listed there. What a slice is:
`config.mesh.slice_granularity` = "slice" (the devices' `slice_index`,
TPU), "process" (one process = one slice: a multi-node GPU run with one
process per node) or "auto" (slice on TPU, else process); or
`config.mesh.devices_per_slice = N > 0`: N consecutive devices in
(process, id) order, e.g. 8 for one-process-per-GPU runs on 8-GPU nodes. `dcn_shape` None or all ones = one slice, the layout of
`jax.make_mesh`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh


class MeshConfigError(ValueError):
    """`config.mesh` cannot be laid out on the available devices."""


def resolve_mesh_shape(shape: Sequence[int], axes: Sequence[str], num_devices: int, *,
                       name: str = "config.mesh.shape", unit: str = "devices") -> tuple[int, ...]:
    """Replaces a single -1 in `shape` so that prod(shape) == num_devices.

    Args:
      shape: requested sizes per axis, positive ints or one -1.
      axes: axis names (only used in error messages).
      num_devices: devices the mesh must cover exactly.
      name, unit: how error messages call the shape and what it counts
        (e.g. "config.mesh.dcn_shape", "slices").
    Returns:
      the concrete shape, same length as `shape`.
    Raises:
      MeshConfigError: wrong length, zero/negative sizes, several -1, or a
        product that does not match the device count.
    """
    shape = tuple(int(s) for s in shape)
    axes = tuple(axes)
    if len(shape) != len(axes):
        raise MeshConfigError(f"{name} {shape} has {len(shape)} entries but config.mesh.axes {axes} has {len(axes)}")
    if len(set(axes)) != len(axes):
        raise MeshConfigError(f"config.mesh.axes {axes} contains duplicate names")
    fill = [i for i, s in enumerate(shape) if s == -1]
    bad = [(a, s) for a, s in zip(axes, shape) if s == 0 or s < -1]
    if bad:
        raise MeshConfigError(f"{name} {shape}: sizes must be positive or -1, got {bad}")
    if len(fill) > 1:
        raise MeshConfigError(f"{name} {shape}: at most one axis may be -1, got {[axes[i] for i in fill]}")
    fixed = math.prod(s for s in shape if s != -1)
    if fill:
        if num_devices % fixed:
            raise MeshConfigError(
                f"{name} {shape} over {axes}: the fixed axes need a multiple of {fixed} {unit}, "
                f"but {num_devices} {unit} are available")
        shape = tuple(num_devices // fixed if s == -1 else s for s in shape)
    elif fixed != num_devices:
        raise MeshConfigError(
            f"{name} {shape} over {axes} needs {fixed} {unit}, but {num_devices} are available "
            f"(use -1 on one axis to fill with the remaining {unit})")
    return shape


def _get(mesh_config: Any, key: str, default: Any) -> Any:
    getter = getattr(mesh_config, "get", None)
    value = getter(key, default) if getter else getattr(mesh_config, key, default)
    return default if value is None else value


def dcn_shape_of(mesh_config: Any) -> tuple[int, ...] | None:
    """`config.mesh.dcn_shape` as ints, or None for a single slice (missing, None or all ones)."""
    dcn = _get(mesh_config, "dcn_shape", None)
    if dcn is None:
        return None
    dcn = tuple(int(d) for d in dcn)
    axes = tuple(mesh_config.axes)
    if len(dcn) != len(axes):
        raise MeshConfigError(f"config.mesh.dcn_shape {dcn} has {len(dcn)} entries but config.mesh.axes {axes} "
                              f"has {len(axes)}")
    return None if all(d == 1 for d in dcn) else dcn


def _resolve_granularity(devices: Sequence[Any], granularity: str | int) -> str:
    granularity = str(granularity).strip()
    if granularity != "auto":
        return granularity
    on_tpu = all(getattr(d, "platform", "") == "tpu" and getattr(d, "slice_index", None) is not None
                 for d in devices)
    return "slice" if on_tpu else "process"


def group_into_slices(devices: Sequence[Any], granularity: str | int = "auto") -> list[list[Any]]:
    """Devices grouped by slice (module docstring), slices sorted by key, device order kept.

    Raises:
      MeshConfigError: unknown granularity, devices without `slice_index` for
        "slice", a device count not divisible by N (a digit string "N" =
        `devices_per_slice`).
    """
    devices = list(devices)
    granularity = _resolve_granularity(devices, granularity)
    if granularity in ("slice", "process"):
        attr = "slice_index" if granularity == "slice" else "process_index"
        missing = [d for d in devices if getattr(d, attr, None) is None]
        if missing:
            raise MeshConfigError(
                f"config.mesh.slice_granularity={granularity!r}: device {missing[0]} has no {attr} "
                f"(off TPU use slice_granularity='process' or config.mesh.devices_per_slice)")
        groups: dict[int, list[Any]] = {}
        for d in devices:
            groups.setdefault(int(getattr(d, attr)), []).append(d)
        return [groups[k] for k in sorted(groups)]
    if granularity.isdigit() and int(granularity) > 0:
        size = int(granularity)
        if len(devices) % size:
            raise MeshConfigError(f"config.mesh.devices_per_slice={size} does not divide "
                                  f"{len(devices)} devices")
        ordered = sorted(devices, key=lambda d: (int(getattr(d, "process_index", 0)), int(d.id)))
        return [ordered[i:i + size] for i in range(0, len(ordered), size)]
    raise MeshConfigError(f"config.mesh.slice_granularity must be 'auto', 'slice' or 'process' (or set "
                          f"config.mesh.devices_per_slice), got {granularity!r}")


def hybrid_device_array(mesh_config: Any, devices: Sequence[Any]) -> np.ndarray:
    """Device array [shape * dcn_shape] of a multi-slice mesh (module docstring).

    Works on anything carrying the attributes `mesh_utils` reads (`id`,
    `platform`, `device_kind`, `process_index`, and on TPU `slice_index`,
    `coords`, `core_on_chip`), so it is testable with fake devices.

    Raises:
      MeshConfigError: dcn_shape of the wrong length or not matching the
        slice count, dcn size > 1 on an axis not in `dcn_axes`, slices of
        different sizes, a `shape` that does not fill one slice.
    """
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top

    axes = tuple(mesh_config.axes)
    dcn = dcn_shape_of(mesh_config) or (1,) * len(axes)
    per_slice = int(_get(mesh_config, "devices_per_slice", 0))
    granularity = _resolve_granularity(
        devices, str(per_slice) if per_slice > 0 else _get(mesh_config, "slice_granularity", "auto"))
    slices = group_into_slices(devices, granularity)
    dcn = resolve_mesh_shape(dcn, axes, len(slices), name="config.mesh.dcn_shape", unit="slices")
    allowed = tuple(_get(mesh_config, "dcn_axes", ("data",)))
    unknown = [a for a in allowed if a not in axes]
    if unknown:
        raise MeshConfigError(f"config.mesh.dcn_axes {allowed} names axes {unknown} not in config.mesh.axes {axes}")
    spanning = [(a, d) for a, d in zip(axes, dcn) if d > 1 and a not in allowed]
    if spanning:
        raise MeshConfigError(
            f"config.mesh.dcn_shape {dcn} over {axes} puts {', '.join(f'{a} over {d} slices' for a, d in spanning)}: "
            f"only {allowed} may span slices (DCN is ~10-100x slower than ICI; keep fsdp/model inside a slice, "
            f"or list the axis in config.mesh.dcn_axes to allow it)")
    sizes = sorted({len(s) for s in slices})
    if len(sizes) > 1:
        raise MeshConfigError(f"slices ({granularity!r}) have different device counts {sizes}: "
                              f"cannot lay out one config.mesh.shape in each")
    ici = resolve_mesh_shape(mesh_config.shape, axes, sizes[0], name="config.mesh.shape (inside one slice)")
    split = bool(_get(mesh_config, "allow_split_physical_axes", False))
    if granularity in ("slice", "process"):
        return mesh_utils.create_hybrid_device_mesh(
            ici, dcn, [d for s in slices for d in s], process_is_granule=granularity == "process",
            allow_split_physical_axes=split)
    # devices_per_slice: mesh_utils has no such granule; its assembly, by hand.
    meshes = [mesh_utils.create_device_mesh(ici, s, allow_split_physical_axes=split) for s in slices]
    blocks = np.empty(dcn, dtype=object)
    for i, index in enumerate(np.ndindex(*dcn)):
        blocks[index] = meshes[i]
    return np.block(blocks.tolist())


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the training mesh.

    Args:
      mesh_config: `config.mesh` with `shape` (ints, one may be -1) and
        `axes`; optionally `dcn_shape`, `dcn_axes`, `slice_granularity`,
        `devices_per_slice`, `allow_split_physical_axes` (multi-slice,
        module docstring).
      devices: devices to lay out; defaults to all global devices
        (`jax.devices()`, across processes).
    Returns:
      a `Mesh` with Auto axis types. Single slice: with default devices the
      layout comes from `jax.make_mesh`, which orders devices for the
      physical topology (ICI rings on TPU); explicit devices are used in the
      order given. Several slices: `hybrid_device_array`.
    """
    axes = tuple(mesh_config.axes)
    axis_types = (AxisType.Auto,) * len(axes)
    if dcn_shape_of(mesh_config) is not None:
        device_array = hybrid_device_array(mesh_config, list(jax.devices() if devices is None else devices))
        return Mesh(device_array, axes, axis_types=axis_types)
    device_list = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_config.shape, axes, len(device_list))
    if devices is None:
        return jax.make_mesh(shape, axes, axis_types=axis_types)
    return Mesh(np.asarray(device_list, dtype=object).reshape(shape), axes, axis_types=axis_types)


def data_parallel_size(mesh: Mesh, batch_axes: Sequence[str] = ("data", "fsdp")) -> int:
    """Number of shards of the batch dimension (product of the batch axes present)."""
    return math.prod(mesh.shape[a] for a in batch_axes if a in mesh.shape)
