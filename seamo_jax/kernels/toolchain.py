"""Where compiled host kernels are cached and which C++ compiler builds them (no jax import:
the input pipeline's workers use it too)."""

from __future__ import annotations

import fcntl
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
from typing import Sequence


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


def cpu_flags() -> str:
    """The CPU's feature line (/proc/cpuinfo), part of a built library's cache key: -march=native code
    built on one CPU must not load on another."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def compile_shared_library(compiler: str, source: pathlib.Path, flags: Sequence[str],
                           target: pathlib.Path) -> pathlib.Path:
    """Compiles `source` to `target` under a file lock (a no-op if another process already built it).

    The library is written to a temporary name and renamed, so a reader never sees a partial file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            partial = pathlib.Path(tmp) / target.name
            command = [compiler, *flags, str(source), "-o", str(partial)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"compiling {source.name} failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
            os.replace(partial, target)
    return target
