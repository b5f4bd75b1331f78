"""Issue 7: EuroSAT-layout GeoTIFFs -> registry (eurosat_ms builder) -> run_probe, end to end.

The other probe tests pass in-memory sources; this one goes through the
production path: `seamo_jax/experiments/probe_eurosat.py`, `config.probe.manual_dir`,
`data_pipelines.registry.prepare/load_source` and the ArrayRecord shards,
with random init + band statistics (no checkpoint).
"""

from __future__ import annotations

import json
import pathlib

import pytest

from data_pipelines import registry
from seamo_jax import configs
from seamo_jax.evaluate import probe
from tests import fixtures_real_layouts as fx

REPO = pathlib.Path(__file__).resolve().parents[1]
PER_CLASS = 6  # 60 tiles: the hashed 60/20/20 split leaves every split non-empty


def _config(tmp_path: pathlib.Path):
    config = configs.load_config_file("probe_eurosat")
    config.model.size = "tiny"  # scanned blocks: compile cost independent of depth
    config.model.decoder_dim = 16
    config.model.decoder_heads = 2
    config.probe.manual_dir = str(tmp_path / "raw")
    config.probe.data_dir = str(tmp_path / "tfds")
    config.probe.builder_kwargs = {"num_workers": 1}  # in-process writer: spawning costs seconds
    config.probe.encoders = ("random_init", "band_stats")
    config.probe.label_fractions = (1.0,)
    config.probe.seeds = (0,)
    config.probe.l2_grid = (1e-2,)
    config.probe.max_iter = 50
    config.probe.batch_size = 16
    return config


def test_run_probe_on_generated_eurosat_geotiffs(tmp_path):
    written = fx.write_eurosat_ms(str(tmp_path / "raw"), per_class=PER_CLASS)
    config = _config(tmp_path)
    # `seamo probe` only opens a prepared dataset; the error is the build command.
    with pytest.raises(registry.DatasetNotPreparedError, match="seamo data build --builder eurosat_ms --data-dir"):
        probe.run_probe(config, None, str(tmp_path / "out"))
    registry.prepare("eurosat_ms", str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw"), num_workers=1)
    results = probe.run_probe(config, None, str(tmp_path / "out"))

    # The dataset was built from the GeoTIFFs, in the probe's data_dir.
    assert (tmp_path / "tfds" / "eurosat_ms" / "1.0.0" / "dataset_info.json").exists()
    saved = json.loads((tmp_path / "out" / "probe_results.json").read_text())
    assert saved == json.loads(json.dumps(results, default=str))
    assert (tmp_path / "out" / "probe_results.md").exists()
    rows = results["results"]
    assert {r["encoder"] for r in rows} == {"random_init", "band_stats"}
    assert {r["input"] for r in rows} == {"S2, 1 season"}
    num_test = results["data"]["num_test"]
    for row in rows:  # one seed: the mean is that seed's accuracy, a whole number of test tiles
        assert row["n"] == 1 and row["mean"] == row["per_seed"][0]["value"]
        assert abs(row["mean"] * num_test - round(row["mean"] * num_test)) < 1e-6, row
    # The probe read the builder's whole train and test splits of the generated tiles.
    splits = registry.builder_info("eurosat_ms", str(tmp_path / "tfds"))["splits"]
    assert sum(splits.values()) == len(written) == 10 * PER_CLASS
    assert results["data"]["builder"] == "eurosat_ms"
    assert (results["data"]["num_train"], results["data"]["num_test"]) == (splits["train"], splits["test"])


EUROSAT_SAMPLE = REPO.parent / "shared" / "data" / "eurosat_ms_sample"


@pytest.mark.slow  # ~70 s; the default suite runs every protocol on synthetic tiles (test_evaluate_probe.py)
@pytest.mark.skipif(not EUROSAT_SAMPLE.is_dir(), reason="shared EuroSAT-MS sample not present")
def test_every_protocol_on_the_real_eurosat_sample(tmp_path):
    """The 200 real EuroSAT-MS tiles (probe_eurosat:sample: pooled and re-split 50/50) under every protocol."""
    config = configs.load_config_file("probe_eurosat:sample")
    config.model.size = "tiny"
    config.probe.manual_dir = str(EUROSAT_SAMPLE)
    config.probe.data_dir = str(tmp_path / "tfds")
    config.probe.builder_kwargs = {"num_workers": 1}
    config.probe.encoders = ("random_init", "band_stats")
    config.probe.seeds = (0,)
    config.probe.protocols = ("seamo", "copernicus_bench", "galileo", "torchgeo_bench")
    config.probe.val_fraction = 0.1          # the hashed split leaves 160 of 200 tiles in train + test, 80 after the re-split
    config.probe.input_size = 64             # the tiles' own size: the resize path is tested on synthetic tiles
    registry.prepare("eurosat_ms", str(tmp_path / "tfds"), manual_dir=str(EUROSAT_SAMPLE), num_workers=1)
    results = probe.run_probe(config, None, str(tmp_path / "out"))
    rows = {(r["encoder"], r["metric"]): r for r in results["results"]}
    assert results["skipped"] == [], [s["reason"] for s in results["skipped"]]
    assert results["data"]["num_train"] + results["data"]["num_test"] == 160
    # Real spectra separate EuroSAT's 10 land-cover classes far above chance (10%) from band statistics alone.
    for metric in ("linear_top1", "copernicus_bench.linear_probe", "galileo.linear_probe",
                   "torchgeo_bench.linear_probe", "galileo.knn_k20", "torchgeo_bench.knn_k5"):
        assert rows[("band_stats", metric)]["mean"] > 0.4, (metric, rows[("band_stats", metric)]["mean"])
        assert rows[("random_init", metric)]["metric_variant"] == "top1_oa"
