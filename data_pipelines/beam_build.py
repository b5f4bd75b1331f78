"""Generation through Apache Beam: the same builders on DirectRunner, Dataflow, Spark or Flink.

A builder built with Beam options (`tfds.download.DownloadConfig(beam_options=...)`,
`seamo data build --beam-pipeline-options=...`) goes through TFDS's supported
Beam path: its split generators are `GenerateExamples` PTransforms

    Create(range(n)) | Reshuffle | ParDo(make_example(index) -> (index, record))

and TFDS encodes, serialises (its own `ExampleSerializer`), groups into shards
and writes them (`BeamWriter`, `file_format="array_record"`). Keys are the
record indices and the builders set `disable_shuffling`, so TFDS keeps them in
key order across its shards: record i of a Beam build is record i of a local
build (`data_pipelines.writer`), the same decoded values (only the number of
shards may differ). Shard files are written by `writer.ShardFileWriter`
through TFDS's `_example_writer` hook: uncompressed, like the local path,
and copied up when the data_dir is a bucket URL (ArrayRecord's writer opens
local files only).

Skipped samples (`skip_errors`) and record annotations leave the ParDo as a
side output, written as JSON lines to `<dataset dir>/_build_report/<split>.jsonl`
(the workers' shared storage, e.g. the bucket) and read back by the launcher
after the pipeline (`read_report`) into the same `writer.WriteReport` the
local path fills, so `metadata.json` and the build summary are the same.
Beam counters `seamo/<split>_examples` and `seamo/<split>_skipped` count them
too (visible in the Dataflow UI). Limit: a split whose samples are all
skipped fails inside TFDS's writer ("The total number of generated examples
is 0"), not with the local path's one-line `NoRecordsError`.

After the pipeline the builder checks that every split holds what was
generated minus what was skipped (`check_written`) and raises
`MissingRecordsError` otherwise.

Beam bug worked around on import (`serialise_time_flushed_writes`): DirectRunner
with `direct_running_mode=multi_processing` (apache-beam 2.77.0) silently
dropped records of large builds (20-56% of 2 GB). Its runner
talks to the SDK workers over gRPC data channels built with
`DATA_BUFFER_TIME_LIMIT_MS = 1000` (fn_api_runner/worker_handlers.py,
`GrpcServer`), i.e. `TimeBasedBufferingClosableOutputStream`s
(runners/worker/data_plane.py) whose timer thread flushes under `_flush_lock`
(`flush`: callback(get()), then `_clear()`) while `write` takes no lock.
`BundleManager._send_input_to_worker` (fn_runner.py) writes a bundle's input
chunks from the runner thread; a chunk written while a flush is under way
(hundreds of MB to copy, a full send queue) is cleared unsent: those records
never reach a worker. The in-process mode (in-memory channel) and builds
whose input is sent within a second were unaffected. The workaround makes
`write` take the flush lock (2 GB: 211 of 211 records, was 170). Only the
Python FnApiRunner (DirectRunner's portable modes) builds these streams on
its side; Dataflow / Flink / Spark runners are not concerned, and
multi_processing's SDK workers flush by size only. multi_threading is not
covered: its in-process workers' outputs are timer-flushed too, which can cut
an element between its partial writes; use multi_processing
(docs/performance.md, Conversion).

`apache_beam` is the optional `beam` extra: this module is imported only for
Beam builds.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from data_pipelines import writer as writer_lib


def serialise_time_flushed_writes() -> bool:
    """Makes apache-beam's time-flushed data streams take their flush lock on `write` (see the module doc).

    `data_plane.TimeBasedBufferingClosableOutputStream` flushes from a timer
    thread under `_flush_lock` (`flush`: callback(get()), then `_clear()`) but
    inherits `write` unlocked, so bytes written between `get()` and `_clear()`
    are dropped. Idempotent; does nothing where the class defines its own
    `write` (patched already, or fixed upstream). Returns whether it patched.
    """
    from apache_beam.runners.worker import data_plane

    stream_class = data_plane.TimeBasedBufferingClosableOutputStream
    if "write" in vars(stream_class):
        return False
    unlocked_write = data_plane.SizeBasedBufferingClosableOutputStream.write

    def write(self, b, nested=False):
        with self._flush_lock:
            unlocked_write(self, b, nested)

    stream_class.write = write
    return True


# Applied on import: this module is imported before any Beam build's pipeline runs.
serialise_time_flushed_writes()

REPORT_DIR = "_build_report"
_REPORT_TAG = "report"
METRICS_NAMESPACE = "seamo"


def pipeline_options(text: str) -> beam.options.pipeline_options.PipelineOptions:
    """"runner=DirectRunner,direct_num_workers=2" -> PipelineOptions (as `tfds build --beam_pipeline_options`)."""
    flags = [f"--{option.strip()}" for option in text.split(",") if option.strip()]
    return beam.options.pipeline_options.PipelineOptions(flags=flags)


class _MakeExample(beam.DoFn):
    """index -> (index, record) on the main output; skips and annotations -> JSON lines on `report`."""

    def __init__(self, make_example: Callable[[int], Mapping[str, Any]], split: str,
                 skip_errors: tuple[type[BaseException], ...]):
        self.make_example = make_example
        self.split = split
        self.skip_errors = tuple(skip_errors)
        self.examples = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{split}_examples")
        self.skipped = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{split}_skipped")

    def process(self, index: int):
        try:
            example = self.make_example(index)
        except self.skip_errors as error:  # () catches nothing
            self.skipped.inc()
            kind, message = writer_lib.skip_reason(error)
            yield beam.pvalue.TaggedOutput(_REPORT_TAG, json.dumps({"index": index, "kind": kind,
                                                                    "message": message}))
            return
        if writer_lib.ANNOTATIONS_KEY in example:
            example = dict(example)
            notes = example.pop(writer_lib.ANNOTATIONS_KEY)
            if notes:
                yield beam.pvalue.TaggedOutput(_REPORT_TAG, json.dumps({"index": index, "annotations": notes}))
        self.examples.inc()
        yield index, example


class GenerateExamples(beam.PTransform):
    """A split's records as a TFDS split generator: PBegin -> PCollection[(index, record)].

    Args:
      make_example: picklable `index -> record` (the local writer's `make_example`).
      num_examples: records 0 .. num_examples - 1.
      split: split name (counter names).
      skip_errors: exception types that leave a record out (reported).
      report_path: file the skips and annotations are written to (None = not written).
    """

    def __init__(self, make_example: Callable[[int], Mapping[str, Any]], num_examples: int, split: str, *,
                 skip_errors: tuple[type[BaseException], ...] = (), report_path: str | None = None):
        super().__init__()
        self.make_example = make_example
        self.num_examples = num_examples
        self.split = split
        self.skip_errors = tuple(skip_errors)
        self.report_path = report_path

    def expand(self, pbegin):
        results = (
            pbegin
            | "Indices" >> beam.Create(range(self.num_examples))
            | "Spread" >> beam.Reshuffle()  # no fusion of Create with the heavy step: fan out to all workers
            | "Make" >> beam.ParDo(_MakeExample(self.make_example, self.split, self.skip_errors)).with_outputs(
                _REPORT_TAG, main="examples"))
        if self.report_path:
            _ = results[_REPORT_TAG] | "WriteReport" >> beam.io.WriteToText(
                self.report_path, num_shards=1, shard_name_template="")
        return results["examples"]


class MissingRecordsError(RuntimeError):
    """A Beam build wrote fewer records than it generated (the dataset is not usable)."""


def check_written(name: str, expected: Mapping[str, int], split_infos: Mapping[str, Any]) -> None:
    """Raises MissingRecordsError unless every split holds its expected count (generated minus skipped)."""
    wrong = {split: (split_infos[split].num_examples if split in split_infos else 0, count)
             for split, count in expected.items()
             if (split_infos[split].num_examples if split in split_infos else 0) != count}
    if wrong:
        raise MissingRecordsError(f"{name}: the Beam build wrote " + ", ".join(
            f"{split}: {got} of {want} records" for split, (got, want) in wrong.items()))


def report_path(data_path: os.PathLike | str, split: str) -> str:
    """Where a split's skip/annotation lines go during a Beam build (inside the dataset dir)."""
    return os.path.join(os.fspath(data_path), REPORT_DIR, f"{split}.jsonl")


def read_report(data_path: os.PathLike | str, splits: list[str], report: writer_lib.WriteReport) -> None:
    """Fills `report` from the JSON lines of a Beam build, then removes them (index order, as the local path)."""
    skipped: list[writer_lib.SkippedExample] = []
    for split in splits:
        path = report_path(data_path, split)
        if not FileSystems.exists(path):
            continue
        with FileSystems.open(path) as f:
            lines = [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
        for item in sorted(lines, key=lambda item: item["index"]):
            if "annotations" in item:
                report.annotations.setdefault(split, {})[item["index"]] = item["annotations"]
            else:
                skipped.append(writer_lib.SkippedExample(split, item["index"], item["kind"], item["message"]))
    report.skipped.extend(skipped)
    folder = os.path.join(os.fspath(data_path), REPORT_DIR)
    if FileSystems.exists(folder):
        FileSystems.delete([folder])
