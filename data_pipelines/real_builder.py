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

Given Beam options (`tfds.download.DownloadConfig(beam_options=...)`,
`seamo data build --beam-pipeline-options=...`), the same refs and `load_fn`
run through TFDS's Beam support instead (`data_pipelines.beam_build`): the
same records in the same order (subclasses set `disable_shuffling`), on
DirectRunner, Dataflow, Spark or Flink, with skips and notes reported alike.

Skipping: a builder that sets `SKIP_ERRORS` (e.g. `(BadRecordError,)`) has
the samples whose `load_fn` raises one of them left out instead of failing
the build. They are counted and listed by id (`ref_id`) with their kind and
message in the metadata (`skipped`, `skipped_counts`, `records_written`),
with the records' annotation notes (`notes`) and nodata totals (`nodata`);
`build_summary()` turns that into the lines `seamo data build` prints. A
split left with no record at all fails the build with one line naming the
kinds, an example and `empty_split_hint` (nothing is written then: an empty
dataset would count as prepared and be reused).
"""

from __future__ import annotations

import collections
import inspect
import math
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.utils import py_utils

from data_pipelines import writer as writer_lib
from data_pipelines.features import check_storage

Record = dict[str, Any]
LoadFn = Callable[[Any], tuple[str, Record]]

SUMMARY_MAX_IDS = 10  # ids listed per kind in `build_summary` (metadata.json lists all)


class NoRecordsError(ValueError):
    """Every sample of a split was skipped: nothing to write (one line: kinds, an example, the fix)."""


class ManualDirBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the real-data builders: lists refs, maps `load_fn`, records split metadata.

    Subclasses implement `_info`, `split_refs(manual_dir)` and `load_fn`
    (property returning a picklable callable), and may set `split_method`
    (a string describing how splits were made) inside `split_refs`.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the extracted dataset in the manual dir (see the builder docstring)."
    # Exception types of load_fn that skip the sample (listed in the metadata) instead of failing the build.
    SKIP_ERRORS: tuple[type[BaseException], ...] = ()
    SAMPLE_NOUN = "samples"  # what a record is, in messages ("locations", "patches")

    @py_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS derives this via importlib_resources (not installed, and not needed:
        # it only locates an optional checksums file next to the builder).
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, num_workers: int | None = None, writer: str = "parallel", s2_layout: str = "grid",
                 codec: str = "none", **kwargs):
        """Args:
          num_workers: writer processes (None = all cores, <= 1 = in-process).
          writer: "parallel" (data_pipelines.writer) or "tfds" (TFDS's own
            single-process writer, kept to compare speeds).
          s2_layout, codec: record storage (data_pipelines.features). Builders
            that implement them (ssl4eo_s12) take them in their own __init__;
            here only the defaults are accepted, others fail in one line.
          **kwargs: DatasetBuilder arguments (data_dir, config, version, ...).
        """
        check_storage(s2_layout, codec)
        if s2_layout != "grid":
            raise ValueError(f"{self.name}: s2_layout={s2_layout!r} is not supported by this builder (it stores S2 "
                             "on the 10 m grid only; the native layout is built by synthetic_seasons and ssl4eo_s12 "
                             "v1 GeoTIFF releases)")
        if codec != "none":
            raise ValueError(f"{self.name}: codec={codec!r} is not supported by this builder (only codec='none'; "
                             "blosc2 is built by synthetic_seasons and ssl4eo_s12)")
        if writer not in ("parallel", "tfds"):
            raise ValueError(f"writer must be 'parallel' or 'tfds', got {writer!r}")
        self.num_workers = num_workers
        self.writer = writer
        self.split_method = "fixed"
        self._beam = False
        kwargs.setdefault("file_format", "array_record")  # the TFRecord default would need TensorFlow
        super().__init__(**kwargs)

    # ---- to implement -------------------------------------------------------
    def split_refs(self, manual_dir: str) -> dict[str, list[Any]]:
        raise NotImplementedError

    @property
    def load_fn(self) -> LoadFn:
        raise NotImplementedError

    # ---- may override -------------------------------------------------------
    def ref_id(self, ref: Any) -> str:
        """The id a skipped sample is listed under (its location / patch name)."""
        for attr in ("location_id", "name", "rel_path"):
            if hasattr(ref, attr):
                return str(getattr(ref, attr))
        return str(ref)

    def empty_split_hint(self, kinds: collections.Counter) -> str:
        """What to change when a split had every sample skipped for these kinds ("" = nothing to suggest)."""
        return ""

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
        if writer_lib.uses_beam(download_config):
            return self._beam_download_and_prepare(dl_manager, download_config)
        if self.writer == "tfds":
            return super()._download_and_prepare(dl_manager, download_config)
        workers = self.num_workers if self.num_workers is not None else (os.cpu_count() or 1)
        split_infos = []
        report = writer_lib.WriteReport()
        all_refs = self._list_splits(str(dl_manager.manual_dir))
        for split, refs in all_refs.items():
            num_shards = writer_lib.default_num_shards(len(refs), self._example_bytes(), max(1, workers))
            split_infos.append(writer_lib.write_split(
                self.info.features, IndexedLoader(self.load_fn, refs), len(refs),
                self._get_filename_template(split), num_shards=num_shards, num_workers=workers,
                skip_errors=self.SKIP_ERRORS, report=report))
        self._record_report(all_refs, report, {info.name: info.num_examples for info in split_infos})
        self.info.set_splits(tfds.core.SplitDict(split_infos))

    def _beam_download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                                   download_config: tfds.download.DownloadConfig) -> None:
        """TFDS's Beam path (`_split_generators` returns PTransforms), then the same report as the local path."""
        from data_pipelines import beam_build

        self._beam = True
        self._beam_refs: dict[str, list[Any]] = {}
        super()._download_and_prepare(dl_manager, download_config)
        report = writer_lib.WriteReport()
        beam_build.read_report(self.data_path, list(self._beam_refs), report)
        skipped = collections.Counter(item.split for item in report.skipped)
        expected = {split: len(refs) - skipped[split] for split, refs in self._beam_refs.items()}
        beam_build.check_written(self.name, expected, self.info.splits)  # a runner that lost records fails here
        self._record_report(self._beam_refs, report,
                            {split: self.info.splits[split].num_examples for split in self._beam_refs})

    def _example_writer(self) -> writer_lib.ShardFileWriter:
        """TFDS's hook for its writers (serial and Beam): shards as the parallel writer writes them."""
        return writer_lib.ShardFileWriter(writer_lib.DEFAULT_COMPRESSION)

    def _record_report(self, refs: dict[str, list[Any]], report: writer_lib.WriteReport,
                       written: dict[str, int]) -> None:
        """Skipped samples, notes and nodata counts -> metadata; NoRecordsError for an emptied split."""
        skipped: dict[str, dict[str, dict[str, str]]] = {split: {} for split in refs}
        for item in report.skipped:
            skipped[item.split][self.ref_id(refs[item.split][item.index])] = {"kind": item.kind,
                                                                             "reason": item.message}
        notes: dict[str, dict[str, list[str]]] = {}
        nodata: dict[str, dict[str, int]] = {}
        for split, by_index in report.annotations.items():
            for index, annotation in sorted(by_index.items()):
                ref_id = self.ref_id(refs[split][index])
                if annotation.get("notes"):
                    notes.setdefault(split, {})[ref_id] = list(annotation["notes"])
                pixels = int(annotation.get("nodata_pixels", 0))
                if pixels:
                    totals = nodata.setdefault(split, {"records": 0, "pixels": 0})
                    totals["records"] += 1
                    totals["pixels"] += pixels
        metadata = self.info.metadata
        metadata["records_written"] = dict(written)
        metadata["skipped_counts"] = {split: len(items) for split, items in skipped.items()}
        metadata["skipped"] = skipped
        metadata["notes"] = notes
        metadata["nodata"] = nodata
        for split, count in written.items():
            if count == 0:
                kinds = collections.Counter(item["kind"] for item in skipped[split].values())
                example_id, example = next(iter(skipped[split].items()))
                hint = self.empty_split_hint(kinds)
                raise NoRecordsError(
                    f"{self.name}/{self.builder_config.name}: all {len(refs[split])} {self.SAMPLE_NOUN} of split "
                    f"{split!r} were skipped ({_kinds_text(kinds)}; e.g. {example_id}: {example['reason']})"
                    + (f"; {hint}" if hint else ""))

    def build_summary(self) -> list[str]:
        """Lines describing the last build: written / skipped per split, skipped ids, notes, nodata.

        Read from the dataset's metadata, so they describe the prepared
        dataset also when `prepare` found it already built. [] when the
        metadata has no build report (e.g. a dataset built before it existed).
        """
        metadata = self.info.metadata or {}
        if "records_written" not in metadata:
            return []
        name = f"{self.name}/{self.builder_config.name}" if self.builder_config else self.name
        lines = []
        listed = metadata.get("split_counts", {})
        for split, written in metadata["records_written"].items():
            skipped = metadata.get("skipped", {}).get(split, {})
            kinds = collections.Counter(item["kind"] for item in skipped.values())
            total = listed.get(split, written + len(skipped))
            line = f"{name}: {split}: {written} of {total} {self.SAMPLE_NOUN} written, {len(skipped)} skipped"
            lines.append(line + (f" ({_kinds_text(kinds)})" if kinds else ""))
            for sample_id, item in list(skipped.items())[:SUMMARY_MAX_IDS]:
                lines.append(f"  skipped {sample_id} [{item['kind']}]: {item['reason']}")
            if len(skipped) > SUMMARY_MAX_IDS:
                lines.append(f"  ... {len(skipped) - SUMMARY_MAX_IDS} more skipped ids in metadata.json")
            split_notes = metadata.get("notes", {}).get(split, {})
            for sample_id, sample_notes in list(split_notes.items())[:SUMMARY_MAX_IDS]:
                lines.append(f"  note {sample_id}: {'; '.join(sample_notes)}")
            if len(split_notes) > SUMMARY_MAX_IDS:
                lines.append(f"  ... notes on {len(split_notes) - SUMMARY_MAX_IDS} more samples in metadata.json")
            totals = metadata.get("nodata", {}).get(split)
            if totals:
                lines.append(f"  nodata: {totals['records']} records with nodata pixels ({totals['pixels']} "
                             "pixels in all; per record and season in the `nodata_pixels` field)")
        if any(metadata.get("skipped", {}).values()) or any(metadata.get("notes", {}).values()):
            lines.append(f"  all skipped ids and notes: {os.fspath(self.data_path)}/metadata.json")
        return lines

    # TFDS requires these hooks; they serve its own paths: serial (`writer="tfds"`, `tfds build`) and Beam.
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        refs = self._list_splits(str(dl_manager.manual_dir))
        if self._beam:
            from data_pipelines import beam_build

            self._beam_refs = refs
            return {split: beam_build.GenerateExamples(
                        IndexedLoader(self.load_fn, split_refs), len(split_refs), split, skip_errors=self.SKIP_ERRORS,
                        report_path=beam_build.report_path(self.data_path, split))
                    for split, split_refs in refs.items()}
        return {split: self._generate_examples(split_refs) for split, split_refs in refs.items()}

    def _generate_examples(self, refs: Sequence[Any]) -> Iterator[tuple[str, Record]]:
        load = self.load_fn
        for ref in refs:
            try:
                key, record = load(ref)
            except self.SKIP_ERRORS:  # TFDS's own writer: skipped, not reported (use the parallel writer)
                continue
            record.pop(writer_lib.ANNOTATIONS_KEY, None)
            yield key, record


def _kinds_text(kinds: collections.Counter) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in kinds.most_common())


class IndexedLoader:
    """Picklable `index -> record` over a ref list (the writer's `make_example`)."""

    def __init__(self, load_fn: LoadFn, refs: Sequence[Any]):
        self.load_fn = load_fn
        self.refs = list(refs)

    def __call__(self, index: int) -> Record:
        return self.load_fn(self.refs[index])[1]
