"""Fine-tuning batches as a pure function of (seed, step) over in-memory arrays.

The labelled arrays of a fine-tune are small enough to hold in host memory
(`evaluate/probe_data.load_probe_data`, the probe's arrays), so there is no
input pipeline and no iterator state: the rows of global batch `step` are

    stream = perm(seed, epoch 0) ++ perm(seed, epoch 1) ++ ...   (each a permutation of range(n))
    rows(step) = stream[step * B : (step + 1) * B]

and the augmentation of each row is drawn from (seed, step). A run resumed
at step k therefore sees exactly the batches an uninterrupted run sees from
step k on, with nothing to checkpoint but the step. A labelled subset
smaller than the batch simply spans several permutations in one batch.

Every process computes the same global rows and takes its own block of them
(`data/global_batch.loader_shard`), which `to_global_batch` assembles into
one global array sharded over the batch axes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# Tags that keep the permutation and augmentation streams of one seed independent.
_PERMUTATION_TAG = 0
_AUGMENT_TAG = 1


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng((int(seed), _PERMUTATION_TAG, int(epoch))).permutation(n)


def batch_rows(seed: int, step: int, num_rows: int, batch_size: int) -> np.ndarray:
    """Indices in [0, num_rows) of the `batch_size` rows of global batch `step` (module docstring)."""
    if num_rows <= 0:
        raise ValueError("fine-tuning needs at least one labelled training row")
    positions = int(step) * int(batch_size) + np.arange(int(batch_size), dtype=np.int64)
    epochs = positions // num_rows
    out = np.empty(len(positions), np.int64)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _permutation(seed, int(epoch), num_rows)[positions[where] % num_rows]
    return out


def dihedral_codes(seed: int, step: int, batch_size: int, square: bool) -> np.ndarray:
    """Per-row transform code in [0, 8) (rot90 count = code % 4, flip = code >= 4); non-square: rot 0/2 only."""
    rng = np.random.default_rng((int(seed), _AUGMENT_TAG, int(step)))
    codes = rng.integers(0, 8, size=int(batch_size))
    if not square:
        codes = codes - (codes % 2)  # 0, 2, 4, 6: identity, rot180, flip, rot180 + flip
    return codes


def apply_dihedral(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """x [b, S, h, w, C] with row i rotated by 90 * (codes[i] % 4) degrees and flipped (w axis) when >= 4."""
    out = np.empty_like(x)
    for code in np.unique(codes):
        where = codes == code
        y = np.rot90(x[where], int(code) % 4, axes=(2, 3))
        if code >= 4:
            y = y[:, :, :, ::-1]
        out[where] = y
    return out


def local_batch(arrays: Mapping[str, Any], rows: np.ndarray, *, modalities: Sequence[str], target_key: str,
                seed: int, step: int, augment: bool, shard_index: int, shard_count: int) -> dict:
    """This process's block of global batch `step`: views[m], offsets, target (numpy).

    Args:
      arrays: eval-array dict (probe_data): views[m] [N, S, h, w, C], offsets [N, S, 2], label / labels.
      rows: indices into `arrays` of the whole global batch (train rows already mapped).
      target_key: "label" (single-label) or "labels" (multi-label).
      augment: flips / rot90 drawn from (seed, step), identical for every view (season, modality) of a
        sample. The crops are centre crops or whole tiles, whose offsets a flip of the tile leaves as
        they are, so offsets stay unchanged.
      shard_index / shard_count: `loader_shard` of the batch sharding.
    """
    batch_size = len(rows)
    if batch_size % shard_count:
        raise ValueError(f"batch of {batch_size} rows does not split over {shard_count} data shards")
    per_shard = batch_size // shard_count
    block = slice(shard_index * per_shard, (shard_index + 1) * per_shard)
    mine = rows[block]
    views = {m: np.asarray(arrays["views"][m][mine], np.float32) for m in modalities}
    if augment:
        first = views[modalities[0]]
        codes = dihedral_codes(seed, step, batch_size, square=first.shape[2] == first.shape[3])[block]
        views = {m: apply_dihedral(v, codes) for m, v in views.items()}
    return {"views": views, "offsets": np.asarray(arrays["offsets"][mine], np.int32),
            "target": np.asarray(arrays[target_key][mine], np.int32)}
