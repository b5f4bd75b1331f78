"""Grain training pipeline and deterministic evaluation arrays.

Train pipeline (per data shard):

  source -> this shard's contiguous slice of records
         -> shuffle(seed, shard)  (reshuffled every epoch by `repeat`)
         -> repeat forever
         -> random_map(TrainSampleTransform)  (RNG = f(seed, shard, position))
         -> to_iter_dataset (read threads) -> drop bad records (optional)
         -> batch(global_batch / shard_count) -> [worker processes, batches
            written into reused shared-memory slots: shm_batches]
         -> count skipped records

A data shard is a set of global batch rows that one or more processes hold
(`global_batch.loader_shard`, derived from the mesh and the batch rules):
processes whose devices hold the same rows (a `model` axis spanning hosts)
are the same shard and build the identical stream. Everything random is a
function of (seed, shard_index, shard_count, position in the stream), so a
run and a resumed run see the same batches.
`worker_count` changes which worker batches which records (Grain slices the
stream across workers), so it is part of the stream's identity: resume with
the same value.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from seamo_jax import sensors
from seamo_jax.data import encoded, records, shm_batches
from seamo_jax.data.sample import SampleSpec, TrainSampleTransform, eval_sample, sample_spec_from_config


def _derive_seeds(seed: int, shard_index: int) -> tuple[int, int]:
    """Independent uint32 seeds for shuffle and sample transform of one data shard.

    Folding in the shard index keeps crops/masks of different shards
    uncorrelated (the transform RNG is otherwise keyed by stream position only).
    """
    shuffle_seed, map_seed = np.random.SeedSequence([int(seed), int(shard_index)]).generate_state(2)
    return int(shuffle_seed), int(map_seed)


def record_shard(num_records: int, shard_index: int, shard_count: int) -> slice:
    """Contiguous equal-size slice of record indices for one data shard.

    Contiguous (not strided) so a shard reads few ArrayRecord files; equal
    size (the last `num_records % shard_count` records are dropped) so all
    shards reach epoch boundaries at the same step.
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    per_shard = num_records // shard_count
    if per_shard == 0:
        raise ValueError(f"{num_records} records cannot feed {shard_count} data shards")
    return slice(shard_index * per_shard, (shard_index + 1) * per_shard)


def local_batch_size(global_batch_size: int, shard_count: int) -> int:
    if global_batch_size % shard_count:
        raise ValueError(f"config.data.batch_size {global_batch_size} not divisible by {shard_count} data shards")
    return global_batch_size // shard_count


def _ensure_absl_flags_parsed() -> None:
    """Grain's worker processes read absl flags; outside an absl app nobody parsed them."""
    from absl import flags  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_dataset(
    config: Any,
    source: Any,
    *,
    shard_index: int = 0,
    shard_count: int = 1,
    seed: int | None = None,
    worker_count: int | None = None,
) -> grain.IterDataset:
    """Builds this process's infinite Grain pipeline of training batches.

    Args:
      config: full experiment config (reads config.data, config.mask,
        config.model.patch_size; keys of seamo_jax/experiments/demo_cpu.py).
      source: random-access source of record dicts (`len`, `__getitem__`),
        e.g. `data_pipelines.registry.load_source(...)`.
      shard_index, shard_count: this process's data shard
        (`global_batch.loader_shard(batch_sharding)`; 0, 1 on one host).
      seed: default config.data.shuffle_seed.
      worker_count: default config.data.worker_count (0 = in-process).

    Returns:
      IterDataset of batches (numpy): views[m] float32 [B, S, h, w, C_m],
      offsets int32 [B, S, 2], season_ids int32 [B, S], mask bool
      [B, S, M, T] (+ modality_dropped bool [B, M] when
      config.data.modality_dropout > 0, + scales float32 [B, S] when
      config.data.region_reading = "crop_area"); B = global batch /
      shard_count.
    """
    data = config.data
    seed = int(data.shuffle_seed if seed is None else seed)
    worker_count = int(data.worker_count if worker_count is None else worker_count)
    batch_size = local_batch_size(int(data.batch_size), shard_count)
    spec = sample_spec_from_config(config)
    shuffle_seed, map_seed = _derive_seeds(seed, shard_index)

    # config.data.fraction: one fixed subset of the records (same on every process / run), then sharded.
    indexed = records.IndexedSource(source, indices=records.fraction_indices(
        len(source), data.fraction, data.fraction_seed))
    ds = grain.MapDataset.source(indexed)
    ds = ds[record_shard(len(indexed), shard_index, shard_count)]
    ds = ds.shuffle(seed=shuffle_seed).repeat(None)  # repeat reseeds the shuffle per epoch
    ds = ds.random_map(TrainSampleTransform(spec, indexed), seed=map_seed)

    prefetch = max(1, int(data.prefetch))
    read_options = grain.ReadOptions(
        num_threads=int(data.read_threads),
        # Buffer counts samples; Grain's default (500) of 224-px 4-season samples is ~6 GB.
        prefetch_buffer_size=batch_size * prefetch)
    it = ds.to_iter_dataset(read_options)
    it = records.SkipBadRecordsIterDataset(it)
    # Frames read lazily (registry.load_source(lazy_decode=True)) are decoded into their batch rows; worker
    # processes write them into shared-memory slots they reuse (shm_batches: no new pages per batch).
    use_slots = worker_count > 0 and bool(data.worker_batch_slots) and shm_batches.available()
    writer = shm_batches.SlotWriter(shm_batches.slots_per_worker(prefetch)) if use_slots else None
    it = it.batch(batch_size, drop_remainder=True, batch_fn=encoded.StackSamples(writer))
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=prefetch))
        if writer is not None:
            it = OpenSlotsIterDataset(it)
    return records.CountSkippedIterDataset(it)


