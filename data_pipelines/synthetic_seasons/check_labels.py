"""Checks what the synthetic labels need: spatial structure (scene labels), seasons and SAR (land cover).

Scene labels (`--labels scene`, default):

Fits the same multinomial logistic regression on two feature sets of the
same tiles and prints held-out accuracies:

  (a) band statistics: per season, per band mean and std of the whole tile,
      Sentinel-2 and Sentinel-1 (4 x 15 x 2 = 120 features). Should be near
      chance (1 / num_classes), because covers and their proportions are drawn
      independently of the label.
  (b) spatial structure of a random 32x32 crop: rotation-invariant gradient
      orientation histogram, edge density and radial autocorrelation of the
      crop's dominant spectral component. Should be clearly above chance.

    python -m data_pipelines.synthetic_seasons.check_labels --num_tiles 2100

Land-cover labels (`--labels land_cover`, `run_land_cover`): the same classifier on
the central 32 px crop (what the probe sees), per feature set and per class
group (all 9 classes, the 4 crops, flooded vs dry vegetation, urban vs bare
soil): per-band means of one S2 date, of all four S2 dates, of S1, of both;
then band mean+std (`seamo_jax.evaluate.band_stats`) and texture features
(`seamo_jax.evaluate.texture`) of S2+S1 over four seasons, the probe's two baselines.

    python -m data_pipelines.synthetic_seasons.check_labels --labels land_cover --num_tiles 2700
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from data_pipelines.synthetic_seasons import land_cover_spectra as lcs
from data_pipelines.synthetic_seasons.generator import SCENE_CLASSES, generate_tile
from data_pipelines.synthetic_seasons.land_cover import LAND_COVER_CLASSES, generate_land_cover_tile

CROP = 32


def band_statistics(tile: dict) -> np.ndarray:
    """float64 [S * (13 + 2) * 2]: per season/band mean and std over the tile."""
    parts = []
    for key in ("s2", "s1"):
        values = tile[key].astype(np.float64)
        if key == "s2":
            values = np.log1p(values)  # reflectances are skewed; logs suit a linear model
        parts += [values.mean(axis=(1, 2)).ravel(), values.std(axis=(1, 2)).ravel()]
    return np.concatenate(parts)


def _dominant_component(crop_s2: np.ndarray) -> np.ndarray:
    """First principal component of the season-median spectra, [H, W] unit std.

    The median over seasons removes most clouds; the first PC separates the
    two covers of the layout, whatever they are.
    """
    pixels = np.log1p(np.median(crop_s2.astype(np.float64), axis=0)).reshape(-1, crop_s2.shape[-1])
    pixels -= pixels.mean(axis=0)
    _, _, components = np.linalg.svd(pixels, full_matrices=False)
    projected = (pixels @ components[0]).reshape(crop_s2.shape[1:3])
    return projected / (projected.std() + 1e-9)


def structure_features(tile: dict, rng: np.random.Generator) -> np.ndarray:
    """float64 [24] spatial features of one random 32x32 crop (all seasons, S2)."""
    size = tile["s2"].shape[1]
    row, col = rng.integers(0, size - CROP + 1, size=2)
    image = _dominant_component(tile["s2"][:, row:row + CROP, col:col + CROP])

    grad_rows, grad_cols = np.gradient(image)
    # Doubled angle: an edge and its opposite-contrast twin count the same.
    doubled_angle = np.arctan2(2 * grad_rows * grad_cols, grad_cols**2 - grad_rows**2)
    magnitude = np.hypot(grad_rows, grad_cols)
    histogram, _ = np.histogram(doubled_angle, bins=8, range=(-np.pi, np.pi), weights=magnitude**2)
    histogram = histogram / (histogram.sum() + 1e-9)
    histogram = np.roll(histogram, -int(np.argmax(histogram)))  # rotation invariance

    energy = magnitude / (np.percentile(magnitude, 95) + 1e-9)
    edge_density = [(energy > level).mean() for level in (0.25, 0.5, 0.75)]

    centred = image - image.mean()
    spectrum = np.abs(np.fft.fft2(centred, s=(2 * CROP, 2 * CROP))) ** 2
    autocorrelation = np.real(np.fft.ifft2(spectrum))
    autocorrelation /= autocorrelation[0, 0] + 1e-9
    lag_rows, lag_cols = np.meshgrid(np.fft.fftfreq(2 * CROP) * 2 * CROP, np.fft.fftfreq(2 * CROP) * 2 * CROP,
                                     indexing="ij")
    radius = np.hypot(lag_rows, lag_cols)
    radial = [autocorrelation[(radius >= lag - 0.5) & (radius < lag + 0.5)].mean() for lag in range(1, 13)]
    anisotropy = [np.std(autocorrelation[(radius >= lag - 0.5) & (radius < lag + 0.5)]) for lag in (3, 6)]
    return np.concatenate([histogram, edge_density, radial, anisotropy])


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                            steps: int = 600, learning_rate: float = 0.5, l2: float = 1e-3
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent.

    Args:
      features: float [N, D]; standardised inside.
      labels: int [N].
    Returns:
      (weights [D, K], bias [K], feature_mean [D], feature_std [D]).
    """
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-9
    standardised = (features - mean) / std
    weights = np.zeros((features.shape[1], num_classes))
    bias = np.zeros(num_classes)
    targets = np.eye(num_classes)[labels]
    for _ in range(steps):
        logits = standardised @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        error = (probabilities - targets) / len(labels)
        weights -= learning_rate * (standardised.T @ error + l2 * weights)
        bias -= learning_rate * error.sum(axis=0)
    return weights, bias, mean, std


