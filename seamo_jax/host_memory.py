"""glibc malloc setting that backs XLA:CPU's per-step buffers with huge pages.

Why: XLA:CPU allocates a step's temporaries (~4 GB for the ViT-S MAE train
step at batch 16) with malloc and frees them when the step ends. glibc
serves blocks that large with mmap and returns them with munmap, so every
step page-faults the whole working set in again, 4 KiB at a time: 711k minor
faults and ~2 s of kernel time per 7 s step on a 2-core CPU (issue 4). With
`glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge
pages (madvise), so the same step takes ~1.5k faults of 2 MiB, and the GEMMs
see fewer TLB misses: the step ran ~12% faster (7.3 s -> 6.2 s, same machine).

Also tried, and rejected: keeping freed memory mapped (mmap_max=0,
trim_threshold=inf, arena_max=1) removed the last faults but let the heap
fragment: a ViT-S SeaMo training run grew past 24 GB and was OOM-killed,
where glibc's defaults peak at 10 GB.

glibc reads GLIBC_TUNABLES only when a process starts, so the `seamo` command
and the benchmarks re-execute themselves once with the variable set
(`reexec_for_cpu_run`), and only when the run will compute on the CPU
(`likely_cpu_run`): on a GPU/TPU host XLA keeps a step's buffers in device
memory, so the tunables buy nothing there and a re-exec would only cost a
second interpreter start. Set SEAMO_DEFAULT_MALLOC=1 to opt out; tunables you
set yourself in GLIBC_TUNABLES win over these.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from typing import Callable, Mapping, Sequence

MALLOC_TUNABLES: tuple[tuple[str, str], ...] = (
    ("glibc.malloc.hugetlb", "1"),  # madvise(MADV_HUGEPAGE) on malloc's mmaps and heap
)
OPT_OUT_VARIABLE = "SEAMO_DEFAULT_MALLOC"
_MARKER_VARIABLE = "SEAMO_MALLOC_TUNED"
# Device nodes of the accelerators jax drives: NVIDIA GPUs, AMD GPUs (ROCm),
# TPU v2-v4 (/dev/accel*) and TPU v5+ (numbered VFIO groups).
ACCELERATOR_DEVICE_GLOBS = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*")


def merged_tunables(existing: str) -> str:
    """GLIBC_TUNABLES value with ours added; a key already in `existing` keeps its value."""
    entries = [item for item in existing.split(":") if item]
    present = {item.split("=", 1)[0] for item in entries}
    entries += [f"{key}={value}" for key, value in MALLOC_TUNABLES if key not in present]
    return ":".join(entries)


def tunables_to_apply(environ: Mapping[str, str], system: str | None = None,
                      libc: tuple[str, str] | None = None) -> str | None:
    """The GLIBC_TUNABLES value to re-execute with, or None when nothing should change.

    None when: not Linux/glibc, the user opted out (SEAMO_DEFAULT_MALLOC=1),
    this process is already the re-executed one, or every key is already set.
    """
    system = platform.system() if system is None else system
    libc = platform.libc_ver() if libc is None else libc
    if system != "Linux" or libc[0] != "glibc":
        return None
    if environ.get(OPT_OUT_VARIABLE, "") not in ("", "0") or environ.get(_MARKER_VARIABLE):
        return None
    existing = environ.get("GLIBC_TUNABLES", "")
    merged = merged_tunables(existing)
    return None if merged == existing else merged


def likely_cpu_run(environ: Mapping[str, str], device_globs: Sequence[str] = ACCELERATOR_DEVICE_GLOBS,
                   glob_fn: Callable[[str], list] = glob.glob) -> bool:
    """Whether jax will compute on the CPU here, decided WITHOUT initialising a jax backend.

    This must run before jax starts (glibc reads the tunables only at exec),
    so it cannot ask jax.devices(): that would start the backends (and grab
    GPU memory / the TPU) in a process about to be replaced. Instead:
    JAX_PLATFORMS (or the older JAX_PLATFORM_NAME), if set, names the
    platforms in priority order, and the first one decides; unset, jax picks
    an accelerator when one is present, so the run is on the CPU iff no
    accelerator device node exists. (A host with an accelerator but without
    jax's plugin for it is counted as an accelerator host: it misses the
    tunables, a speed loss only; JAX_PLATFORMS=cpu fixes that.)
    """
    platforms = environ.get("JAX_PLATFORMS", "") or environ.get("JAX_PLATFORM_NAME", "")
    first = next((name.strip().lower() for name in platforms.split(",") if name.strip()), "")
    if first:
        return first == "cpu"
    return not any(glob_fn(pattern) for pattern in device_globs)


def reexec_for_cpu_run() -> None:
    """`reexec_with_malloc_tunables` if this run will compute on the CPU (`likely_cpu_run`), else nothing."""
    if likely_cpu_run(os.environ):
        reexec_with_malloc_tunables()


def reexec_with_malloc_tunables() -> None:
    """Replace this process by the same command line with the malloc tunables set (at most once).

    Call it first thing in a command's entry point, before threads or big
    imports exist. Returns normally when nothing needs changing. The process
    keeps its PID, so signals and process supervisors are unaffected.
    """
    value = tunables_to_apply(os.environ)
    if value is None:
        return
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    os.environ["GLIBC_TUNABLES"] = value
    os.environ[_MARKER_VARIABLE] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])
