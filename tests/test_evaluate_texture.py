"""seamo_jax/evaluate/texture.py: shapes and layout, texture that band statistics cannot see, probe registration."""

import pathlib

import numpy as np
import pytest

from seamo_jax import configs
from seamo_jax.evaluate import band_stats, probe, texture

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_FEATURES = len(texture.FEATURE_NAMES)


def _raw_views(num=5, seasons=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"s2": rng.integers(0, 10000, size=(num, seasons, size, size, 13)).astype(np.uint16),
            "s1": rng.normal(-15.0, 3.0, size=(num, seasons, size, size, 2)).astype(np.float32)}


def test_shapes_layout_and_chunking():
    views = _raw_views()
    feats = texture.texture_features(views, ("s2", "s1"))
    assert feats.shape == (5, 4 * NUM_FEATURES * 13 + 4 * NUM_FEATURES * 2) and feats.dtype == np.float32
    assert texture.texture_features(views, ("s1",), seasons=(2,)).shape == (5, NUM_FEATURES * 2)
    np.testing.assert_array_equal(texture.texture_features(views, ("s2", "s1"), chunk_size=2), feats)
    # Layout per modality: season-major, then feature, then band.
    season, feature, band = 2, texture.FEATURE_NAMES.index("gradient"), 5
    expected = texture.image_texture(views["s2"][3, season, :, :, band][None])[0, feature]
    np.testing.assert_allclose(feats[3, (season * NUM_FEATURES + feature) * 13 + band], expected, rtol=1e-5)
    # The first two features are band_stats' mean and std.
    assert np.allclose(feats[:, :13], band_stats.band_statistics(views, ("s2",), seasons=(0,))[:, :13], rtol=1e-5)


def test_flat_image_is_finite():
    flat = np.full((1, 8, 8), 7.0)
    values = texture.image_texture(flat)[0]
    assert np.isfinite(values).all() and values[texture.FEATURE_NAMES.index("glcm_energy")] == pytest.approx(1.0)


def _smooth(rng, size):
    """Low-pass noise: neighbouring pixels alike."""
    noise = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    kernel = np.exp(-2.0 * (np.pi * 2.5) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(noise) * kernel))


def test_separates_textures_with_equal_mean_and_std():
    rng = np.random.default_rng(0)
    images, labels = [], []
    for index in range(40):
        label = index % 2
        image = rng.standard_normal((32, 32)) if label == 0 else _smooth(rng, 32)
        image = (image - image.mean()) / image.std()          # every image: mean 0, std 1 exactly ...
        images.append(1000.0 + 100.0 * image)                 # ... then the same mean and std in sensor units
        labels.append(label)
    views = {"s1": np.stack(images)[:, None, :, :, None].astype(np.float32)}  # [N, 1, H, W, 1]
    labels = np.array(labels)
    stats = band_stats.band_statistics(views, ("s1",))
    np.testing.assert_allclose(stats, np.broadcast_to(stats[:1], stats.shape), rtol=1e-4)  # blind to arrangement
    feats = texture.texture_features(views, ("s1",))
    standardised = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    centroids = np.stack([standardised[labels == k].mean(0) for k in (0, 1)])
    predicted = np.argmin(((standardised[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == labels).all()
    names = texture.FEATURE_NAMES
    rough, smooth = feats[labels == 0].mean(0), feats[labels == 1].mean(0)
    assert rough[names.index("gradient")] > 2 * smooth[names.index("gradient")]
    assert rough[names.index("glcm_correlation")] < 0.3 < smooth[names.index("glcm_correlation")]


def test_registered_as_probe_encoder():
    assert "texture" in probe.ENCODERS and probe.FIXED_FEATURES["texture"] is texture.texture_features
    assert "texture" not in configs.base_config().probe.encoders  # opt-in: existing probe runs keep their rows
    config = configs.load_config_file("probe_synthetic:land_cover")
    assert config.probe.encoders == ("pretrained", "random_init", "band_stats", "texture")
    assert config.probe.builder_kwargs["labels"] == "land_cover" == config.data.builder_kwargs.labels
    assert "labels" not in configs.load_config_file("probe_synthetic").data.builder_kwargs


def test_probe_runs_texture_on_land_cover_tiles(tmp_path):
    from data_pipelines.synthetic_seasons.land_cover import LAND_COVER_CLASSES, generate_land_cover_tile

    config = configs.load_config_file("probe_synthetic:land_cover_fast")
    config.probe.encoders = ("band_stats", "texture")
    config.probe.seeds = (0,)
    config.probe.input_sets = ({"name": "S2+S1, 4 seasons", "modalities": ("s2", "s1"), "seasons": (0, 1, 2, 3)},)
    sources = {split: [generate_land_cover_tile(0, split, i, 48) for i in range(count)]
               for split, count in (("train", 48), ("test", 24))}
    results = probe.run_probe(config, None, str(tmp_path), sources=sources, num_classes=len(LAND_COVER_CLASSES))
    rows = {(r["encoder"], r["metric"], r["label_fraction"]): r for r in results["results"]}
    texture_row = rows[("texture", "linear_top1", 1.0)]
    correct = texture_row["mean"] * 24  # one seed: the accuracy is a whole number of the 24 test tiles
    assert texture_row["mean"] == texture_row["per_seed"][0]["value"] and abs(correct - round(correct)) < 1e-6
    assert "| S2+S1, 4 seasons | texture |" in (tmp_path / "probe_results.md").read_text()
    config.probe.encoders = ("textures",)
    with pytest.raises(ValueError, match="unknown probe encoders"):
        probe.run_probe(config, None, str(tmp_path / "bad"), sources=sources, num_classes=len(LAND_COVER_CLASSES))
