"""Where compiled host kernels are cached and which C++ compiler builds them (no jax import:
the input pipeline's workers use it too)."""

from __future__ import annotations

import os
import pathlib
import shutil


def cache_dir() -> pathlib.Path:
    """Where built kernels are kept: $SEAMO_KERNEL_CACHE or ~/.cache/seamo_jax/kernels."""
    default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "seamo_jax" / "kernels"
    return pathlib.Path(os.environ.get("SEAMO_KERNEL_CACHE", default))


def find_compiler() -> str | None:
    """$CXX if set, else the first of g++, c++, clang++ on PATH."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"]) or os.environ["CXX"]
    for name in ("g++", "c++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None
