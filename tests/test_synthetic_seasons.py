"""The synthetic S1/S2 generator: determinism, record contract, physical sanity, label design.

Both label sets: "scene" (generator.py, layouts.py) and "land_cover" (land_cover.py, land_cover_spectra.py).
"""

import hashlib

import numpy as np
import pytest

from data_pipelines import registry
from data_pipelines.synthetic_seasons import builder as builder_lib, check_labels, layouts, spectra
from data_pipelines.synthetic_seasons import land_cover_spectra as lcs
from data_pipelines.synthetic_seasons.generator import NUM_SEASONS, SCENE_CLASSES, generate_tile
from data_pipelines.synthetic_seasons.land_cover import LAND_COVER_CLASSES, generate_land_cover_tile
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


# ---- the labels="land_cover" set (land_cover.py, land_cover_spectra.py, builder `labels=`) ----

B3, B4, B11 = (S2_L1C.band_index(b) for b in ("B3", "B4", "B11"))
# Scene tiles generate_tile(0, "train", i, 48), i < 3, as they were before the land_cover set existed.
# S2 (uint16), timestamps, latlon, label and location id: sha256 of their bytes. S1 is float32 dB from
# np.log10, whose last bit depends on the host's SIMD path (AVX-512 and AVX2 differ by <= 4e-6 dB on
# 45% of values), so it is pinned by per-tile sums and sampled values instead. A numpy release that
# changes Generator streams would change all of these (then re-derive them from the previous commit).
SCENE_GOLDEN = "4bafe7a93b602ffa0f59776921522f002c01d60c8dc1091eab74f2c16790129e"
SCENE_S1_SUMS = (-234665.6863, -174812.5703, -234921.6091)  # float64 sum of each tile's s1 [4, 48, 48, 2]
SCENE_S1_SAMPLES = (  # s1 of the 3 tiles, flattened, at np.linspace(0, 55295, 12).astype(int)
    -9.21824, -9.30711, -19.19774, -8.65881, -16.07049, -6.66633,
    -9.436, -15.21502, -8.93425, -14.25498, -10.36515, -19.5017,
)


@pytest.fixture(scope="module")
def lc_tiles():
    return [generate_land_cover_tile(11, "train", index, TILE, with_debug=True) for index in range(270)]


def _per_season_mean(tiles, cls, values_fn, clear_only=True):
    """float [4]: mean of values_fn(tile, season) [T, T] over pixels of class `cls` (cloud-free ones)."""
    means = []
    for season in range(NUM_SEASONS):
        total, count = 0.0, 0
        for tile in tiles:
            pixels = tile["debug"]["land_cover"] == cls
            if clear_only:
                pixels = pixels & tile["debug"]["clear"][season]
            total += values_fn(tile, season)[pixels].astype(np.float64).sum()
            count += pixels.sum()
        assert count > 300, (LAND_COVER_CLASSES[cls], season, count)
        means.append(total / count)
    return np.array(means)


def _band(band):
    return lambda tile, season: tile["s2"][season, ..., band]


def test_scene_tiles_are_as_before_land_cover_existed():
    digest = hashlib.sha256()
    s1 = []
    for index in range(3):
        tile = builder_lib._example(0, "train", TILE, "scene", index)
        for key in ("s2", "timestamps", "latlon"):
            digest.update(np.ascontiguousarray(tile[key]).tobytes())
        digest.update(f"{tile['label']} {tile['location_id']}".encode())
        assert tile["s1"].dtype == np.float32 and tile["s1"].shape == (NUM_SEASONS, TILE, TILE, 2)
        s1.append(tile["s1"].astype(np.float64))
    assert digest.hexdigest() == SCENE_GOLDEN
    s1 = np.stack(s1)
    # Host SIMD differences move each sum by ~0.01 dB; a changed stream moves it by thousands.
    np.testing.assert_allclose(s1.reshape(3, -1).sum(axis=1), SCENE_S1_SUMS, rtol=0, atol=0.1)
    flat = s1.reshape(-1)
    np.testing.assert_allclose(flat[np.linspace(0, flat.size - 1, 12).astype(int)], SCENE_S1_SAMPLES, rtol=0, atol=1e-4)


def test_builder_labels_kwarg_names_config_and_classes(tmp_path):
    kwargs = dict(tile_size=32, num_train=3, num_test=2, seed=1)
    scene = builder_lib.SyntheticSeasons(data_dir=str(tmp_path), **kwargs)
    land = builder_lib.SyntheticSeasons(data_dir=str(tmp_path), labels="land_cover", **kwargs)
    assert scene.builder_config.name == "tile32_train3_test2_seed1"  # unchanged: existing datasets stay valid
    assert land.builder_config.name == "tile32_train3_test2_seed1_land_cover"
    assert scene.data_path != land.data_path
    assert land.info.features["label"].names == list(LAND_COVER_CLASSES)
    assert builder_lib.SyntheticSeasonsConfig.from_name(land.builder_config.name).labels == "land_cover"
    with pytest.raises(ValueError, match="labels"):
        builder_lib.SyntheticSeasons(data_dir=str(tmp_path), labels="crops", **kwargs)
    registry.prepare("synthetic_seasons", str(tmp_path), num_workers=1, labels="land_cover", **kwargs)
    record = registry.load_source("synthetic_seasons", "test", str(tmp_path), labels="land_cover", **kwargs)[1]
    tile = generate_land_cover_tile(1, "test", 1, 32)
    tile["s1"] = S1_GRD.quantise(tile["s1"], record["s1"].dtype)  # dB stored as codes (S1_GRD.storage)
    for key in ("s2", "s1", "timestamps", "latlon"):
        np.testing.assert_array_equal(record[key], tile[key], err_msg=key)
    assert int(record["label"]) == tile["label"]
    info = registry.builder_info("synthetic_seasons", str(tmp_path), labels="land_cover", **kwargs)
    assert info["num_classes"] == len(LAND_COVER_CLASSES) and info["class_names"] == list(LAND_COVER_CLASSES)


