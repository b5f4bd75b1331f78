"""Non-aligned crop windows: inside the tile, overlap with the anchor in range."""
import numpy as np
import pytest

from seamo_jax.data import crops


@pytest.mark.parametrize("tile,crop,overlap", [
    (48, 32, (0.5, 1.0)),
    (64, 32, (0.5, 0.7)),
    ((40, 56), 32, (0.6, 0.9)),
    (264, 224, (0.5, 1.0)),   # lower bound raised to what the tile allows (>= 0.675)
])
def test_windows_inside_tile_and_overlap_in_range(tile, crop, overlap):
    rng = np.random.default_rng(0)
    height, width = (tile, tile) if isinstance(tile, int) else tile
    for _ in range(300):
        anchor, offsets = crops.sample_crop_windows(rng, tile, crop, 4, overlap)
        assert offsets.shape == (4, 2) and offsets.dtype == np.int32
        assert (offsets >= 0).all()
        assert (offsets[:, 0] + crop <= height).all() and (offsets[:, 1] + crop <= width).all()
        assert 0 <= anchor[0] <= height - crop and 0 <= anchor[1] <= width - crop
        for season_offset in offsets:
            ratio = crops.overlap_ratio(season_offset, anchor, crop)
            assert overlap[0] - 1e-9 <= ratio <= overlap[1] + 1e-9, (ratio, anchor, season_offset)


def test_overlap_ratios_spread_over_the_range():
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(400):
        anchor, offsets = crops.sample_crop_windows(rng, 64, 32, 4, (0.5, 1.0))
        ratios += [crops.overlap_ratio(o, anchor, 32) for o in offsets]
    ratios = np.asarray(ratios)
    # Uniform on [0.5, 1]: mean 0.75, a quarter of the mass in each quarter of the range.
    assert abs(ratios.mean() - 0.75) < 0.02
    counts = np.histogram(ratios, bins=4, range=(0.5, 1.0))[0] / len(ratios)
    assert (np.abs(counts - 0.25) < 0.06).all(), counts
    # Views of different seasons really differ (non-aligned), not one shared window.
    assert (np.ptp(offsets, axis=0) > 0).any()


def test_full_overlap_gives_identical_windows_and_seed_determinism():
    anchor, offsets = crops.sample_crop_windows(np.random.default_rng(3), 48, 32, 4, (1.0, 1.0))
    assert (offsets == anchor).all()
    a = crops.sample_crop_offsets(np.random.default_rng(7), 48, 32, 4)
    b = crops.sample_crop_offsets(np.random.default_rng(7), 48, 32, 4)
    np.testing.assert_array_equal(a, b)


def test_infeasible_range_is_an_error():
    with pytest.raises(ValueError, match="cannot be realised"):
        crops.sample_crop_offsets(np.random.default_rng(0), 264, 224, 4, (0.3, 0.6))
    with pytest.raises(ValueError, match="larger than tile"):
        crops.sample_crop_offsets(np.random.default_rng(0), 16, 32, 4)


def test_center_and_crop_windows():
    values = np.arange(2 * 6 * 6 * 1).reshape(2, 6, 6, 1)
    offsets = np.array([[0, 0], [2, 1]])
    out = crops.crop_windows(values, offsets, 3)
    np.testing.assert_array_equal(out[1], values[1, 2:5, 1:4])
    np.testing.assert_array_equal(crops.center_offsets(48, 32, 3), [[8, 8]] * 3)
