"""The Beam path (TFDS's Beam support, DirectRunner) writes the same records as the local writer.

Same index -> same decoded record dict, for synthetic_seasons (built by
`seamo data build --beam-pipeline-options=...` with 2 worker processes) and
for ssl4eo_s12 on a tiny fixture with one skipped and one noted location
(the skip and note reach metadata.json and the build summary alike).
Also: apache-beam's runner-side data streams keep what is written during a
timed flush (`beam_build.serialise_time_flushed_writes`), the cause of the
records DirectRunner's multi_processing mode lost on large builds.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tifffile

from data_pipelines import registry
from data_pipelines.ssl4eo_s12.builder import Ssl4eoS12, Ssl4eoS12Config
from data_pipelines.synthetic_seasons.builder import SyntheticSeasons
from seamo_jax import cli
from tests import fixtures_real_layouts as fx

beam_build = pytest.importorskip("data_pipelines.beam_build", reason="needs the `beam` extra (apache-beam)")

TWO_PROCESSES = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"


def _assert_same_records(local, beam) -> None:
    assert sorted(local.info.splits) == sorted(beam.info.splits)
    for split in local.info.splits:
        a, b = local.as_data_source(split=split), beam.as_data_source(split=split)
        assert len(a) == len(b) > 0, split
        for index in range(len(a)):
            ra, rb = a[index], b[index]
            assert ra.keys() == rb.keys()
            for key in ra:
                np.testing.assert_array_equal(ra[key], rb[key], err_msg=f"{split}[{index}].{key}")


def test_synthetic_seasons_beam_cli_build_equals_local(tmp_path, capsys):
    kwargs = dict(tile_size=16, num_train=6, num_test=3)
    registry.prepare("synthetic_seasons", tmp_path / "local", num_workers=1, **kwargs)
    words = ["data", "build", "--builder", "synthetic_seasons", "--data-dir", str(tmp_path / "beam"),
             f"--beam-pipeline-options={TWO_PROCESSES}"]
    words += [f"--builder-arg={key}={value}" for key, value in kwargs.items()]
    assert cli.main(words) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n"):])["splits"] == {"train": 6, "test": 3}
    local = registry.get_builder("synthetic_seasons", tmp_path / "local", **kwargs)
    beam = registry.get_builder("synthetic_seasons", tmp_path / "beam", **kwargs)
    _assert_same_records(local, beam)


def test_ssl4eo_beam_build_equals_local_with_skips_and_notes(tmp_path):
    raw = tmp_path / "raw"
    fx.write_ssl4eo_s12(str(raw), num_locations=4, tile_size=24, products=("s2c", "s1"))
    bad = raw / "s1" / "0000001" / fx.S1_SEASON_NAMES[2] / "VH.tif"  # NaN: skipped (BadRecordError)
    values = tifffile.imread(bad)
    values[3, 4] = np.nan
    tifffile.imwrite(bad, values)
    noted = raw / "s2c" / "0000002" / fx.S2_SEASON_NAMES[1] / "B5.tif"  # off-size band: resampled, noted
    tifffile.imwrite(noted, np.full((4, 4), 700, np.uint16))
    config = Ssl4eoS12Config(name="l1c_t24", tile_size=24)
    built = {}
    for path, beam_options in (("local", None), ("beam", beam_build.pipeline_options("runner=DirectRunner"))):
        builder = Ssl4eoS12(data_dir=str(tmp_path / path), config=config, num_workers=1)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(raw), beam_options=beam_options))
        built[path] = builder
    _assert_same_records(built["local"], built["beam"])
    local_meta, beam_meta = (dict(built[p].info.metadata) for p in ("local", "beam"))
    assert beam_meta == local_meta
    assert beam_meta["skipped_counts"] == {"train": 1} and beam_meta["records_written"] == {"train": 3}
    assert "B5.tif 4x4" in json.dumps(beam_meta["notes"])
    summaries = [[line.replace(os.fspath(built[p].data_path), "<dir>") for line in built[p].build_summary()]
                 for p in ("local", "beam")]
    assert summaries[0] == summaries[1] and "skipped 0000001" in "\n".join(summaries[1])
    assert not os.path.exists(os.path.join(built["beam"].data_path, beam_build.REPORT_DIR))


def test_a_beam_build_with_missing_records_fails():
    infos = {"train": tfds.core.SplitInfo(name="train", shard_lengths=[3, 2], num_bytes=0)}
    beam_build.check_written("x", {"train": 5}, infos)
    with pytest.raises(beam_build.MissingRecordsError, match="train: 5 of 7 records"):
        beam_build.check_written("x", {"train": 7}, infos)


def test_time_flushed_data_streams_keep_bytes_written_during_a_flush():
    # The runner's data channel flushes from a timer thread; a write racing a
    # slow flush (big protobuf copy, full send queue) was dropped before the fix.
    from apache_beam.runners.worker import data_plane

    received = []

    def slow_flush(data: bytes) -> None:
        if data:
            received.append(data)
            time.sleep(0.02)

    stream = data_plane.TimeBasedBufferingClosableOutputStream(
        lambda data: received.append(data) if data else None, flush_callback=slow_flush, time_flush_threshold_ms=5)
    chunks = [bytes([k]) * 100 for k in range(100)]
    for chunk in chunks:
        stream.write(chunk)
        time.sleep(0.002)
    stream.close()
    assert b"".join(received) == b"".join(chunks)


def test_two_process_beam_build_writes_every_record_while_the_runner_flushes_often(tmp_path, monkeypatch):
    # The runner flushing every 1 ms instead of 1000 ms shows the race that lost
    # 20-56% of 2 GB builds on ~40 MB: without the fix, 44 of 80 train records.
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1)
    kwargs = dict(tile_size=64, num_train=80, num_test=2)  # ~0.5 MB records, ~40 MB
    local = SyntheticSeasons(data_dir=str(tmp_path / "local"), num_workers=1, **kwargs)
    local.download_and_prepare()
    beam = SyntheticSeasons(data_dir=str(tmp_path / "beam"), **kwargs)
    beam.download_and_prepare(download_config=tfds.download.DownloadConfig(
        beam_options=beam_build.pipeline_options(TWO_PROCESSES)))  # MissingRecordsError if any is lost
    assert {split: info.num_examples for split, info in beam.info.splits.items()} == {"train": 80, "test": 2}
    _assert_same_records(local, beam)