class _OpenSlotsIterator(grain.DatasetIterator):
    """Turns the workers' `shm_batches.SlotBatch`es into arrays (views of the slots); state passes through."""

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)
        self._reader = shm_batches.SlotReader()

    def __next__(self) -> Any:
        return self._reader.open(next(self._parent))

    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)


class OpenSlotsIterDataset(grain.IterDataset):
    """The trainer-side stage after `mp_prefetch` when the workers write into slots (`shm_batches`)."""

    def __iter__(self) -> _OpenSlotsIterator:
        return _OpenSlotsIterator(self._parent.__iter__())


def make_train_iterator(config: Any, source: Any, **kwargs) -> grain.DatasetIterator:
    """Checkpointable iterator over `make_train_dataset(config, source, **kwargs)`.

    `get_state()` / `set_state()` (JSON-able dict, also through
    `grain.checkpoint.CheckpointSave/Restore` in an Orbax Composite) restore
    the exact position: the next batches are bitwise those of an
    uninterrupted run. `.bad_records_skipped` counts skipped records.
    """
    return iter(make_train_dataset(config, source, **kwargs))


def make_eval_arrays(
    config: Any,
    source: Any,
    *,
    num_examples: int | None = None,
    crop: str = "center",
    seasons: int | None = None,
    modalities: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Deterministic numpy arrays of the first `num_examples` records (no masks).

    Args:
      crop: "center" (config.data.crop_size window, same for all seasons) or
        "full" (whole tile).
      seasons, modalities: override config.data.seasons / modalities (e.g.
        config.probe.*); sensors still come from config.data.sensors.

    Returns:
      views[m] float32 [N, S, h, w, C_m] (normalised), raw_views[m] float32
      (un-normalised, same shape), offsets int32 [N, S, 2], label int32 [N]
      when records have `label`, labels int32 [N, K] when they have `labels`,
      source_index int64 [N]. Bad records raise, or are skipped and counted in
      `num_skipped` with config.data.skip_bad_records.
    """
    spec = sample_spec_from_config(config)
    if seasons is not None or modalities is not None:
        mods = tuple(modalities or spec.modalities)
        spec = dataclasses.replace(spec, num_seasons=int(seasons or spec.num_seasons), modalities=mods,
                                   specs={m: spec.specs.get(m) or sensors.get_sensor(config.data.sensors[m])
                                          for m in mods})
    indexed = records.IndexedSource(source)
    count = len(indexed) if num_examples is None else min(int(num_examples), len(indexed))
    samples, labels, multi_labels, indices, skipped = [], [], [], [], 0
    for index in range(len(indexed)):
        if len(samples) == count:
            break
        record = indexed[index]
        try:
            records.validate_record(record, spec.specs, record_id=records.describe_record(record, indexed),
                                    min_seasons=spec.num_seasons)
        except records.BadRecordError:
            if not spec.skip_bad_records:
                raise
            skipped += 1
            continue
        samples.append(eval_sample(record, spec, crop))
        indices.append(index)
        if "label" in record:
            labels.append(int(record["label"]))
        if "labels" in record:
            multi_labels.append(np.asarray(record["labels"], np.int32))
    if not samples:
        raise ValueError("make_eval_arrays: no valid records")
    out: dict[str, Any] = {
        "views": {m: np.stack([s["views"][m] for s in samples]) for m in spec.modalities},
        "raw_views": {m: np.stack([s["raw_views"][m] for s in samples]) for m in spec.modalities},
        "offsets": np.stack([s["offsets"] for s in samples]).astype(np.int32),
        "source_index": np.asarray(indices, np.int64),
        "num_skipped": skipped,
    }
    if len(labels) == len(samples):
        out["label"] = np.asarray(labels, np.int32)
    if len(multi_labels) == len(samples):
        out["labels"] = np.stack(multi_labels)
    return out


__all__ = ["make_train_dataset", "make_train_iterator", "make_eval_arrays", "record_shard", "local_batch_size",
           "SampleSpec"]
