"""Checks that synthetic labels need spatial structure, not band statistics.

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
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from data_pipelines.synthetic_seasons.generator import SCENE_CLASSES, generate_tile

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_tiles", type=int, default=2100)
    parser.add_argument("--tile_size", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = run(args.num_tiles, args.tile_size, args.seed)
    print(f"classes: {len(SCENE_CLASSES)}  majority-class (chance) accuracy: {results['chance']:.3f}")
    print(f"generator: {results['generate_ms_per_tile']:.2f} ms/tile")
    print(f"(a) band mean/std  -> logistic regression: test {results['band_statistics']:.3f} "
          f"(train {results['band_statistics_train']:.3f})")
    print(f"(b) spatial structure of a 32-px crop -> logistic regression: test {results['spatial_structure']:.3f} "
          f"(train {results['spatial_structure_train']:.3f})")


if __name__ == "__main__":
    main()
