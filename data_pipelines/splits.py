"""Fixed train/validation/test splits for labelled real datasets.

Two sources, in order of preference:

1. Published split files in the manual dir (one sample name per line, e.g.
   TorchGeo's `eurosat-train.txt`, BigEarthNet's `train.csv`). Names are
   matched by stem, so a list written for `.jpg` files selects `.tif` ones.
2. Otherwise a deterministic, class-stratified split by hashed name: inside
   each stratum (class), samples are ordered by SHA-256 of `salt + name` and
   cut at the cumulative fractions. The result depends only on the names, not
   on listing order, file system, or process count, and the per-class
   proportions are exact up to rounding.

Either way the builder records the method in its dataset metadata.
"""

from __future__ import annotations

import hashlib
import os
from typing import Hashable, Iterable, Mapping, Sequence

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_SALT = "seamo-split-v1"

# File-name aliases of split names used by published split lists.
_SPLIT_ALIASES = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}


def stem(name: str) -> str:
    """`dir/AnnualCrop_1.jpg` -> `AnnualCrop_1` (split lists name files of other formats)."""
    return os.path.splitext(os.path.basename(name.strip()))[0]


def hashed_stratified_split(names: Sequence[str], strata: Sequence[Hashable], *,
                            fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = DEFAULT_SALT,
                            split_names: Sequence[str] = SPLIT_NAMES) -> dict[str, list[str]]:
    """Assigns every name to one split, stratified by `strata` (e.g. class index).

    Args:
      names: unique sample names (file stems).
      strata: one stratum per name; a multi-label set can pass its rarest
        label or a constant.
      fractions: one fraction per split, summing to 1.
    Returns:
      split name -> sorted list of names; the lists are disjoint and cover `names`.
    """
    if len(names) != len(strata):
        raise ValueError(f"{len(names)} names but {len(strata)} strata")
    if len(set(names)) != len(names):
        raise ValueError("sample names must be unique to be split by name")
    if len(fractions) != len(split_names) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions {tuple(fractions)} must give one value per split {tuple(split_names)} "
                         "and sum to 1")
    by_stratum: dict[Hashable, list[str]] = {}
    for name, stratum in zip(names, strata):
        by_stratum.setdefault(stratum, []).append(name)
    out: dict[str, list[str]] = {s: [] for s in split_names}
    for members in by_stratum.values():
        members.sort(key=lambda n: hashlib.sha256(f"{salt}/{n}".encode()).hexdigest())
        bounds, total = [], 0.0
        for fraction in fractions:
            total += fraction
            bounds.append(round(total * len(members)))
        start = 0
        for split, end in zip(split_names, bounds):
            out[split].extend(members[start:end])
            start = end
    return {s: sorted(v) for s, v in out.items()}


def find_split_files(directory: str | os.PathLike, patterns: Iterable[str]) -> dict[str, str] | None:
    """Finds published split lists in `directory`.

    `patterns` are format strings with `{split}`, e.g. "eurosat-{split}.txt";
    each split name tries its aliases (validation: "val", "validation").
    Returns split -> path when all three exist, None when none exist, and
    raises FileNotFoundError when only some do (a half-present split would
    silently drop samples).
    """
    found: dict[str, str] = {}
    for pattern in patterns:
        for split, aliases in _SPLIT_ALIASES.items():
            for alias in aliases:
                path = os.path.join(os.fspath(directory), pattern.format(split=alias))
                if split not in found and os.path.isfile(path):
                    found[split] = path
        if found:
            break
    if not found:
        return None
    missing = [s for s in SPLIT_NAMES if s not in found]
    if missing:
        raise FileNotFoundError(f"split files {sorted(found.values())} found but none for {missing} in {directory}")
    return found


def read_split_file(path: str | os.PathLike) -> list[str]:
    """Sample stems listed in a split file; csv rows use their first column, blank lines are skipped."""
    with open(path, encoding="utf-8") as f:
        return [stem(line.split(",")[0]) for line in f if line.strip()]


def splits_from_files(files: Mapping[str, str], known: Iterable[str]) -> dict[str, list[str]]:
    """Reads split lists and checks them against the samples on disk.

    Raises ValueError when a listed sample is not on disk or a sample is in two
    splits (both mean the lists do not belong to this copy of the data).
    Samples on disk that no list names are left out, as the published splits do.
    """
    known = set(known)
    out, seen = {}, {}
    for split in SPLIT_NAMES:
        names = read_split_file(files[split])
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"{files[split]}: {len(missing)} listed samples not found on disk, e.g. {missing[:3]}")
        for n in names:
            if n in seen:
                raise ValueError(f"sample {n!r} is in both {seen[n]!r} and {split!r} split files")
            seen[n] = split
        out[split] = sorted(names)
    return out