def test_land_cover_record_contract_and_determinism():
    tile, again = generate_land_cover_tile(2, "train", 4, TILE), generate_land_cover_tile(2, "train", 4, TILE)
    validate_array(tile["s2"], S2_L1C, record_id="t", field="s2", num_seasons=4, spatial_shape=(TILE, TILE))
    validate_array(tile["s1"], S1_GRD, record_id="t", field="s1", num_seasons=4, spatial_shape=(TILE, TILE))
    assert tile["timestamps"].dtype == np.int64 and tile["latlon"].dtype == np.float32
    for key in ("s2", "s1", "timestamps", "latlon"):
        np.testing.assert_array_equal(tile[key], again[key])
    assert not np.array_equal(tile["s2"], generate_land_cover_tile(2, "train", 5, TILE)["s2"])
    assert not np.array_equal(tile["s1"], generate_land_cover_tile(2, "test", 4, TILE)["s1"])
    assert 0 <= tile["label"] < len(LAND_COVER_CLASSES) and "land_cover" in tile["location_id"]


def test_label_is_the_dominant_cover_of_tile_and_centre_crop(lc_tiles):
    counts = np.bincount([tile["label"] for tile in lc_tiles], minlength=len(LAND_COVER_CLASSES))
    assert counts.min() >= 15, counts
    centre_ok = []
    for tile in lc_tiles:
        cover = tile["debug"]["land_cover"]
        assert (cover == tile["label"]).mean() >= 0.645
        centre = cover[8:40, 8:40]
        centre_ok.append((centre == tile["label"]).mean() > 0.5)
    assert np.mean(centre_ok) >= 0.98


def test_crop_types_differ_in_their_calendar_not_in_every_single_date(lc_tiles):
    ndvi = lambda tile, season: lcs.ndvi(tile["s2"][season])
    def lswi(tile, season):  # land surface water index (B8A - B11) / (B8A + B11): high over water and wet soil
        nir, swir = (tile["s2"][season, ..., band].astype(np.float64) for band in (B8A, B11))
        return (nir - swir) / (nir + swir)

    cereal, maize, double, rice = (_per_season_mean(lc_tiles, k, ndvi) for k in lcs.CROPS)
    assert np.argmax(cereal) == 1 and np.argmax(maize) == 2 and np.argmax(rice) == 2, (cereal, maize, rice)
    assert double[3] > double[2] + 0.3 and double[3] > cereal[3] + 0.3, (double, cereal)  # second crop in autumn
    # Dates on which the pairs look alike ...
    assert abs(cereal[0] - double[0]) < 0.1 and abs(cereal[1] - double[1]) < 0.1, (cereal, double)
    assert abs(maize[0] - rice[0]) < 0.1 and abs(maize[2] - rice[2]) < 0.1, (maize, rice)
    # ... and the dates that tell them apart.
    assert np.abs(cereal - maize).max() > 0.3
    # Transplanting into flooded paddies: in spring NDVI is that of bare soil, but the water index reaches
    # NDVI (Xiao et al. 2005: LSWI + 0.05 >= NDVI flags flooding), which it does not for ploughed soil.
    rice_lswi, maize_lswi = (_per_season_mean(lc_tiles, k, lswi) for k in (lcs.PADDY_RICE, lcs.SUMMER_MAIZE))
    assert abs(rice[1] - maize[1]) < 0.1, (rice, maize)
    assert rice_lswi[1] + 0.05 >= rice[1] and maize_lswi[1] + 0.05 < maize[1], (rice_lswi, rice, maize_lswi, maize)
    assert rice_lswi[1] > maize_lswi[1] + 0.2


def _s2_relative_gap(tiles, a, b):
    """Largest relative difference of cloud-free season-averaged means over the surface bands."""
    gaps = []
    for band in (B2, B3, B4, B8, B8A, B11):
        mean_a, mean_b = _per_season_mean(tiles, a, _band(band)).mean(), _per_season_mean(tiles, b, _band(band)).mean()
        gaps.append(abs(mean_a - mean_b) / mean_b)
    return max(gaps)


