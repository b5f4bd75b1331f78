"""The synthetic S1/S2 generator: determinism, record contract, physical sanity, label design."""

import numpy as np
import pytest

from data_pipelines.synthetic_seasons import layouts, spectra
from data_pipelines.synthetic_seasons.generator import NUM_SEASONS, SCENE_CLASSES, generate_tile
from seamo_jax.sensors import S1_GRD, S2_L1C, validate_array

TILE = 48
B2, B8, B8A, B9, B10 = (S2_L1C.band_index(b) for b in ("B2", "B8", "B8A", "B9", "B10"))


@pytest.fixture(scope="module")
def tiles():
    return [generate_tile(7, "train", index, TILE, with_debug=True) for index in range(160)]


def _clear_pixels(tile, season):
    """bool [T, T]: no cloud, cloud shadow margin or snow in this scene."""
    debug = tile["debug"]
    return (debug["cloud_opacity"].max(axis=0) == 0) & (debug["snow_alpha"][season] == 0)


def test_same_arguments_give_identical_tiles():
    first, second = generate_tile(3, "train", 5, TILE), generate_tile(3, "train", 5, TILE)
    for key in ("s2", "s1", "timestamps", "latlon"):
        np.testing.assert_array_equal(first[key], second[key])
    assert (first["label"], first["location_id"]) == (second["label"], second["location_id"])


@pytest.mark.parametrize("other", [(3, "train", 6), (3, "test", 5), (4, "train", 5)])
def test_other_index_split_or_seed_gives_other_tile(other):
    reference = generate_tile(3, "train", 5, TILE)
    changed = generate_tile(*other, TILE)
    assert not np.array_equal(reference["s2"], changed["s2"])
    assert not np.array_equal(reference["s1"], changed["s1"])
    assert changed["location_id"] != reference["location_id"]


def test_record_matches_sensor_specs():
    tile = generate_tile(0, "train", 1, TILE)
    validate_array(tile["s2"], S2_L1C, record_id="t", field="s2", num_seasons=4, spatial_shape=(TILE, TILE))
    validate_array(tile["s1"], S1_GRD, record_id="t", field="s1", num_seasons=4, spatial_shape=(TILE, TILE))
    assert tile["s2"].shape == (NUM_SEASONS, TILE, TILE, 13) and tile["s2"].dtype == np.uint16
    assert tile["s1"].shape == (NUM_SEASONS, TILE, TILE, 2) and tile["s1"].dtype == np.float32
    assert tile["timestamps"].dtype == np.int64 and tile["timestamps"].shape == (4,)
    assert tile["latlon"].dtype == np.float32 and tile["latlon"].shape == (2,)
    assert isinstance(tile["location_id"], str) and 0 <= tile["label"] < len(SCENE_CLASSES)


def test_timestamps_one_per_season_of_one_year(tiles):
    for tile in tiles[:20]:
        days = np.diff(tile["timestamps"]) / 86400
        assert np.all((days > 45) & (days < 140)), days
        years = tile["timestamps"].astype("datetime64[s]").astype("datetime64[Y]")
        assert years[0] == years[-1] and 2017 <= years[0].astype(int) + 1970 <= 2023
        assert -90 <= tile["latlon"][0] <= 90 and -180 <= tile["latlon"][1] <= 180


def test_labels_cover_every_class(tiles):
    counts = np.bincount([tile["label"] for tile in tiles], minlength=len(SCENE_CLASSES))
    assert counts.min() >= 8, counts


def _mean_over_cover(tiles, cover, values_fn, season_filter=lambda tile, season: True):
    """Mean of values_fn(tile, season) [T, T] over clear pixels of `cover`."""
    total, count = 0.0, 0
    for tile in tiles:
        for season in range(NUM_SEASONS):
            if not season_filter(tile, season):
                continue
            pixels = (tile["debug"]["land_cover"] == cover) & _clear_pixels(tile, season)
            total += values_fn(tile, season)[pixels].sum()
            count += pixels.sum()
    assert count > 200, f"too few clear pixels of {spectra.LAND_COVERS[cover]}"
    return total / count


def test_water_is_dark_in_nir_and_forest_bright(tiles):
    nir = lambda tile, season: tile["s2"][season, ..., B8].astype(np.float64)
    water, forest = _mean_over_cover(tiles, spectra.WATER, nir), _mean_over_cover(tiles, spectra.FOREST, nir)
    assert water < 600 and forest > 1800 and forest > 3 * water


def test_cropland_nir_peaks_in_summer_and_is_bare_in_winter(tiles):
    nir = lambda tile, season: tile["s2"][season, ..., B8].astype(np.float64)
    in_local = lambda local: (lambda tile, season: tile["debug"]["local_seasons"][season] == local)
    summer = _mean_over_cover(tiles, spectra.CROPLAND, nir, in_local(2))
    winter = _mean_over_cover(tiles, spectra.CROPLAND, nir, in_local(0))
    assert summer > winter + 1000, (summer, winter)


