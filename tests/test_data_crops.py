"""Region selection (crops.py): same / partial / disjoint, "overlap" and "crop_area" readings."""
import numpy as np
import pytest

from seamo_jax import sensors
from seamo_jax.data import augment, crops, resize

DRAWS = 600


def _pairs(windows):
    """Pairwise overlaps |A ∩ B| / max(|A|, |B|) of one sample's seasons, [S*(S-1)/2]."""
    m = crops.pairwise_overlaps(windows.offsets, windows.sizes)
    return m[np.triu_indices(len(m), 1)]


def _draw(tile, crop, seasons, selection, reading, overlap, seed=0, draws=DRAWS):
    rng = np.random.default_rng(seed)
    return [crops.sample_season_windows(rng, tile, crop, seasons, selection=selection, reading=reading,
                                        overlap_range=overlap) for _ in range(draws)]


def _inside(windows, tile):
    height, width = (tile, tile) if isinstance(tile, int) else tile
    o, s = windows.offsets, windows.sizes
    assert o.dtype == np.int32 and o.shape == (len(s), 2) and s.dtype == np.int32
    assert (o >= 0).all() and (o[:, 0] + s <= height).all() and (o[:, 1] + s <= width).all()


def _assert_covers(values, lo, hi):
    values = np.asarray(values)
    assert values.min() >= lo - 1e-9, (values.min(), lo)
    assert values.max() <= hi + 1e-9, (values.max(), hi)
    assert values.min() <= lo + 0.02, (values.min(), lo)   # the low end is really reached


@pytest.mark.parametrize("tile,crop,seasons,overlap", [
    (64, 32, 4, (0.5, 1.0)),
    (64, 32, 4, (0.3, 0.8)),
    ((40, 56), 32, 2, (0.6, 0.9)),
    (48, 32, 3, (0.25, 1.0)),    # the lowest overlap these sizes allow
    (264, 224, 4, (0.7, 1.0)),   # SSL4EO sizes: >= 0.675 is reachable
    (96, 32, 4, (0.0, 0.5)),     # down to touching windows
])
def test_overlap_partial_pairwise_overlap_covers_range(tile, crop, seasons, overlap):
    lo, hi = overlap
    samples = _draw(tile, crop, seasons, "partial", "overlap", overlap)
    for w in samples:
        _inside(w, tile)
        assert (w.sizes == crop).all() and w.references is None
    pairs = np.concatenate([_pairs(w) for w in samples])
    _assert_covers(pairs, lo, hi)
    # Views of different seasons really differ, and the smallest pair of a sample spreads over the range.
    minima = np.array([_pairs(w).min() for w in samples])
    assert minima.max() > lo + 0.25 * (hi - lo)


def test_overlap_partial_two_seasons_is_uniform_over_range():
    pairs = np.concatenate([_pairs(w) for w in _draw(64, 32, 2, "partial", "overlap", (0.5, 1.0), draws=2000)])
    assert abs(pairs.mean() - 0.75) < 0.02
    counts = np.histogram(pairs, bins=4, range=(0.5, 1.0))[0] / len(pairs)
    assert (np.abs(counts - 0.25) < 0.05).all(), counts


@pytest.mark.parametrize("reading", ["overlap", "crop_area"])
def test_same_is_one_window_for_all_seasons(reading):
    samples = _draw(64, 32, 4, "same", reading, (0.5, 1.0), draws=200)
    for w in samples:
        _inside(w, 64)
        assert (w.offsets == w.offsets[0]).all() and (w.sizes == w.sizes[0]).all()
        assert (_pairs(w) == 1.0).all()
    assert len({tuple(w.offsets[0]) for w in samples}) > 20  # the shared window itself moves


@pytest.mark.parametrize("reading,tile,seasons", [("overlap", 64, 4), ("overlap", (40, 72), 2), ("overlap", 80, 3),
                                                  ("crop_area", 64, 4), ("crop_area", 264, 4), ("crop_area", 48, 3)])
def test_disjoint_has_zero_overlap(reading, tile, seasons):
    samples = _draw(tile, 32, seasons, "disjoint", reading, (0.5, 1.0), draws=200)
    for w in samples:
        _inside(w, tile)
        assert (_pairs(w) == 0.0).all()
    assert len({tuple(map(tuple, w.offsets)) for w in samples}) > 10


@pytest.mark.parametrize("tile,seasons,overlap", [(128, 4, (0.5, 1.0)), (264, 4, (0.5, 1.0)), (128, 2, (0.3, 0.6)),
                                                  ((96, 160), 4, (0.6, 0.9))])
def test_crop_area_partial_area_ratio_and_pairwise_overlap_cover_range(tile, seasons, overlap):
    lo, hi = overlap
    height, width = (tile, tile) if isinstance(tile, int) else tile
    samples = _draw(tile, 32, seasons, "partial", "crop_area", overlap)
    ratios, pairs = [], []
    for w in samples:
        _inside(w, tile)
        ref = w.references
        assert ref.shape == (seasons, 3) and (ref[:, 2] == min(height, width)).all() and (ref == ref[0]).all()
        # Every crop lies inside the reference square.
        assert (w.offsets >= ref[:, :2]).all() and (w.offsets + w.sizes[:, None] <= ref[:, :2] + ref[:, 2:]).all()
        ratios += list(w.sizes.astype(float) ** 2 / ref[:, 2] ** 2)
        pairs += list(_pairs(w))
        np.testing.assert_allclose(w.scales(32), w.sizes / 32)
    _assert_covers(ratios, lo, hi)
    _assert_covers(pairs, lo, hi)
    assert len(set(np.round(ratios, 3))) > 10  # crop sizes vary