def test_flooded_and_dry_vegetation_differ_in_sar_not_in_s2(lc_tiles):
    vv = lambda tile, season: tile["s1"][season, ..., 0]
    vh = lambda tile, season: tile["s1"][season, ..., 1]
    wet, dry = lcs.FLOODED_VEGETATION, lcs.DRY_VEGETATION
    wet_vv, dry_vv = (_per_season_mean(lc_tiles, k, vv, clear_only=False) for k in (wet, dry))
    wet_vh, dry_vh = (_per_season_mean(lc_tiles, k, vh, clear_only=False) for k in (wet, dry))
    # Spring: always flooded (snowmelt, wet season); other seasons only sometimes.
    assert wet_vv[1] > dry_vv[1] + 3.0 and wet_vh[1] < dry_vh[1] - 1.0, (wet_vv, dry_vv, wet_vh, dry_vh)
    assert wet_vv.mean() > dry_vv.mean() + 1.5
    assert _s2_relative_gap(lc_tiles, wet, dry) < 0.1


def test_urban_and_bare_soil_differ_in_sar_not_in_s2(lc_tiles):
    vv = lambda tile, season: tile["s1"][season, ..., 0]
    ratio = lambda tile, season: tile["s1"][season, ..., 0] - tile["s1"][season, ..., 1]
    urban_vv, bare_vv = (_per_season_mean(lc_tiles, k, vv, clear_only=False).mean() for k in (lcs.URBAN, lcs.BARE_SOIL))
    assert urban_vv > bare_vv + 8.0, (urban_vv, bare_vv)
    assert _per_season_mean(lc_tiles, lcs.URBAN, ratio, clear_only=False).mean() > 6.0
    assert _s2_relative_gap(lc_tiles, lcs.URBAN, lcs.BARE_SOIL) < 0.1


def test_clouds_hide_s2_and_leave_s1_unchanged(lc_tiles):
    cloudy_scenes, thick_gain, b10_clear = [], [], []
    for index, tile in enumerate(lc_tiles[:80]):
        no_cloud = generate_land_cover_tile(11, "train", index, TILE, clouds=False)
        np.testing.assert_array_equal(tile["s1"], no_cloud["s1"])        # C-band passes through clouds
        clear = tile["debug"]["clear"]
        np.testing.assert_array_equal(tile["s2"][clear], no_cloud["s2"][clear])
        thick = tile["debug"]["cloud_opacity"] > 0.5
        if thick.any():
            visible = (B2, B3, B4)
            thick_gain.append((tile["s2"][..., visible][thick].astype(np.float64)
                               - no_cloud["s2"][..., visible][thick]).mean())
        b10_clear.append(tile["s2"][..., B10][clear])
        cloudy_scenes += [bool((~clear[season]).any()) for season in range(NUM_SEASONS)]
    assert np.mean(thick_gain) > 2000 and min(thick_gain) > 0
    assert np.concatenate(b10_clear).mean() < 30
    assert 0.3 < np.mean(cloudy_scenes) < 0.65, np.mean(cloudy_scenes)


def test_per_acquisition_noise(lc_tiles):
    spreads, correlations, date_ratios = [], [], []
    for tile in lc_tiles[:120]:
        cover = tile["debug"]["land_cover"]
        pure = (cover == tile["label"]) & (tile["label"] != lcs.URBAN)  # urban adds bright-scatterer texture
        if tile["label"] != lcs.URBAN:
            vv = tile["s1"][..., 0][:, pure]                              # [4, P]
            spreads.append(np.median(vv.std(axis=1)))
            residual = vv - vv.mean(axis=1, keepdims=True)
            correlations.append(np.corrcoef(residual[0], residual[1])[0, 1])
        if tile["label"] == lcs.BARE_SOIL:                                # no phenology: dates differ by noise only
            both = (cover == lcs.BARE_SOIL) & tile["debug"]["clear"][0] & tile["debug"]["clear"][1]
            if both.sum() > 100:
                date_ratios.append(tile["s2"][1, ..., B4][both].mean() / tile["s2"][0, ..., B4][both].mean())
    assert 1.8 < np.median(spreads) < 3.2, np.median(spreads)          # gamma speckle, 4.4 looks
    assert np.median(correlations) < 0.3                                # drawn anew for each acquisition
    assert len(date_ratios) >= 5 and np.std(date_ratios) > 0.02        # illumination / haze per S2 date


def test_land_cover_check_orders_the_inputs():
    results = check_labels.run_land_cover(num_tiles=540, tile_size=TILE, seed=0)
    crops, wet_dry, urban_bare, every = (results[g] for g in ("crops", "flooded_vs_dry", "urban_vs_bare", "all"))
    single_dates = [crops[f"S2 means, season {season}"] for season in range(NUM_SEASONS)]
    assert crops["S2 means, 4 seasons"] > max(single_dates) + 0.1, crops
    assert wet_dry["S1 means, 4 seasons"] > wet_dry["S2 means, 4 seasons"] + 0.15, wet_dry
    assert urban_bare["S1 means, 4 seasons"] > urban_bare["S2 means, 4 seasons"] + 0.15, urban_bare
    assert every["S2+S1 means, 4 seasons"] > max(every["S2 means, 4 seasons"], every["S1 means, 4 seasons"]), every