def accuracy(model: tuple[np.ndarray, ...], features: np.ndarray, labels: np.ndarray) -> float:
    weights, bias, mean, std = model
    predictions = np.argmax(((features - mean) / std) @ weights + bias, axis=1)
    return float((predictions == labels).mean())


def run(num_tiles: int, tile_size: int, seed: int, test_fraction: float = 1 / 3) -> dict[str, float]:
    """Generates tiles, fits both probes; returns accuracies and chance level."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    tiles = [generate_tile(seed, "check", index, tile_size) for index in range(num_tiles)]
    generate_seconds = time.perf_counter() - start
    labels = np.array([tile["label"] for tile in tiles])
    feature_sets = {
        "band_statistics": np.stack([band_statistics(tile) for tile in tiles]),
        "spatial_structure": np.stack([structure_features(tile, rng) for tile in tiles]),
    }
    num_test = int(num_tiles * test_fraction)
    results = {"chance": float(np.bincount(labels).max() / len(labels)),
               "generate_ms_per_tile": 1e3 * generate_seconds / num_tiles}
    for name, features in feature_sets.items():
        model = fit_logistic_regression(features[num_test:], labels[num_test:], len(SCENE_CLASSES))
        results[f"{name}_train"] = accuracy(model, features[num_test:], labels[num_test:])
        results[name] = accuracy(model, features[:num_test], labels[:num_test])
    return results


# ---- land-cover labels ----

LAND_COVER_GROUPS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(lcs.NUM_CLASSES)),
    "crops": lcs.CROPS,
    "flooded_vs_dry": (lcs.DRY_VEGETATION, lcs.FLOODED_VEGETATION),
    "urban_vs_bare": (lcs.URBAN, lcs.BARE_SOIL),
}


def centre_crop(tile: dict, crop: int = CROP) -> dict[str, np.ndarray]:
    """The central crop x crop window of s2 and s1 (the probe's "center" crop): [S, crop, crop, C] each."""
    start = (tile["s2"].shape[1] - crop) // 2
    return {key: tile[key][:, start:start + crop, start:start + crop] for key in ("s2", "s1")}


def land_cover_feature_sets(crops: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Feature set name -> float64 [N, D] for the land-cover check.

    Per-band means (log reflectance for S2, dB for S1) of single S2 dates, all
    S2 dates, S1, both; then the probe's baselines on S2+S1 x 4 seasons.
    """
    from seamo_jax.evaluate import band_stats, texture  # local: the scene check does not need them

    s2 = np.stack([np.log1p(c["s2"].astype(np.float64)).mean(axis=(1, 2)) for c in crops])  # [N, S, 13]
    s1 = np.stack([c["s1"].astype(np.float64).mean(axis=(1, 2)) for c in crops])            # [N, S, 2]
    sets = {f"S2 means, season {season}": s2[:, season] for season in range(s2.shape[1])}
    sets["S2 means, 4 seasons"] = s2.reshape(len(crops), -1)
    sets["S1 means, 4 seasons"] = s1.reshape(len(crops), -1)
    sets["S2+S1 means, 4 seasons"] = np.concatenate([sets["S2 means, 4 seasons"], sets["S1 means, 4 seasons"]], 1)
    for season in range(s2.shape[1]):
        sets[f"S2+S1 means, season {season}"] = np.concatenate([s2[:, season], s1[:, season]], 1)
    raw = {key: np.stack([c[key] for c in crops]) for key in ("s2", "s1")}
    sets["band_stats S2+S1, 4 seasons"] = band_stats.band_statistics(raw, ("s2", "s1")).astype(np.float64)
    sets["texture S2+S1, 4 seasons"] = texture.texture_features(raw, ("s2", "s1")).astype(np.float64)
    return sets


def run_land_cover(num_tiles: int, tile_size: int, seed: int, test_fraction: float = 1 / 3
                   ) -> dict[str, dict[str, float]]:
    """Held-out accuracy per class group and feature set on land-cover tiles.

    Returns:
      group -> {"chance": majority share, "num_tiles": n, feature set -> test accuracy};
      plus "timing" -> {"generate_ms_per_tile": ...}.
    """
    start = time.perf_counter()
    tiles = [generate_land_cover_tile(seed, "check", index, tile_size) for index in range(num_tiles)]
    generate_seconds = time.perf_counter() - start
    labels = np.array([tile["label"] for tile in tiles])
    sets = land_cover_feature_sets([centre_crop(tile) for tile in tiles])
    results: dict[str, dict[str, float]] = {"timing": {"generate_ms_per_tile": 1e3 * generate_seconds / num_tiles}}
    for group, classes in LAND_COVER_GROUPS.items():
        rows = np.flatnonzero(np.isin(labels, classes))
        group_labels = np.searchsorted(np.array(classes), labels[rows])  # classes are sorted
        num_test = int(len(rows) * test_fraction)
        entry = {"chance": float(np.bincount(group_labels).max() / len(rows)), "num_tiles": float(len(rows))}
        for name, features in sets.items():
            x = features[rows]
            model = fit_logistic_regression(x[num_test:], group_labels[num_test:], len(classes))
            entry[name] = accuracy(model, x[:num_test], group_labels[:num_test])
        results[group] = entry
    return results


def format_land_cover(results: dict[str, dict[str, float]]) -> str:
    """A text table: feature sets down, class groups across."""
    groups = [g for g in LAND_COVER_GROUPS if g in results]
    names = [k for k in results[groups[0]] if k not in ("chance", "num_tiles")]
    lines = [f"{'held-out accuracy':<30}" + "".join(f"{g:>16}" for g in groups),
             f"{'(tiles in group)':<30}" + "".join(f"{int(results[g]['num_tiles']):>16d}" for g in groups),
             f"{'chance (majority class)':<30}" + "".join(f"{results[g]['chance']:>16.3f}" for g in groups)]
    lines += [f"{name:<30}" + "".join(f"{results[g][name]:>16.3f}" for g in groups) for name in names]
    lines.append(f"generator: {results['timing']['generate_ms_per_tile']:.2f} ms/tile; classes: "
                 + ", ".join(LAND_COVER_CLASSES))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_tiles", type=int, default=2100)
    parser.add_argument("--tile_size", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", choices=("scene", "land_cover"), default="scene")
    args = parser.parse_args()
    if args.labels == "land_cover":
        print(format_land_cover(run_land_cover(args.num_tiles, args.tile_size, args.seed)))
        return
    results = run(args.num_tiles, args.tile_size, args.seed)
    print(f"classes: {len(SCENE_CLASSES)}  majority-class (chance) accuracy: {results['chance']:.3f}")
    print(f"generator: {results['generate_ms_per_tile']:.2f} ms/tile")
    print(f"(a) band mean/std  -> logistic regression: test {results['band_statistics']:.3f} "
          f"(train {results['band_statistics_train']:.3f})")
    print(f"(b) spatial structure of a 32-px crop -> logistic regression: test {results['spatial_structure']:.3f} "
          f"(train {results['spatial_structure_train']:.3f})")


if __name__ == "__main__":
    main()