def test_crop_area_disjoint_references_are_cells():
    for w in _draw(264, 224, 4, "disjoint", "crop_area", (0.5, 1.0), draws=100):
        ref = w.references
        assert (ref[:, 2] == 132).all()  # 2 x 2 grid of the 264-px tile
        assert crops.pairwise_overlaps(ref[:, :2], ref[:, 2]).sum() == 4  # references disjoint too
        ratio = w.sizes.astype(float) ** 2 / ref[:, 2] ** 2
        assert (ratio >= 0.5 - 1e-9).all() and (ratio <= 1.0).all()


def test_seed_determinism():
    for reading in ("overlap", "crop_area"):
        a, b = (_draw(64, 32, 4, "partial", reading, (0.5, 1.0), seed=7, draws=5) for _ in range(2))
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.offsets, y.offsets)
            np.testing.assert_array_equal(x.sizes, y.sizes)
    np.testing.assert_array_equal(crops.sample_crop_offsets(np.random.default_rng(1), 48, 32, 4),
                                  _draw(48, 32, 4, "partial", "overlap", (0.5, 1.0), seed=1, draws=1)[0].offsets)


def test_unreachable_ranges_are_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"lowest overlap 0\.6747 .*224px windows .*264x264 tile.*"
                                         r">= 290x290 px.*<= 204 px"):
        crops.sample_season_windows(rng, 264, 224, 4, overlap_range=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"needs 4 non-overlapping 224px windows, but a 264x264 tile fits 1"):
        crops.sample_season_windows(rng, 264, 224, 4, selection="disjoint")
    with pytest.raises(ValueError, match=r"needs 2 non-overlapping 32px windows, but a 48x48 tile fits 1"):
        crops.sample_season_windows(rng, 48, 32, 2, selection="disjoint")
    with pytest.raises(ValueError, match="larger than tile"):
        crops.sample_season_windows(rng, 16, 32, 4)
    with pytest.raises(ValueError, match="region_selection must be one of"):
        crops.sample_season_windows(rng, 64, 32, 4, selection="overlapping")
    with pytest.raises(ValueError, match="region_reading must be one of"):
        crops.sample_season_windows(rng, 64, 32, 4, reading="area")
    with pytest.raises(ValueError, match="0 <= lo <= hi <= 1"):
        crops.sample_season_windows(rng, 64, 32, 4, overlap_range=(0.8, 0.5))
    # One season has no pair to constrain: any range works.
    assert crops.sample_season_windows(rng, 264, 224, 1, overlap_range=(0.5, 1.0)).offsets.shape == (1, 2)


def _bilinear_reference(image, size):
    """float64 separable bilinear, half-pixel centres, edges clamped."""
    def weights(src):
        pos = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
        i0 = np.floor(pos).astype(int)
        w = np.zeros((size, src))
        w[np.arange(size), i0] += 1 - (pos - i0)
        w[np.arange(size), np.minimum(i0 + 1, src - 1)] += pos - i0
        return w
    rows = np.tensordot(weights(image.shape[0]), image.astype(np.float64), axes=(1, 0))  # [size, w, C]
    return np.einsum("xj,yjc->yxc", weights(image.shape[1]), rows)


@pytest.mark.parametrize("src,size", [(187, 224), (264, 224), (50, 32), (17, 40), (32, 32)])
def test_resize_bilinear(src, size):
    import jax
    rng = np.random.default_rng(src)
    image = rng.normal(size=(src, src, 3)).astype(np.float32)
    out = resize.resize_bilinear(image, size)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, _bilinear_reference(image, size), atol=2e-6)
    np.testing.assert_allclose(out, jax.image.resize(image, (size, size, 3), "bilinear", antialias=False), atol=1e-3)
    # Strided (flipped) uint16 input converts inside the resize.
    raw = rng.integers(0, 10000, (src, src, 2), dtype=np.uint16)
    np.testing.assert_allclose(resize.resize_bilinear(raw[::-1], size), _bilinear_reference(raw[::-1], size),
                               rtol=1e-6, atol=1e-3)


def test_crop_resize_normalise_matches_resize_then_normalise():
    rng = np.random.default_rng(0)
    tile = augment.apply_dihedral(rng.integers(0, 10000, (3, 64, 64, 13), dtype=np.uint16), 1, True)
    offsets, sizes = np.array([[0, 0], [10, 3], [20, 30]]), np.array([64, 40, 32])
    out = augment.crop_resize_normalise(tile, offsets, sizes, 32, sensors.S2_L1C)
    for s, ((y, x), side) in enumerate(zip(offsets, sizes)):
        want = sensors.S2_L1C.normalise(resize.resize_bilinear(tile[s, y:y + side, x:x + side], 32))
        np.testing.assert_allclose(out[s], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[2], sensors.S2_L1C.normalise(crops.crop_windows(tile, offsets, 32)[2]))


def test_center_and_crop_windows():
    values = np.arange(2 * 6 * 6 * 1).reshape(2, 6, 6, 1)
    offsets = np.array([[0, 0], [2, 1]])
    out = crops.crop_windows(values, offsets, 3)
    np.testing.assert_array_equal(out[1], values[1, 2:5, 1:4])
    np.testing.assert_array_equal(crops.center_offsets(48, 32, 3), [[8, 8]] * 3)
    np.testing.assert_array_equal(crops.pairwise_overlaps(np.array([[0, 0], [16, 0]]), 32), [[1, 0.5], [0.5, 1]])
