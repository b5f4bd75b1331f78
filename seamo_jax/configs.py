"""Loading experiment configs: `experiments/<file>.py[:arg]` plus `--config.key=value` overrides.

Configs are plain Python files with `get_config(arg) -> ml_collections.ConfigDict`
(big_vision style). Overrides are parsed as Python literals and type-checked
by ConfigDict against the existing field, so `--config.train.num_steps=1e3`
fails loudly instead of silently becoming a float.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import pathlib
from typing import Any, Sequence

import ml_collections


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/file.py` or `path/to/file.py:arg` by calling its `get_config(arg)`."""
    path_text, _, arg = spec.partition(":")
    path = pathlib.Path(path_text)
    if not path.is_file() and not path.is_absolute():
        # `seamo demo` run outside the repo: experiments/ lives beside the package.
        beside_package = pathlib.Path(__file__).resolve().parents[1] / path
        path = beside_package if beside_package.is_file() else path
    if not path.is_file():
        raise FileNotFoundError(f"config file {path_text} not found")
    module = load_config_module(path)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path} defines no get_config(arg)")
    config = module.get_config(arg) if arg else module.get_config()
    return config


def load_config_module(config_file: str | pathlib.Path) -> Any:
    """Imports a config file (local Python source, never a bucket path) as a module.

    Configs may build on each other's helpers.
    """
    config_file = pathlib.Path(config_file)
    module_spec = importlib.util.spec_from_file_location(f"seamo_config_{config_file.stem}", config_file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare strings: --config.model.size=vit_b16


def _closest(name: str, parent: Any, path: Sequence[str]) -> str:
    """'; did you mean config.a.b?' for the nearest existing key, else the keys there."""
    keys = sorted(str(k) for k in parent.keys())
    near = difflib.get_close_matches(name, keys, n=1)
    prefix = "config." + "".join(f"{p}." for p in path)
    return f"; did you mean {prefix}{near[0]}?" if near else f"; fields of {prefix.rstrip('.')}: {', '.join(keys)}"


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies `config.a.b=value` (or `a.b=value`) overrides in place and returns the config."""
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like config.key=value")
        key = key.removeprefix("--").removeprefix("config.")
        parent = config
        *path, leaf = key.split(".")
        for depth, part in enumerate(path):
            if part not in parent:
                raise KeyError(f"override {item!r}: no config field {'.'.join(path[:depth + 1])!r}"
                               f"{_closest(part, parent, path[:depth])}")
            parent = parent[part]
        if leaf not in parent:
            raise KeyError(f"override {item!r}: no config field {key!r}{_closest(leaf, parent, path)}")
        value = _parse_value(value_text)
        current = parent[leaf]
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(current, tuple) and isinstance(value, str):
            value = tuple(v for v in value.split(",") if v)  # --config.data.modalities=s2,s1
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            parent[leaf] = value
        except TypeError:  # ConfigDict refuses a value of another type than the field's
            raise TypeError(f"override {item!r}: config.{key} takes a value of type {type(current).__name__} "
                            f"(now {current!r}), got {value!r}") from None
    return config


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    return apply_overrides(load_config_file(spec), overrides)


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of config_to_json (lists come back as tuples, as configs write them)."""

    def to_tuples(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: to_tuples(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(to_tuples(v) for v in value)
        return value

    return ml_collections.ConfigDict(to_tuples(json.loads(text)))
