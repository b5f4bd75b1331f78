"""config.data.views = "device": the jitted step makes the same views the host pipeline does."""
import jax
import numpy as np
import pytest

from seamo_jax import sensors
from seamo_jax.data import augment, band_groups, device_views, pipeline, testing
from seamo_jax.experiments.demo_cpu import get_config

CROP = 32


def _view_spec(modalities=("s2",)):
    return device_views.ViewSpec(modalities=modalities, specs={"s2": sensors.S2_L1C, "s1": sensors.S1_GRD},
                                 crop_size=CROP)


@pytest.mark.parametrize("reading", ["overlap", "crop_area"])
def test_every_flip_and_rotation_matches_host_views(reading):
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 12000, size=(2, 48, 48, 13)).astype(np.uint16)
    boxes = np.asarray([[3, 7, 40], [14, 0, 21]] if reading == "crop_area" else [[3, 11, CROP], [16, 0, CROP]],
                       np.float32)
    for k in range(4):
        for flip in (False, True):
            flipped = augment.apply_dihedral(tile, k, flip)
            offsets, sizes = boxes[:, :2].astype(np.int32), boxes[:, 2].astype(np.int32)
            if reading == "crop_area":
                host = augment.crop_resize_normalise(flipped, offsets, sizes, CROP, sensors.S2_L1C, native=False)
            else:
                host = augment.crop_normalise(flipped, offsets, CROP, sensors.S2_L1C)
            device = device_views.views_from_tiles({"s2": tile[None]}, boxes[None],
                                                   np.asarray([[k, flip]], np.int32), _view_spec())["s2"][0]
            np.testing.assert_allclose(np.asarray(device), host, rtol=1e-6, atol=2e-5, err_msg=f"k={k} flip={flip}")


def test_native_groups_are_sampled_at_their_own_resolution():
    """Bilinear sampling reproduces a linear field exactly: a native record whose 20 m / 60 m
    pixels hold the field at their centres gives the views of a grid record holding it at
    every 10 m pixel (windows away from the tile border, where clamping differs)."""
    spec = sensors.S2_L1C
    size, seasons = 48, 2
    gy, gx = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    slopes = 3.0 + np.arange(spec.num_bands)

    def field(y, x, band):  # integer-valued on the 10 m lattice, linear everywhere
        return 2000.0 + slopes[band] * (6.0 * y + 12.0 * x)

    grid = np.stack([field(gy, gx, b) for b in range(spec.num_bands)], -1)
    grid = np.broadcast_to(grid, (seasons,) + grid.shape).astype(np.float32)
    native = {}
    for group in band_groups.native_groups(spec, "s2"):
        f, n = group.factor, size // group.factor
        cy, cx = np.meshgrid((np.arange(n) + 0.5) * f - 0.5, (np.arange(n) + 0.5) * f - 0.5, indexing="ij")
        values = np.stack([field(cy, cx, b) for b in group.band_indices], -1)
        native[group.key] = np.broadcast_to(values, (seasons,) + values.shape).astype(np.float32)[None]
    boxes = np.asarray([[[8, 9, 30], [10, 6, 24]]], np.float32)
    for k, flip in [(0, False), (1, True), (2, False), (3, True)]:
        dihedral = np.asarray([[k, flip]], np.int32)
        want = device_views.views_from_tiles({"s2": grid[None]}, boxes, dihedral, _view_spec())["s2"]
        got = device_views.views_from_tiles(native, boxes, dihedral, _view_spec())["s2"]
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-3, err_msg=f"k={k}")


def _pipeline_config(views, reading):
    config = get_config("fast")
    config.data.views = views
    config.data.region_reading = reading
    config.data.overlap_range = (0.6, 1.0)
    config.data.modality_dropout = 0.5
    config.data.batch_size = 8
    return config


@pytest.mark.parametrize("reading", ["overlap", "crop_area"])
def test_pipeline_tiles_become_the_host_pipelines_batch(reading):
    records = testing.make_records(16, seed=3, tile_size=40)
    host_it = pipeline.make_train_iterator(_pipeline_config("host", reading), records, seed=1)
    device_config = _pipeline_config("device", reading)
    device_it = pipeline.make_train_iterator(device_config, records, seed=1)
    view_spec = device_views.view_spec_from_config(device_config)
    materialise = jax.jit(lambda b: device_views.materialise(b, view_spec))
    for _ in range(3):
        host, device = next(host_it), next(device_it)
        assert {"tiles", "boxes", "dihedral"} <= set(device) and "views" not in device
        assert device["tiles"]["s2"].dtype == np.uint16 and device["tiles"]["s2"].shape == (8, 4, 40, 40, 13)
        made = materialise(device)
        assert set(made) == set(host)
        for key in host:
            if key != "views":  # windows, masks, seasons, dropout flags: the same draws
                np.testing.assert_array_equal(np.asarray(made[key]), host[key], err_msg=key)
        for m in ("s2", "s1"):
            np.testing.assert_allclose(np.asarray(made["views"][m]), host["views"][m], rtol=0, atol=5e-5)
        assert host["modality_dropped"].any()


@pytest.mark.slow  # two train-setup compiles (~100 s on 2 cores); the views themselves are compared above
def test_pretraining_step_loss_matches_host_views():
    from seamo_jax.data.global_batch import to_global_batch
    from seamo_jax.train.setup import build_train_setup

    records = testing.make_records(16, seed=0)
    losses = {}
    for views in ("host", "device"):
        config = get_config("fast")
        config.data.views = views
        setup = build_train_setup(config, None, records)
        batch = to_global_batch(next(setup.iterator), setup.batch_sharding)
        if views == "device":
            assert batch["tiles"]["s2"].sharding.spec == setup.batch_sharding.spec  # split over the batch axes
        _, metrics = setup.train_step(setup.state, batch)
        losses[views] = float(metrics["loss"])
    assert np.isfinite(losses["host"])
    np.testing.assert_allclose(losses["device"], losses["host"], rtol=1e-5)


def test_lazy_blosc2_frames_decode_into_the_batch(tmp_path):
    """A native + blosc2 build read with lazy_decode: S2 frames reach the batch undecoded and are decoded
    into their rows; the batches equal those of the eagerly decoded source, bitwise."""
    from data_pipelines import registry
    from seamo_jax.data import encoded

    build = dict(tile_size=48, num_train=8, num_test=1, seed=0, s2_layout="native", codec="blosc2")
    registry.prepare("synthetic_seasons", str(tmp_path), **build)
    lazy = registry.load_source("synthetic_seasons", "train", str(tmp_path), lazy_decode=True, **build)
    eager = registry.load_source("synthetic_seasons", "train", str(tmp_path), **build)
    record = lazy[0]
    assert isinstance(record["s2_20m"], encoded.EncodedArray) and record["s2_20m"].shape == (4, 24, 24, 6)
    np.testing.assert_array_equal(np.asarray(record["s2_20m"]), eager[0]["s2_20m"])
    config = get_config("fast")
    config.data.batch_size = 4
    config.data.overlap_range = (0.6, 1.0)
    a = next(pipeline.make_train_iterator(config, lazy, seed=2))
    b = next(pipeline.make_train_iterator(config, eager, seed=2))
    assert a["tiles"]["s2_60m"].shape == (4, 4, 8, 8, 3) and a["tiles"]["s2_10m"].dtype == np.uint16
    jax.tree.map(np.testing.assert_array_equal, a, b)
    views = device_views.materialise(a, device_views.view_spec_from_config(config))["views"]
    assert views["s2"].shape == (4, 4, 32, 32, 13) and np.isfinite(np.asarray(views["s2"])).all()
