"""The compiled crop_area view kernel (resize_kernel.cc): bilinear resize + normalise in one pass.

`augment.crop_resize_normalise` calls `resize_normalise` when the kernel is
available and falls back to the numpy path (`resize.resize_bilinear`, then
(x - mean) / std) otherwise; both give bitwise equal float32 views (the
kernel does the numpy path's float32 operations in the same order, built with
-ffp-contract=off). The kernel reads the raw window once (uint16 / uint8 /
float32, any strides, e.g. a flipped tile) and writes the view once, where the
numpy path makes ~10 passes over float32 temporaries; on the 2-core EPYC the
views of a 4-season SSL4EO-sized crop_area sample (13 S2 + 2 S1 bands, 224
px) cost ~3.7 CPU-ms instead of ~13 (docs/performance.md, "Record storage
and decode cost").

Built once per machine with $CXX / g++ / c++ / clang++ (-O3 -march=native)
into $SEAMO_KERNEL_CACHE (default ~/.cache/seamo_jax/kernels), named by a hash
of the source, flags and CPU flags; concurrent first builds serialise on a
file lock. No numpy-independent imports (no jax): Grain workers load it
cheaply. config.data.native_resize="off" keeps the numpy path (SampleSpec.native_resize).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import pathlib
import platform
import threading

import numpy as np

from seamo_jax.kernels import toolchain

SOURCE = pathlib.Path(__file__).with_name("resize_kernel.cc")
CXX_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-std=c++17", "-shared", "-fPIC", "-w")
DTYPES = {np.dtype(np.uint16): 0, np.dtype(np.uint8): 1, np.dtype(np.float32): 2}

_lock = threading.Lock()
_state: dict = {}


# The same cache folder and compiler choice as the model's CPU kernels.
_cache_dir = toolchain.cache_dir
_compiler = toolchain.find_compiler


_cpu_flags = toolchain.cpu_flags  # part of the library cache key


def _library_path(compiler: str) -> pathlib.Path:
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), " ".join(CXX_FLAGS).encode(), platform.machine().encode(),
                 _cpu_flags().encode()):
        key.update(part)
        key.update(b"\0")
    return _cache_dir() / f"seamo_resize_{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: pathlib.Path) -> pathlib.Path:
    return toolchain.compile_shared_library(compiler, SOURCE, CXX_FLAGS, target)


def load():
    """The kernel's ctypes function, or None (disabled, not Linux, no compiler, build failed: `load_error()`)."""
    with _lock:
        if "function" in _state:
            return _state["function"]
        function, error = None, None
        try:
            if platform.system() != "Linux":
                raise OSError(f"built for Linux only (this is {platform.system()})")
            compiler = _compiler()
            if compiler is None:
                raise FileNotFoundError("no C++ compiler found (set $CXX, or install g++)")
            library = ctypes.CDLL(str(_build(compiler, _library_path(compiler))))
            function = library.SeamoResizeNormalise
            pointer = ctypes.c_void_p
            function.argtypes = [ctypes.c_int, pointer] + [ctypes.c_int64] * 6 + [pointer] * 9
            function.restype = ctypes.c_int
            _state["library"] = library
        except (OSError, RuntimeError, AttributeError) as exc:
            function, error = None, f"{type(exc).__name__}: {exc}"
            logging.warning("crop_area views use the numpy resize (same values, ~3x the CPU): %s", error)
        _state["function"], _state["error"] = function, error
        return function


def load_error() -> str | None:
    """Why `load()` returned None (None if it has not been called or succeeded)."""
    return _state.get("error")


def supports(dtype) -> bool:
    return np.dtype(dtype) in DTYPES and load() is not None


def resize_normalise(window: np.ndarray, size: int, taps: tuple, mean: np.ndarray, std: np.ndarray,
                     out: np.ndarray) -> np.ndarray:
    """Bilinear resize of window [h, w, C] to [size, size, C], then (x - mean) / std, into `out` (float32, C-contiguous).

    taps: (y0, y1, wy, x0, x1, wx) of `resize._bilinear_taps` (int64 / float32 arrays).
    """
    function = load()
    if function is None:
        raise RuntimeError(f"resize kernel unavailable: {load_error()}")
    y0, y1, wy, x0, x1, wx = taps
    channels = window.shape[2]
    if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape != (size, size, channels):
        raise ValueError(f"out must be C-contiguous float32 {(size, size, channels)}, got {out.dtype} {out.shape}")
    item = window.itemsize
    strides = [s // item for s in window.strides]
    arrays = [np.ascontiguousarray(a, dtype) for a, dtype in ((y0, np.int64), (y1, np.int64), (wy, np.float32),
                                                              (x0, np.int64), (x1, np.int64), (wx, np.float32),
                                                              (mean, np.float32), (std, np.float32))]
    status = function(DTYPES[window.dtype], window.ctypes.data, strides[0], strides[1], strides[2], window.shape[1],
                      channels, size, *[a.ctypes.data for a in arrays], out.ctypes.data)
    if status != 0:
        raise ValueError(f"resize kernel: unsupported dtype {window.dtype}")
    return out
