"""Loading experiment configs: a shipped name or a file, `[:arg]`, plus `--config.key=value` overrides.

Configs are Python files with `get_config(arg) -> ml_collections.ConfigDict`
(big_vision style) that start from `seamo_jax/experiments/base.py`, which
holds every key and its default. A spec is either the name of an experiment
shipped in the package (`demo_cpu`, `demo_cpu:fast`; also the older
spelling `experiments/demo_cpu.py`) or the path of a config file of one's own.

The loaded config is locked (ml_collections' `ConfigDict.lock`): an unknown
key, in a config file or an override, is an error naming the closest valid
key; fields keep their type (`--config.train.num_steps=abc` is an error).
Overrides are parsed as Python literals, as ml_collections' config_flags
does; config_flags itself is not used because it needs absl flags in place
of the CLI's argparse, and its errors print the whole section.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import pathlib
import re
import traceback
from typing import Any, Sequence

import ml_collections

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent / "experiments"


class ConfigError(ValueError):
    """A config file or override is wrong (unknown key, wrong type, missing file)."""


def shipped_experiments() -> list[str]:
    """Names of the experiment configs shipped in seamo_jax/experiments (base excluded)."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if p.stem not in ("__init__", "base"))


def resolve_config_path(path_text: str) -> pathlib.Path:
    """A config file path: an existing file, else the shipped experiment it names.

    `demo_cpu`, `demo_cpu.py` and `experiments/demo_cpu.py` (the older spelling)
    name seamo_jax/experiments/demo_cpu.py when no such file exists.
    """
    path = pathlib.Path(path_text).expanduser()
    if path.is_file():
        return path
    shipped = EXPERIMENTS_DIR / f"{path.stem}.py"
    if path.parent.name in ("", "experiments") and path.suffix in ("", ".py") and shipped.is_file() \
            and path.stem != "base":
        return shipped
    near = difflib.get_close_matches(path.stem, shipped_experiments(), n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise FileNotFoundError(f"config file {path_text} not found, and no shipped experiment has that name{hint} "
                            f"(shipped: {', '.join(shipped_experiments())})")


def _locked_key_error(error: Exception, path: pathlib.Path) -> ConfigError | None:
    """ml_collections' 'Key "x" does not exist ... locked' as one line naming the file line and the closest key."""
    text = str(error.args[0] if error.args else error)
    key = re.search(r'Key "([^"]+)" does not exist', text) or re.match(r"'([^']+)'", text)
    if not key:
        return None
    near = re.search(r'Did you mean "([^"]+)"', text)
    where = ""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if pathlib.Path(frame.filename).resolve().parent == EXPERIMENTS_DIR or frame.filename == str(path):
            where = f" line {frame.lineno} (`{frame.line}`)"
            break
    hint = f"; did you mean {near.group(1)!r}?" if near else ""
    return ConfigError(f"config file {path}{where}: no config field {key.group(1)!r}{hint} "
                       f"(every key and its default: seamo_jax/experiments/base.py)")


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `name[:arg]` or `path/to/file.py[:arg]` by calling its `get_config(arg)`; returns it locked."""
    path_text, _, arg = spec.partition(":")
    path = resolve_config_path(path_text)
    module = load_config_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config(arg)")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except (AttributeError, KeyError) as error:
        friendly = _locked_key_error(error, path)
        if friendly is None:
            raise
        raise friendly from error
    return lock_all(config)


def lock_all(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks `config` and every section in it.

    ConfigDict.lock() stops at an already-locked dict, and a section an
    experiment replaced whole (builder_kwargs, sensors) comes in unlocked.
    """
    config.unlock()
    config.lock()
    return config


def load_config_module(config_file: str | pathlib.Path) -> Any:
    """Imports a config file (local Python source, never a bucket path) as a module.

    Shipped experiments import as `seamo_jax.experiments.<name>`, so configs
    may build on each other (`from seamo_jax.experiments import demo_cpu`).
    """
    config_file = pathlib.Path(config_file).resolve()
    if config_file.parent == EXPERIMENTS_DIR:
        return importlib.import_module(f"seamo_jax.experiments.{config_file.stem}")
    module_spec = importlib.util.spec_from_file_location(f"seamo_config_{config_file.stem}", config_file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def base_config() -> ml_collections.ConfigDict:
    """seamo_jax/experiments/base.py: every key with its default, locked."""
    from seamo_jax.experiments import base

    return base.get_config()


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
            raise ConfigError(f"override {item!r} must look like --config.key=value")
        key = key.removeprefix("--").removeprefix("config.")
        parent = config
        *path, leaf = key.split(".")
        for depth, part in enumerate(path):
            if part not in parent:
                raise ConfigError(f"override {item!r}: no config field {'.'.join(path[:depth + 1])!r}"
                               f"{_closest(part, parent, path[:depth])}")
            parent = parent[part]
        if leaf not in parent:
            raise ConfigError(f"override {item!r}: no config field {key!r}{_closest(leaf, parent, path)}")
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
            raise ConfigError(f"override {item!r}: config.{key} takes a value of type {type(current).__name__} "
                            f"(now {current!r}), got {value!r}") from None
    return config


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    return apply_overrides(load_config_file(spec), overrides)


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


# Sections whose keys depend on the builder / sensors named: replaced whole, not merged key by key.
FREE_FORM_SECTIONS = (("data", "builder_kwargs"), ("data", "sensors"), ("probe", "builder_kwargs"), ("probe", "sensors"))
# Keys older runs wrote that this version no longer has (dropped when their config.json is read).
RETIRED_KEYS = (("model", "name"),)


def _to_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def config_from_dict(values: dict, origin: str = "config") -> ml_collections.ConfigDict:
    """The base config updated with `values` (a run's saved config), locked.

    Keys missing from `values` keep their base default; a key the base does
    not have is a ConfigError naming it.
    """
    values = _to_tuples(values)
    for section, key in RETIRED_KEYS:
        values.get(section, {}).pop(key, None)
    config = base_config()
    with config.unlocked():
        for section, key in FREE_FORM_SECTIONS:
            if key in values.get(section, {}):
                config[section][key] = ml_collections.ConfigDict(values[section].pop(key))

    def merge(target: ml_collections.ConfigDict, source: dict, path: tuple[str, ...]) -> None:
        for key, value in source.items():
            if key not in target:
                dotted = ".".join(path + (key,))
                raise ConfigError(f"{origin} has field {dotted!r}, which this version of seamo_jax does not know "
                                  f"(seamo_jax/experiments/base.py lists every key)")
            if isinstance(target[key], ml_collections.ConfigDict) and isinstance(value, dict):
                merge(target[key], value, path + (key,))
            else:
                try:
                    target[key] = value
                except TypeError as error:
                    raise ConfigError(f"{origin}: field {'.'.join(path + (key,))!r}: {error}") from None

    merge(config, values, ())
    return lock_all(config)


def config_from_json(text: str, origin: str = "config") -> ml_collections.ConfigDict:
    """Inverse of config_to_json (lists come back as tuples, as configs write them), on top of the base config."""
    return config_from_dict(json.loads(text), origin)
