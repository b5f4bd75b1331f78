"""Label-fraction subsets and held-out splits, stratified, seeded and saved.

Label-efficiency results (1% / 10% / 100% of the training labels) are only
comparable across models and runs if every model sees the *same* labelled
samples. So each subset is drawn once per (fraction, seed), written to a JSON
file next to the results, and re-read on later runs; the file stores a digest
of the label vector so a stale file for different data is an error rather
than a silent mismatch.

Stratified: every class keeps its share, and every class present keeps at
least one sample, so a 1% subset of a small set still covers all classes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

import numpy as np
from etils import epath

from seamo_jax.paths import PathLike, user_path, write_text_atomic as _write_atomic


def labels_digest(labels: np.ndarray) -> str:
    """sha256 of the label array (shape, dtype-independent int64 bytes): identifies the data."""
    labels = np.ascontiguousarray(np.asarray(labels).astype(np.int64))
    return hashlib.sha256(repr(labels.shape).encode() + labels.tobytes()).hexdigest()


def _class_key(labels: np.ndarray) -> np.ndarray:
    """One stratum id per sample: the class for [N] labels, the multi-hot row for [N, K]."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    # Multi-label: stratify by the rarest positive class of each sample (-1: no positive),
    # a cheap proxy for iterative stratification that keeps rare classes represented.
    counts = labels.sum(0)
    rarity = np.where(labels > 0, counts[None, :], np.inf)
    return np.where(np.isfinite(rarity.min(1)), rarity.argmin(1), -1).astype(np.int64)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified random `fraction` of the samples.

    Args:
      labels: [N] int classes or [N, K] multi-hot.
      fraction: in (0, 1]; 1 returns every index.
      seed: numpy Generator seed.
    Returns:
      int64 [n] sorted indices, n ~ fraction * N, >= 1 per present class.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    key = _class_key(labels)
    if fraction == 1.0:
        return np.arange(len(key), dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(key):
        members = np.flatnonzero(key == cls)
        take = max(1, int(round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def stratified_holdout(labels: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into (keep, holdout), stratified; each class with >= 2 samples keeps >= 1 on both sides.

    Used to carve the validation split from train and to re-split small sets
    (e.g. the 200-tile EuroSAT sample) into train/test per seed.
    Returns two sorted int64 index arrays that partition range(N).
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {holdout_fraction}")
    key = _class_key(labels)
    rng = np.random.default_rng(seed)
    holdout = []
    for cls in np.unique(key):
        members = rng.permutation(np.flatnonzero(key == cls))
        if len(members) < 2:
            continue  # a singleton class stays in the fitting part
        take = min(len(members) - 1, max(1, int(round(holdout_fraction * len(members)))))
        holdout.append(members[:take])
    holdout_idx = np.sort(np.concatenate(holdout)) if holdout else np.zeros((0,), np.int64)
    keep_idx = np.setdiff1d(np.arange(len(key)), holdout_idx)
    return keep_idx.astype(np.int64), holdout_idx.astype(np.int64)


def split_file_name(fraction: float, seed: int, kind: str = "labels") -> str:
    return f"{kind}_{fraction:g}_seed{seed}.json"


def _load_or_create(path: epath.Path, labels: np.ndarray, make: Callable[[], dict[str, np.ndarray]],
                    meta: dict) -> dict[str, np.ndarray]:
    """Reads index arrays saved at `path` (checking the label digest) or makes and saves them atomically."""
    digest = labels_digest(labels)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["labels_sha256"] != digest:
            raise ValueError(f"{path} was made for different labels (sha256 {saved['labels_sha256'][:12]} vs "
                             f"{digest[:12]}); delete it or use another split_dir")
        return {name: np.asarray(saved[name], np.int64) for name in saved["arrays"]}
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One whole-file write: atomic locally (via a renamed temp file) and on
    # object stores (an object appears complete or not at all).
    _write_atomic(path, json.dumps({**meta, "num_total": int(len(labels)), "labels_sha256": digest,
                                    "arrays": sorted(arrays), **{k: v.tolist() for k, v in arrays.items()}}))
    return arrays


def load_or_create_subset(split_dir: PathLike, labels: np.ndarray, fraction: float,
                          seed: int) -> np.ndarray:
    """Reads the saved label subset for (fraction, seed), creating and saving it on first use.

    Raises ValueError when the saved file was made for a different label array.
    """
    path = user_path(split_dir) / split_file_name(fraction, seed)
    return _load_or_create(path, labels, lambda: {"indices": stratified_subset(labels, fraction, seed)},
                           {"fraction": fraction, "seed": seed})["indices"]


def load_or_create_holdout(split_dir: PathLike, labels: np.ndarray, holdout_fraction: float,
                           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Saved `stratified_holdout` (keep, holdout) indices for (fraction, seed)."""
    path = user_path(split_dir) / split_file_name(holdout_fraction, seed, kind="holdout")

    def make() -> dict[str, np.ndarray]:
        keep, held = stratified_holdout(labels, holdout_fraction, seed)
        return {"keep": keep, "holdout": held}

    arrays = _load_or_create(path, labels, make, {"holdout_fraction": holdout_fraction, "seed": seed})
    return arrays["keep"], arrays["holdout"]
