"""run_probe end to end on tiny generated data: determinism, baselines, sensor mismatch, EuroSAT layout."""

import json
import pathlib

import jax
import numpy as np
import pytest

from seamo_jax import configs, sensors
from seamo_jax.data import testing as data_testing
from seamo_jax.evaluate import encoders, probe
from seamo_jax.train import checkpoint as checkpoint_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _records(num: int, seed: int, num_classes: int = 3) -> list[dict]:
    """Random tiles whose S2 brightness depends on the label, so band statistics can separate classes."""
    records = data_testing.make_records(num, seed=seed, num_classes=num_classes, num_seasons=4, tile_size=16)
    for r in records:
        r["s2"] = (r["s2"] // 4 + 2000 * int(r["label"])).astype(np.uint16)
    return records


def _config(tmp_path: pathlib.Path):
    config = configs.load_config_file("probe_synthetic:fast")
    config.data.crop_size = 16
    config.model.size = "tiny"  # scanned blocks: compile cost does not grow with depth
    config.model.decoder_dim = 16
    config.model.decoder_heads = 2
    config.probe.crop_size = 16
    config.probe.num_train = 36
    config.probe.num_test = 18
    config.probe.seeds = (0, 1, 2)
    config.probe.input_sets = (
        {"name": "S2+S1, 4 seasons", "modalities": ("s2", "s1"), "seasons": (0, 1, 2, 3)},
        {"name": "S1, season 2", "modalities": ("s1",), "seasons": (2,)},
    )
    return config


def _sources():
    return {"train": _records(36, seed=0), "test": _records(18, seed=1)}


def test_run_probe_random_init_and_band_stats_deterministic(tmp_path):
    config = _config(tmp_path)
    first = probe.run_probe(config, None, str(tmp_path / "a"), sources=_sources(), num_classes=3)
    second = probe.run_probe(config, None, str(tmp_path / "b"), sources=_sources(), num_classes=3)
    text_a = (tmp_path / "a" / "probe_results.json").read_text()
    assert text_a == (tmp_path / "b" / "probe_results.json").read_text()  # identical to the last digit
    assert json.loads(text_a) == json.loads(json.dumps(first, default=str)) == json.loads(json.dumps(second, default=str))
    rows = {(r["input"], r["encoder"], r["metric"], r["label_fraction"]): r for r in first["results"]}
    assert {r["encoder"] for r in first["results"]} == {"random_init", "band_stats"}  # no checkpoint: no pretrained
    band = rows[("S2+S1, 4 seasons", "band_stats", "linear_top1", 1.0)]
    assert band["n"] == 3 and band["mean"] > 0.9        # brightness encodes the label
    # S1 carries no label signal here: near chance for every encoder.
    assert rows[("S1, season 2", "band_stats", "linear_top1", 1.0)]["mean"] < 0.7
    # Random-init features differ per seed (init seed = init_seed + seed), band stats do not.
    random_rows = rows[("S2+S1, 4 seasons", "random_init", "knn_top1", 1.0)]
    assert len(random_rows["per_seed"]) == 3
    md = (tmp_path / "a" / "probe_results.md").read_text()
    assert "| S2+S1, 4 seasons | band_stats |" in md and "linear_top1 @100%" in md
    assert sorted(p.name for p in (tmp_path / "a" / "splits").iterdir()) == [
        "labels_0.25_seed0.json", "labels_0.25_seed1.json", "labels_0.25_seed2.json",
        "labels_1_seed0.json", "labels_1_seed1.json", "labels_1_seed2.json"]
    # Cached features are reused: a third run in the same dir does not recompute (same files, same numbers).
    cache = sorted((tmp_path / "a" / "feature_cache").glob("*.npy"))
    assert len(cache) == 2 * 3  # 2 input sets x 3 random inits
    third = probe.run_probe(config, None, str(tmp_path / "a"), sources=_sources(), num_classes=3)
    assert json.dumps(third, sort_keys=True, default=str) == json.dumps(first, sort_keys=True, default=str)


def _write_checkpoint(workdir: pathlib.Path, config, specs) -> None:
    """A checkpoint whose params fit `specs` (e.g. 12 L2A bands) and whose sensors.json says so."""
    config = configs.config_from_json(configs.config_to_json(config))
    config.data.sensors = {m: spec.name for m, spec in specs.items()}
    source = encoders.load_encoder_source(config, None)
    params = encoders.random_init(source, seed=42)["params"]
    checkpoint_lib.write_run_metadata(workdir, config, specs)
    ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", save_every=1, async_save=False)
    ckpt.save(5, {"params": params, "step": np.int32(5)}, force=True)
    ckpt.close()


def test_pretrained_checkpoint_probe_and_sensor_mismatch(tmp_path):
    config = _config(tmp_path)
    config.probe.input_sets = ({"name": "S2, season 0", "modalities": ("s2",), "seasons": (0,)},)
    config.probe.seeds = (0,)
    config.probe.encoders = ("pretrained",)
    config.probe.label_fractions = (1.0,)
    good = tmp_path / "good"
    _write_checkpoint(good, config, {"s2": sensors.S2_L1C, "s1": sensors.S1_GRD})
    results = probe.run_probe(config, str(good), str(tmp_path / "out"), sources=_sources(), num_classes=3)
    assert {r["encoder"] for r in results["results"]} == {"pretrained"}
    assert results["checkpoint"] == str(good)
    # The same weights as random init seed 42 give the same features as a random-init probe with that seed.
    config.probe.encoders = ("random_init",)
    config.probe.init_seed = 42
    random = probe.run_probe(config, None, str(tmp_path / "out2"), sources=_sources(), num_classes=3)
    assert [r["mean"] for r in random["results"]] == [r["mean"] for r in results["results"]]
    # A checkpoint trained on L2A (12 bands) must refuse L1C evaluation data.
    bad = tmp_path / "bad"
    _write_checkpoint(bad, config, {"s2": sensors.S2_L2A, "s1": sensors.S1_GRD})
    with pytest.raises(sensors.SensorMismatchError, match="level L1C vs trained L2A"):
        probe.run_probe(config, str(bad), str(tmp_path / "out3"), sources=_sources(), num_classes=3)


def test_export_from_checkpoint_dir(tmp_path):
    """`seamo export` path: Orbax checkpoint dir -> safetensors (Flax + timm names) + model card."""
    from safetensors.numpy import load_file

    from seamo_jax.export import export

    config = _config(tmp_path)
    workdir = tmp_path / "run"
    _write_checkpoint(workdir, config, {"s2": sensors.S2_L1C, "s1": sensors.S1_GRD})
    out = tmp_path / "export"
    card = export(str(workdir), str(out))
    assert card["step"] == 5
    written = {p.name for p in out.iterdir()}
    assert {"encoder.safetensors", "timm_vit_s2.safetensors", "model_card.json"} <= written
    params, _, _ = checkpoint_lib.load_params(workdir)
    flat = load_file(str(out / "encoder.safetensors"))
    cls_name = next(name for name in flat if name.endswith("cls_token"))
    np.testing.assert_array_equal(flat[cls_name], np.asarray(params["encoder"]["cls_token"]))
    timm = load_file(str(out / "timm_vit_s2.safetensors"))
    dim = flat[cls_name].shape[-1]
    assert timm["cls_token"].shape == (1, 1, dim)
    assert timm["patch_embed.proj.weight"].shape[:2] == (dim, sensors.S2_L1C.num_bands)
    assert "blocks.0.attn.qkv.weight" in timm


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    config = _config(tmp_path)
    _write_checkpoint(tmp_path / "run", config, {"s2": sensors.S2_L1C, "s1": sensors.S1_GRD})
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    written["model"]["patch_size"] = written["model"]["patch_size"] // 2  # config.json no longer matches the params
    (tmp_path / "run" / "config.json").write_text(json.dumps(written))
    (tmp_path / "run" / "checkpoints" / "config.json").write_text(json.dumps(written))
    with pytest.raises(ValueError, match=r"encoder params of .*\['patch_embed_s\d'\]\['kernel'\] has shape"):
        encoders.load_encoder_source(config, str(tmp_path / "run"))


@pytest.mark.slow  # ~45 s; each protocol's own tests (test_probe_protocols.py) stay in the default suite
def test_every_protocol_runs_in_the_probe_on_shared_cached_features(tmp_path):
    """seamo + the three published protocols in one run: rows name protocol, metric variant, input size and
    normalisation; features at one input size are extracted once and shared; flips give copernicus_bench its
    4 train views; protocols that cannot run at a label fraction say so instead of failing."""
    config = _config(tmp_path)
    config.probe.protocols = ("seamo", "copernicus_bench", "galileo", "torchgeo_bench")
    config.probe.input_size = 24            # not the benchmarks' 224 px: a tiny encoder on CPU
    config.probe.encoders = ("random_init", "band_stats")
    config.probe.seeds = (0,)
    config.probe.label_fractions = (1.0,)   # one train size: each protocol compiles once per feature width
    config.probe.input_sets = ({"name": "S2+S1, 4 seasons", "modalities": ("s2", "s1"), "seasons": (0, 1, 2, 3)},)
    sources = {"train": _records(96, seed=0), "test": _records(30, seed=1)}
    config.probe.num_train, config.probe.num_test = 96, 30
    results = probe.run_probe(config, None, str(tmp_path / "p"), sources=sources, num_classes=3)
    rows = {(r["encoder"], r["metric"], r["label_fraction"]): r for r in results["results"]}
    assert {r["protocol"] for r in results["results"]} == set(config.probe.protocols)
    for encoder in ("random_init", "band_stats"):
        for metric, variant in (("linear_top1", "top1_oa"), ("copernicus_bench.linear_probe", "top1_oa"),
                                ("galileo.linear_probe", "top1_oa"), ("galileo.knn_k20", "top1_oa"),
                                ("galileo.knn_k5", "top1_oa"), ("torchgeo_bench.linear_probe", "top1_oa"),
                                ("torchgeo_bench.knn_k5", "top1_oa")):
            row = rows[(encoder, metric, 1.0)]
            assert row["metric_variant"] == variant and row["n"] == 1 and "z-score" in row["normalisation"]
            # the seamo protocol reads the native 16-px views; published ones the requested 24 px
            assert row["input_size"] == (16 if metric == "linear_top1" or encoder == "band_stats" else 24), row
    # Brightness encodes the label: every linear protocol separates it from band statistics (chance: 1/3;
    # copernicus_bench takes one 64-sample SGD step per epoch here, so it trails the full-batch fits).
    for metric, floor in (("linear_top1", 0.9), ("copernicus_bench.linear_probe", 0.7),
                          ("galileo.linear_probe", 0.8), ("torchgeo_bench.linear_probe", 0.8)):
        assert rows[("band_stats", metric, 1.0)]["mean"] > floor, metric
    low, high = rows[("band_stats", "torchgeo_bench.linear_probe", 1.0)]["per_seed"][0]["bootstrap_ci95"]
    assert low <= rows[("band_stats", "torchgeo_bench.linear_probe", 1.0)]["per_seed"][0]["value"] <= high
    # Random-init features: native (seamo) + 24 px and its 3 flips (copernicus_bench), for the one init seed.
    assert len(list((tmp_path / "p" / "feature_cache").glob("*.npy"))) == 1 + 4
    assert "protocol `copernicus_bench`" in (tmp_path / "p" / "probe_results.md").read_text()
    # 50% of 96 labels leaves < 64 for copernicus_bench's drop_last batches: recorded as not run.
    config.probe.protocols, config.probe.encoders, config.probe.label_fractions = ("copernicus_bench",), ("band_stats",), (0.5,)
    small = probe.run_probe(config, None, str(tmp_path / "p"), sources=sources, num_classes=3)
    assert small["results"] == [] and {(s["protocol"], s["label_fraction"]) for s in small["skipped"]} == {
        ("copernicus_bench", 0.5)}
    assert "not run: copernicus_bench" in (tmp_path / "p" / "probe_results.md").read_text()
    with pytest.raises(ValueError, match="unknown protocol 'geobench'"):
        config.probe.protocols = ("geobench",)
        probe.run_probe(config, None, str(tmp_path / "q"), sources=sources, num_classes=3)
