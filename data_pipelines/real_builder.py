"""Shared skeleton of the builders that convert a real dataset from a manual dir.

A real builder splits its work in two, so any writer can parallelise it:

* `split_refs(manual_dir) -> {split: [ref, ...]}`: cheap listing, in the
  builder process; a ref is a small picklable value (paths, label).
* `load_fn(ref) -> (key, record)`: reads and validates one sample; a plain
  module-level function (or functools.partial of one), so worker processes
  can run it.

`download_and_prepare` writes every split with the shared parallel writer
(`data_pipelines.writer.write_split`, `num_workers` spawn processes, one
shard per job, records in ref order; Grain shuffles at read time) instead of
TFDS's single-threaded generate-then-shuffle path. The split method and
counts go into the dataset's metadata (`metadata.json` next to the shards).
The record schema is `data_pipelines.features.record_features`.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.utils import py_utils

from data_pipelines import writer as writer_lib

Record = dict[str, Any]
LoadFn = Callable[[Any], tuple[str, Record]]


class ManualDirBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the real-data builders: lists refs, maps `load_fn`, records split metadata.

    Subclasses implement `_info`, `split_refs(manual_dir)` and `load_fn`
    (property returning a picklable callable), and may set `split_method`
    (a string describing how splits were made) inside `split_refs`.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the extracted dataset in the manual dir (see the builder docstring)."

    @py_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS derives this via importlib_resources (not installed, and not needed:
        # it only locates an optional checksums file next to the builder).
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, num_workers: int | None = None, writer: str = "parallel", **kwargs):
        """Args:
          num_workers: writer processes (None = all cores, <= 1 = in-process).
          writer: "parallel" (data_pipelines.writer) or "tfds" (TFDS's own
            single-process writer, kept to compare speeds).
          **kwargs: DatasetBuilder arguments (data_dir, config, version, ...).
        """
        if writer not in ("parallel", "tfds"):
            raise ValueError(f"writer must be 'parallel' or 'tfds', got {writer!r}")
        self.num_workers = num_workers
        self.writer = writer
        self.split_method = "fixed"
        kwargs.setdefault("file_format", "array_record")  # the TFRecord default would need TensorFlow
        super().__init__(**kwargs)

    # ---- to implement -------------------------------------------------------
    def split_refs(self, manual_dir: str) -> dict[str, list[Any]]:
        raise NotImplementedError

    @property
    def load_fn(self) -> LoadFn:
        raise NotImplementedError

    # ---- TFDS hooks ---------------------------------------------------------
    def _list_splits(self, manual_dir: str) -> dict[str, list[Any]]:
        refs = self.split_refs(manual_dir)
        empty = [s for s, r in refs.items() if not r]
        if empty:
            raise ValueError(f"{self.name}: no samples for split(s) {empty} in {manual_dir}")
        # Written with dataset_info after generation: how the splits were made.
        self.info.metadata["split_method"] = self.split_method
        self.info.metadata["split_counts"] = {s: len(r) for s, r in refs.items()}
        return refs

    def _example_bytes(self) -> int:
        """Upper estimate of one serialised record, for shard sizing."""
        total = 1024
        for feature in self.info.features.values():
            shape = getattr(feature, "shape", ())
            if shape and all(d is not None for d in shape):
                total += math.prod(shape) * np.dtype(feature.np_dtype).itemsize
        return total

    def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                              download_config: tfds.download.DownloadConfig) -> None:
        """Writes every split with the parallel writer; `self.data_path` is TFDS's incomplete dir here."""
        if self.writer == "tfds":
            return super()._download_and_prepare(dl_manager, download_config)
        workers = self.num_workers if self.num_workers is not None else (os.cpu_count() or 1)
        split_infos = []
        for split, refs in self._list_splits(str(dl_manager.manual_dir)).items():
            num_shards = writer_lib.default_num_shards(len(refs), self._example_bytes(), max(1, workers))
            split_infos.append(writer_lib.write_split(
                self.info.features, IndexedLoader(self.load_fn, refs), len(refs),
                self._get_filename_template(split), num_shards=num_shards, num_workers=workers))
        self.info.set_splits(tfds.core.SplitDict(split_infos))

    # TFDS requires these hooks; they serve its own (serial) path, e.g. `tfds build`.
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        refs = self._list_splits(str(dl_manager.manual_dir))
        return {split: self._generate_examples(split_refs) for split, split_refs in refs.items()}

    def _generate_examples(self, refs: Sequence[Any]) -> Iterator[tuple[str, Record]]:
        load = self.load_fn
        for ref in refs:
            yield load(ref)


class IndexedLoader:
    """Picklable `index -> record` over a ref list (the writer's `make_example`)."""

    def __init__(self, load_fn: LoadFn, refs: Sequence[Any]):
        self.load_fn = load_fn
        self.refs = list(refs)

    def __call__(self, index: int) -> Record:
        return self.load_fn(self.refs[index])[1]
