"""Logical-axis -> mesh-axis rules (MaxText / big_vision style).

Params and activations are annotated with logical names (`embed`, `mlp`,
`heads`, `batch`, ...). `config.sharding_rules` says which mesh axes each
logical name is split over, so one model definition shards as pure data
parallel, FSDP or FSDP + tensor parallel just by changing the config.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from jax.sharding import Mesh

Rule = tuple[str, "str | tuple[str, ...] | None"]


class ShardingRulesError(ValueError):
    """`config.sharding_rules` is malformed or names an unknown mesh axis."""


def _normalise_target(logical: str, target: Any) -> str | tuple[str, ...] | None:
    """Turns a rule target into None, one axis name, or a tuple of axis names."""
    if target is None or target == "None" or target == ():
        return None
    if isinstance(target, str):
        return target
    if isinstance(target, Iterable):
        axes = tuple(target)
        if not all(isinstance(a, str) for a in axes):
            raise ShardingRulesError(f"rule for {logical!r}: mesh axes must be strings, got {target!r}")
        return axes[0] if len(axes) == 1 else axes
    raise ShardingRulesError(f"rule for {logical!r}: expected None, an axis name or a tuple of names, got {target!r}")


def logical_rules(sharding_rules: Sequence[Sequence[Any]], mesh: Mesh | None = None) -> tuple[Rule, ...]:
    """Validates `config.sharding_rules` and returns flax-style rules.

    Args:
      sharding_rules: pairs `(logical_name, mesh_axes)`, mesh_axes being None,
        an axis name, or a tuple of axis names.
      mesh: when given, every named mesh axis must exist in it.
    Returns:
      tuple of `(logical_name, None | str | tuple[str, ...])`, usable with
      `nn.logical_axis_rules` and `nn.logical_to_mesh_sharding`.
    Raises:
      ShardingRulesError: malformed pair, duplicate logical name, unknown
        mesh axis, or one mesh axis used twice inside a rule.
    """
    rules: list[Rule] = []
    seen: set[str] = set()
    for pair in sharding_rules:
        pair = tuple(pair)
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise ShardingRulesError(f"sharding rule {pair!r}: expected (logical_name, mesh_axes)")
        logical, target = pair[0], _normalise_target(pair[0], pair[1])
        if logical in seen:
            # flax takes the first matching rule; a duplicate is almost always a typo.
            raise ShardingRulesError(f"logical axis {logical!r} has more than one sharding rule")
        seen.add(logical)
        axes = () if target is None else ((target,) if isinstance(target, str) else target)
        if len(set(axes)) != len(axes):
            raise ShardingRulesError(f"rule for {logical!r} uses a mesh axis twice: {axes}")
        if mesh is not None:
            unknown = [a for a in axes if a not in mesh.axis_names]
            if unknown:
                raise ShardingRulesError(
                    f"rule for {logical!r} names mesh axes {unknown} not in the mesh {tuple(mesh.axis_names)}")
        rules.append((logical, target))
    return tuple(rules)


def batch_mesh_axes(rules: Sequence[Rule]) -> tuple[str, ...]:
    """Mesh axes of the logical `batch` axis (default `("data", "fsdp")`)."""
    for logical, target in rules:
        if logical == "batch":
            if target is None:
                return ()
            return (target,) if isinstance(target, str) else tuple(target)
    return ("data", "fsdp")
