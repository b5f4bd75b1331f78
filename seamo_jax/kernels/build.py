"""Compile, load and register the CPU kernels of cpu_kernels.cc (once per machine, cached).

The kernels need a C++17 compiler (`$CXX`, else g++ / c++ / clang++), XLA's
FFI headers (shipped in jaxlib) and an ILP64 OpenBLAS with
`openblas_set_num_threads_local` (numpy >= 2 wheels on Linux bundle one,
`scipy-openblas64`). The shared library is built with -march=native into
`$SEAMO_KERNEL_CACHE` (default ~/.cache/seamo_jax/kernels), named by a hash of
the source, jaxlib version, compiler flags and this CPU's feature flags, so a
cache shared between different machines never runs code built for another
CPU. Concurrent first uses (tests, several processes) serialise on a file
lock and publish the library with an atomic rename.

Anything missing makes `load()` return None with a reason (`load_error()`);
the model then uses XLA's own ops, which compute the same values.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import pathlib
import platform
import threading

import jax
import jaxlib
import numpy as np

from seamo_jax.kernels import toolchain

SOURCE = pathlib.Path(__file__).with_name("cpu_kernels.cc")
FFI_TARGETS = {"seamo_gemm": "SeamoGemm", "seamo_attention_fwd": "SeamoAttentionFwd",
               "seamo_attention_bwd": "SeamoAttentionBwd", "seamo_bias_gelu_fwd": "SeamoBiasGeluFwd",
               "seamo_bias_gelu_bwd": "SeamoBiasGeluBwd", "seamo_layer_norm_fwd": "SeamoLayerNormFwd",
               "seamo_layer_norm_bwd": "SeamoLayerNormBwd", "seamo_attention_qkv_fwd": "SeamoAttentionQkvFwd",
               "seamo_attention_qkv_bwd": "SeamoAttentionQkvBwd"}
CXX_FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-std=c++17", "-shared", "-fPIC", "-w")

_lock = threading.Lock()
_state: dict = {}


cache_dir = toolchain.cache_dir
find_compiler = toolchain.find_compiler


def find_openblas() -> ctypes.CDLL:
    """numpy's bundled ILP64 OpenBLAS (scipy-openblas64), with the two entry points the kernels call."""
    numpy_dir = pathlib.Path(np.__file__).resolve().parent
    candidates = sorted(glob.glob(str(numpy_dir.parent / "numpy.libs" / "libscipy_openblas64_*.so*")))
    for path in candidates:
        library = ctypes.CDLL(path)
        if hasattr(library, "scipy_cblas_sgemm64_") and hasattr(library, "openblas_set_num_threads_local"):
            return library
    raise FileNotFoundError(f"no ILP64 OpenBLAS with openblas_set_num_threads_local next to numpy "
                            f"({numpy_dir.parent / 'numpy.libs'}); numpy >= 2 Linux wheels ship one")


_cpu_flags = toolchain.cpu_flags  # part of the library cache key


def library_path(compiler: str) -> pathlib.Path:
    """The cache path of the library this source/compiler/CPU combination builds."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), jaxlib.__version__.encode(), compiler.encode(), " ".join(CXX_FLAGS).encode(),
                 platform.machine().encode(), _cpu_flags().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"seamo_cpu_kernels_{key.hexdigest()[:16]}.so"


def build(compiler: str, target: pathlib.Path) -> pathlib.Path:
    """Compile cpu_kernels.cc to `target` (no-op if another process already did)."""
    return toolchain.compile_shared_library(compiler, SOURCE, [*CXX_FLAGS, f"-I{jax.ffi.include_dir()}"], target)


def load() -> ctypes.CDLL | None:
    """Build (first time), load and register the kernels with XLA; None if they cannot be used here."""
    with _lock:
        if "library" in _state:
            return _state["library"]
        library, error = None, None
        try:
            if platform.system() != "Linux":
                raise OSError(f"CPU kernels are built for Linux only (this is {platform.system()})")
            blas = find_openblas()
            compiler = find_compiler()
            if compiler is None:
                raise FileNotFoundError("no C++ compiler found (set $CXX, or install g++)")
            library = ctypes.CDLL(str(build(compiler, library_path(compiler))))
            library.SeamoSetBlas.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            library.SeamoSetBlas(ctypes.cast(blas.scipy_cblas_sgemm64_, ctypes.c_void_p),
                                 ctypes.cast(blas.openblas_set_num_threads_local, ctypes.c_void_p))
            for target, symbol in FFI_TARGETS.items():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
            _state["blas"] = blas  # keep the handle (and so the library) alive
        except (OSError, RuntimeError, AttributeError) as exc:
            library, error = None, f"{type(exc).__name__}: {exc}"
        _state["library"], _state["error"] = library, error
        return library


def load_error() -> str | None:
    """Why `load()` returned None (None if it has not been called or succeeded)."""
    return _state.get("error")