def test_sar_water_darker_than_urban(tiles):
    vv = lambda tile, season: tile["s1"][season, ..., 0].astype(np.float64)
    vh = lambda tile, season: tile["s1"][season, ..., 1].astype(np.float64)
    water_vv, urban_vv = _mean_over_cover(tiles, spectra.WATER, vv), _mean_over_cover(tiles, spectra.URBAN, vv)
    assert water_vv < -17 and urban_vv > -8 and water_vv < urban_vv - 10
    assert _mean_over_cover(tiles, spectra.FOREST, vh) < _mean_over_cover(tiles, spectra.FOREST, vv)


def test_speckle_is_multiplicative_gamma(tiles):
    # Over a homogeneous area the dB values of gamma(L=4.4) speckle spread by ~2.2 dB.
    spreads = []
    for tile in tiles[:40]:
        cover_map = tile["debug"]["land_cover"]
        for cover in np.unique(cover_map):
            spreads.append(tile["s1"][0, ..., 0][cover_map == cover].std())
    assert 1.8 < np.median(spreads) < 3.2, np.median(spreads)


def test_atmosphere_bands_and_clouds(tiles):
    clear_b10, cloud_b2, clear_b2 = [], [], []
    for tile in tiles:
        opacity = tile["debug"]["cloud_opacity"]
        for season in range(NUM_SEASONS):
            clear = _clear_pixels(tile, season)
            clear_b10.append(tile["s2"][season, ..., B10][clear])
            cloudy = opacity[season] > 0.8
            cloud_b2.append(tile["s2"][season, ..., B2][cloudy])
            clear_b2.append(tile["s2"][season, ..., B2][clear & (tile["debug"]["land_cover"] != spectra.SNOW_ICE)])
            assert np.all(tile["s2"][season, ..., B9] <= tile["s2"][season, ..., B8A] * 0.5 + 30)
    assert np.concatenate(clear_b10).mean() < 30
    assert np.concatenate(cloud_b2).mean() > 4000 > 2 * np.concatenate(clear_b2).mean()
    cloudy_scenes = np.mean([(tile["debug"]["cloud_opacity"][s] > 0).any() for tile in tiles for s in range(4)])
    assert 0.1 < cloudy_scenes < 0.5, cloudy_scenes


def test_land_cover_is_spatially_coherent(tiles):
    same_as_right = np.mean([(t["debug"]["land_cover"][:, 1:] == t["debug"]["land_cover"][:, :-1]).mean()
                             for t in tiles])
    assert same_as_right > 0.8, same_as_right
    correlations = []
    for tile in tiles[:60]:
        season = int(np.argmin(tile["debug"]["cloud_opacity"].sum(axis=(1, 2))))
        nir = tile["s2"][season, ..., B8].astype(np.float64)
        correlations.append(np.corrcoef(nir[:, 1:].ravel(), nir[:, :-1].ravel())[0, 1])
    assert np.median(correlations) > 0.8, np.median(correlations)


def test_cover_proportions_do_not_depend_on_the_label(tiles):
    # Two covers per tile; the foreground share is drawn from [0.4, 0.6] for every class.
    minority = {label: [] for label in range(len(SCENE_CLASSES))}
    for tile in tiles:
        counts = np.bincount(tile["debug"]["land_cover"].ravel(), minlength=len(spectra.LAND_COVERS))
        assert (counts > 0).sum() == 2
        minority[tile["label"]].append(counts[counts > 0].min() / counts.sum())
    for label, shares in minority.items():
        assert 0.39 <= min(shares) and max(shares) <= 0.5, (SCENE_CLASSES[label], min(shares), max(shares))


@pytest.mark.parametrize("label", range(len(SCENE_CLASSES)))
def test_layout_visible_in_every_32px_crop(label):
    rng = np.random.default_rng(label)
    minority_shares = []
    for _ in range(40):
        mask = layouts.draw_layout(rng, label, TILE, rng.uniform(0.4, 0.6))
        for row in (0, 8, 16):  # corners and centre: the boundary always crosses the crop
            for col in (0, 8, 16):
                share = mask[row:row + 32, col:col + 32].mean()
                assert 0.01 < share < 0.99, (SCENE_CLASSES[label], row, col, share)
                minority_shares.append(min(share, 1 - share))
    # ... and nearly always with a good share of both roles.
    assert np.mean(np.array(minority_shares) < 0.05) < 0.02, SCENE_CLASSES[label]


def test_foreground_mask_has_exact_fraction():
    field = layouts.smooth_field(np.random.default_rng(0), 48, 3.0)
    assert layouts.foreground_mask(field, 0.4).sum() == round(0.4 * 48 * 48)
    assert layouts.foreground_mask(field, 1.0).all() and not layouts.foreground_mask(field, 0.0).any()
