"""Flips/rot90 shared by all views, normalisation, season subsampling, modality dropout."""
import numpy as np
import pytest

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax import sensors
from seamo_jax.data import augment, crops, sample, testing


def test_dihedral_group_and_non_square_tiles():
    tile = np.arange(1 * 4 * 4 * 1).reshape(1, 4, 4, 1)
    images = {augment.apply_dihedral(tile, k, f).tobytes() for k in range(4) for f in (False, True)}
    assert len(images) == 8
    rng = np.random.default_rng(0)
    rect = np.zeros((2, 4, 6, 3))
    for _ in range(20):
        k, flip = augment.sample_dihedral(rng, square=False)
        assert k in (0, 2)
        assert augment.apply_dihedral(rect, k, flip).shape == rect.shape


def test_normalise_matches_sensor_spec_bitwise():
    values = np.random.default_rng(0).integers(0, 10000, (2, 5, 5, 13), dtype=np.uint16)
    np.testing.assert_array_equal(augment.normalise(values, sensors.S2_L1C), sensors.S2_L1C.normalise(values))
    in_place = values.astype(np.float32)
    out = augment.normalise(in_place, sensors.S2_L1C, in_place=True)
    assert out is in_place
    np.testing.assert_array_equal(out, sensors.S2_L1C.normalise(values))


def test_select_seasons():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(augment.select_seasons(rng, 4, 2, subsample=False), [0, 1])
    seen = set()
    for _ in range(50):
        picked = augment.select_seasons(rng, 4, 2, subsample=True)
        assert len(picked) == 2 and picked[0] < picked[1] and picked.max() < 4
        seen.add(tuple(picked))
    assert len(seen) == 6  # all C(4, 2) pairs occur
    with pytest.raises(ValueError, match="seasons"):
        augment.select_seasons(rng, 1, 4, subsample=False)


def test_modality_dropout_semantics():
    rng = np.random.default_rng(0)
    always = np.stack([augment.sample_modality_dropout(rng, ("s2", "s1"), 1.0) for _ in range(100)])
    assert (always.sum(1) == 1).all() and always[:, 0].any() and always[:, 1].any()
    assert not augment.sample_modality_dropout(rng, ("s2", "s1"), 0.0).any()
    assert not augment.sample_modality_dropout(rng, ("s2",), 1.0).any()


def _coded_record(num_seasons=4, tile=48):
    """s2 band 0 = pixel code (season, row, col); s1 VV = the same code, so alignment is checkable."""
    season, row, col = np.meshgrid(np.arange(num_seasons), np.arange(tile), np.arange(tile), indexing="ij")
    code = (season * 4000 + row * 60 + col).astype(np.uint16)
    record = testing.make_record(np.random.default_rng(0), num_seasons=num_seasons, tile_size=tile)
    record["s2"][..., 0] = code
    record["s1"][..., 0] = code.astype(np.float32)
    return record, code


def test_one_geometric_transform_for_all_seasons_and_modalities_before_cropping():
    config = get_config("fast")
    config.data.views = "host"  # checks the views the input pipeline makes
    spec = sample.sample_spec_from_config(config)
    record, code = _coded_record()
    transform = sample.TrainSampleTransform(spec)
    kinds = set()
    for seed in range(24):
        out = transform.random_map(record, np.random.default_rng(seed))
        s2_code = np.rint(sensors.S2_L1C.denormalise(out["views"]["s2"])[..., 0]).astype(np.int64)
        s1_code = np.rint(sensors.S1_GRD.denormalise(out["views"]["s1"])[..., 0]).astype(np.int64)
        np.testing.assert_array_equal(s1_code, s2_code)  # S1 and S2 of a season pixel-aligned
        matches = []
        for k in range(4):
            for flip in (False, True):
                tile = augment.apply_dihedral(code[..., None], k, flip)[..., 0]
                if all(np.array_equal(tile[s, y:y + 32, x:x + 32], s2_code[s])
                       for s, (y, x) in enumerate(out["offsets"])):
                    matches.append((k, flip))
        assert matches, "views are not crops of one transformed tile at the reported offsets"
        kinds.add(matches[0])
    assert len(kinds) > 3  # flips/rotations actually vary across samples


@pytest.mark.parametrize("k,flip", [(0, False), (1, True), (2, False), (3, True)])
def test_crop_normalise_equals_crop_then_normalise_bitwise(k, flip):
    rng = np.random.default_rng(k)
    tiles = {"s2": (rng.integers(0, 10000, (3, 40, 40, 12), dtype=np.uint16), sensors.S2_L2A),
             "s1": (rng.normal(-12, 5, (3, 40, 40, 2)).astype(np.float32), sensors.S1_GRD)}
    offsets = np.array([[0, 0], [8, 3], [5, 8]])
    for values, spec in tiles.values():
        tile = augment.apply_dihedral(values, k, flip)
        expected = spec.normalise(crops.crop_windows(tile, offsets, 32, np.float32))
        np.testing.assert_array_equal(augment.crop_normalise(tile, offsets, 32, spec), expected)
        out = np.full((3, 32, 32, values.shape[-1]), np.nan, np.float32)
        assert augment.crop_normalise(tile, offsets, 32, spec, out=out) is out
        np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="out must be float32"):
        augment.crop_normalise(tiles["s1"][0], offsets, 32, sensors.S1_GRD, out=np.zeros((3, 32, 32, 2)))
