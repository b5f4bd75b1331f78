"""Tests of seamo_jax.models on CPU (8 fake devices), tiny configs.

One shared tiny SeaMo (S2 + S1, 2 seasons, TM fusion, 32-px views, patch 8)
is initialised once per module; most tests add at most one compilation (the
issue-15 tests of season encoding / position frame / season ids add a few).
"""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax import mask_count, sensors
from seamo_jax.configs import load_config_file
from seamo_jax.data import masking as data_masking
from seamo_jax.models import build_model, example_batch, num_masked, param_count, patchify, random_mask
from seamo_jax.models import losses as losses_lib
from seamo_jax.models import posembed
from seamo_jax.models.encoder import Encoder
from seamo_jax.models import layers
from seamo_jax.models.flops import forward_flops
from seamo_jax.models.fusion import TMFusion

IN_CHANS = {"s2": 13, "s1": 2}
IMAGE, PATCH, SEASONS, BATCH = 32, 8, 2, 4
TOKENS = (IMAGE // PATCH) ** 2


def _tiny_config(**overrides):
    config = get_config().model
    for key, value in overrides.items():
        config[key] = value
    return config


def _random_masks(rng, shape, num_masked):
    """numpy masks with exactly num_masked True per row (test data stays off the jax PRNG: compiles are slow here)."""
    ranks = np.argsort(np.argsort(rng.random(shape), axis=-1), axis=-1)
    return ranks < num_masked


def _random_batch(model, seed, batch_size=BATCH):
    rng = np.random.default_rng(seed)
    batch = example_batch(model, batch_size)
    batch["views"] = {m: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for m, v in batch["views"].items()}
    batch["offsets"] = jnp.asarray(rng.integers(0, 16, batch["offsets"].shape), jnp.int32)
    batch["mask"] = jnp.asarray(_random_masks(rng, batch["mask"].shape, 12))
    return batch


@pytest.fixture(scope="module")
def setup():
    # Scanned layers (the accelerator configs' layout; test_layer_layout.py checks unrolled computes the same).
    model = build_model(_tiny_config(scan_layers=True), modalities=("s2", "s1"), in_chans=IN_CHANS,
                        num_seasons=SEASONS, image_size=IMAGE, mask_ratio=0.75)
    batch = _random_batch(model, 1)
    variables = jax.jit(model.init)(jax.random.key(0), example_batch(model, BATCH))
    apply = jax.jit(model.apply)
    return model, variables, batch, apply


def test_output_and_loss_shapes(setup):
    model, variables, batch, apply = setup
    loss, aux = apply(variables, batch)
    assert loss.shape == () and np.isfinite(loss)
    for m, c in IN_CHANS.items():
        assert aux["pred"][m].shape == (BATCH, SEASONS, TOKENS, PATCH * PATCH * c)
    expected = {"total", "s2", "s1"} | {f"{m}/season_{s}" for m in IN_CHANS for s in range(SEASONS)}
    assert set(aux["losses"]) == expected
    np.testing.assert_allclose(loss, aux["losses"]["s2"] + aux["losses"]["s1"], rtol=1e-6)
    # Per-season losses average (equal masked counts per season) to the modality loss.
    np.testing.assert_allclose(np.mean([aux["losses"][f"s1/season_{s}"] for s in range(SEASONS)]),
                               aux["losses"]["s1"], rtol=1e-5)


def test_wrong_mask_count_gives_nan(setup):
    model, variables, batch, apply = setup
    bad = dict(batch, mask=batch["mask"].at[0, 0, 0].set(False))  # one view with 0 masked tokens
    loss, _ = apply(variables, bad)
    assert np.isnan(loss)


def test_loss_scores_only_masked_patches():
    rng = np.random.default_rng(0)
    pred = {"s2": rng.normal(size=(2, 2, TOKENS, 12)).astype(np.float32)}
    target = {"s2": rng.normal(size=(2, 2, TOKENS, 12)).astype(np.float32)}
    mask = {"s2": _random_masks(rng, (2, 2, TOKENS), 12)}
    loss_fn = jax.jit(lambda t: losses_lib.reconstruction_losses(pred, t, mask)[0])  # jit: eager CPU ops are slow
    loss = loss_fn(target)
    visible = ~mask["s2"][..., None]
    loss_visible = loss_fn({"s2": jnp.where(visible, target["s2"] + 100.0, target["s2"])})
    assert float(loss_visible) == float(loss)
    loss_masked = loss_fn({"s2": jnp.where(visible, target["s2"], target["s2"] + 1.0)})
    assert abs(float(loss_masked) - float(loss)) > 0.1


def test_masked_pixels_do_not_reach_the_model(setup):
    """Changing a masked patch's pixels leaves every prediction unchanged (no leak into the encoder)."""
    model, variables, batch, apply = setup
    _, aux = apply(variables, batch)
    masked_token = int(jnp.argmax(batch["mask"][0, 1, 0]))  # a masked s2 token of sample 0, season 1
    row, col = divmod(masked_token, IMAGE // PATCH)
    views = dict(batch["views"])
    views["s2"] = views["s2"].at[0, 1, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH].add(5.0)
    _, aux2 = apply(variables, dict(batch, views=views))
    for m in IN_CHANS:
        np.testing.assert_allclose(aux2["pred"][m], aux["pred"][m], atol=1e-6)
    # Sanity: a visible patch does change the predictions.
    visible_token = int(jnp.argmin(batch["mask"][0, 1, 0]))
    row, col = divmod(visible_token, IMAGE // PATCH)
    views["s2"] = batch["views"]["s2"].at[0, 1, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH].add(5.0)
    _, aux3 = apply(variables, dict(batch, views=views))
    assert not np.allclose(aux3["pred"]["s2"], aux["pred"]["s2"], atol=1e-4)


def test_tm_cascade_season_order():
    """Season s depends only on seasons <= s; the cascade is not permutation-equivariant."""
    fusion = TMFusion(("s2", "s1"), num_blocks=1, num_heads=2, mlp_dim=32)
    tokens = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 2, 5, 16)), jnp.float32)
    # Random params from numpy: a jitted init would compile the PRNG for every param (slow on this CPU).
    shapes = jax.eval_shape(fusion.init, jax.random.key(1), tokens)
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), jnp.float32), nn.meta.unbox(shapes))
    run = jax.jit(fusion.apply)
    fused = run(params, tokens)
    assert fused.shape == tokens.shape
    later_changed = run(params, tokens.at[:, 2].add(1.0))
    np.testing.assert_allclose(later_changed[:, :2], fused[:, :2], atol=1e-6)  # past unaffected by future
    assert not np.allclose(later_changed[:, 2], fused[:, 2], atol=1e-4)
    first_changed = run(params, tokens.at[:, 0].add(1.0))
    assert not np.allclose(first_changed[:, 1], fused[:, 1], atol=1e-4)  # carry reaches season 1
    assert not np.allclose(first_changed[:, 2], fused[:, 2], atol=1e-4)  # ... and season 2
    reversed_out = run(params, tokens[:, ::-1])
    assert not np.allclose(reversed_out[:, ::-1], fused, atol=1e-4)
    # Season 0 of the reversed run sees no carry: it equals fusing that season alone.
    alone = run(params, tokens[:, 2:3])
    np.testing.assert_allclose(reversed_out[:, :1], alone, atol=1e-5)


def test_tm_carry_modes_and_zero_init():
    """Fusion blocks start as the identity (zero output projections); aux_queries != mean_add once trained."""
    tokens = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 2, 5, 16)), jnp.float32)
    aux = TMFusion(("s2", "s1"), num_blocks=2, num_heads=2, mlp_dim=32)
    mean_add = TMFusion(("s2", "s1"), num_blocks=2, num_heads=2, mlp_dim=32, carry="mean_add")
    params = jax.jit(aux.init)(jax.random.key(0), tokens)
    zero = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(params))
            if re.search(r"(attn'\]\['proj|mlp'\]\['fc2)", jax.tree_util.keystr(path))]
    assert len(zero) == 2 * 2 * 2 * 2  # blocks x modalities x (proj, fc2) x (kernel, bias)
    assert all(not np.any(leaf) for _, leaf in zero)
    fused = jax.jit(aux.apply)(params, tokens)
    np.testing.assert_array_equal(fused, tokens)  # identity at init: phase 2 starts from phase 1's function
    # Same param shapes for both carries; with trained (random) params they compute different things.
    assert jax.tree.map(jnp.shape, nn.meta.unbox(jax.eval_shape(mean_add.init, jax.random.key(0), tokens))) == \
        jax.tree.map(jnp.shape, nn.meta.unbox(params))
    rng = np.random.default_rng(3)
    trained = jax.tree.map(lambda x: jnp.asarray(0.2 * rng.normal(size=x.shape), jnp.float32), nn.meta.unbox(params))
    fused_aux = jax.jit(aux.apply)(trained, tokens)
    fused_mean = jax.jit(mean_add.apply)(trained, tokens)
    np.testing.assert_allclose(fused_aux[:, 0], fused_mean[:, 0], atol=1e-5)  # no carry into season 0
    assert not np.allclose(fused_aux[:, 1:], fused_mean[:, 1:], atol=1e-4)


def _paper_tiny(**overrides):
    """seamo_vitb_ssl4eo:phase2 (4 seasons, S2 + S1, TM fusion, 2 blocks) at a tiny size."""
    config = load_config_file(f"{pathlib.Path(__file__).parents[1] / 'experiments' / 'seamo_vitb_ssl4eo.py'}:phase2")
    model_config = config.model
    model_config.update(dict(size="tiny", patch_size=PATCH, decoder_dim=32, decoder_depth=1, decoder_heads=2,
                             dtype="float32", remat_policy="none", scan_layers=True))
    model_config.update(overrides)
    in_chans = {m: sensors.get_sensor(config.data.sensors[m]).num_bands for m in config.data.modalities}
    return build_model(model_config, modalities=config.data.modalities, in_chans=in_chans,
                       num_seasons=config.model.num_seasons, image_size=IMAGE, mask_ratio=config.mask.ratio)


def _encoder_out(model, variables, batch):
    """(cls [B, S, D], tokens [B, S, M*V, D]) of the encoder inside the training forward."""
    _, state = model.apply(variables, batch, capture_intermediates=lambda mdl, _: isinstance(mdl, Encoder))
    return state["intermediates"]["encoder"]["__call__"][0]


def test_per_season_encoding_isolates_seasons():
    """Paper config: season 1's pixels do not reach season 0's encoder tokens (per_season), but do (joint)."""
    per_season = _paper_tiny()
    assert per_season.season_encoding == "per_season" and per_season.num_seasons == 4
    joint = _paper_tiny(season_encoding="joint")
    batch = _random_batch(per_season, 7, batch_size=2)
    batch["mask"] = jnp.asarray(_random_masks(np.random.default_rng(7), batch["mask"].shape,
                                              num_masked(TOKENS, per_season.mask_ratio)))
    variables = jax.jit(per_season.init)(jax.random.key(0), batch)  # the two modes share the param tree
    assert jax.tree.structure(jax.eval_shape(joint.init, jax.random.key(0), batch)) == jax.tree.structure(variables)
    changed = dict(batch, views={m: v.at[:, 1].add(3.0) for m, v in batch["views"].items()})
    for model, isolated in ((per_season, True), (joint, False)):
        run = jax.jit(lambda v, b, model=model: _encoder_out(model, v, b))
        (cls, tokens), (cls2, tokens2) = run(variables, batch), run(variables, changed)
        assert tokens.shape == (2, 4, 2 * (TOKENS - num_masked(TOKENS, model.mask_ratio)), model.size.width)
        assert not np.allclose(tokens2[:, 1], tokens[:, 1], atol=1e-4)
        if isolated:
            np.testing.assert_array_equal(tokens2[:, 0], tokens[:, 0])  # bitwise
            np.testing.assert_array_equal(tokens2[:, 2:], tokens[:, 2:])
            np.testing.assert_array_equal(cls2[:, 0], cls[:, 0])
            assert not np.allclose(cls[:, 0], cls[:, 1], atol=1e-4)  # one cls per season sequence
        else:
            assert not np.allclose(tokens2[:, 0], tokens[:, 0], atol=1e-4)
    # encode() encodes one season per sequence too: season 0 alone = season 0 of all four.
    encode = jax.jit(lambda v, views, offsets, seasons: per_season.apply(
        v, views, offsets, method="encode", seasons=seasons), static_argnums=3)
    all_tokens, pooled = encode(variables, batch["views"], batch["offsets"], None)
    alone, _ = encode(variables, batch["views"], batch["offsets"], (0,))
    per_view = 2 * TOKENS
    assert all_tokens.shape == (2, 4 * per_view, per_season.size.width)
    np.testing.assert_allclose(all_tokens[:, :per_view], alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pooled, all_tokens.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_position_frame_view_ignores_offsets(setup):
    """view frame (the demo default): crop offsets change nothing; tile frame: they move every position."""
    model, variables, batch, apply = setup
    assert model.position_frame == "view"
    shifted = dict(batch, offsets=batch["offsets"] + jnp.asarray([8, 4], jnp.int32))
    _, aux = apply(variables, batch)
    _, aux_shifted = apply(variables, shifted)
    for m in IN_CHANS:
        np.testing.assert_array_equal(aux_shifted["pred"][m], aux["pred"][m])
    tile = model.clone(position_frame="tile")
    tile_apply = jax.jit(tile.apply)
    _, tile_aux = tile_apply(variables, batch)
    _, tile_shifted = tile_apply(variables, shifted)
    assert not np.allclose(tile_aux["pred"]["s2"], aux["pred"]["s2"], atol=1e-4)
    assert not np.allclose(tile_shifted["pred"]["s2"], tile_aux["pred"]["s2"], atol=1e-4)
    # The view table is MAE's, = the tile table at offset 0.
    np.testing.assert_array_equal(posembed.sincos_2d(16, (4, 4)),
                                  posembed.sincos_2d_from_offsets(16, jnp.zeros(2), (4, 4), 8))


def test_season_ids_pick_season_embedding_rows(setup):
    """batch['season_ids'] [B, S]: absent = arange(S); a 1-season batch with id k = season slot k."""
    model, variables, batch, apply = setup
    _, aux = apply(variables, batch)
    explicit = dict(batch, season_ids=jnp.broadcast_to(jnp.arange(SEASONS, dtype=jnp.int32), (BATCH, SEASONS)))
    _, aux_explicit = apply(variables, explicit)
    np.testing.assert_array_equal(aux_explicit["pred"]["s2"], aux["pred"]["s2"])
    swapped = dict(batch, season_ids=jnp.asarray([[1, 0]] + [[0, 1]] * (BATCH - 1), jnp.int32))
    _, aux_swapped = apply(variables, swapped)
    assert not np.allclose(aux_swapped["pred"]["s2"][0], aux["pred"]["s2"][0], atol=1e-4)
    np.testing.assert_array_equal(aux_swapped["pred"]["s2"][1:], aux["pred"]["s2"][1:])  # per-sample rows
    # Phase 1: one season slot holding the drawn season 1 encodes as season slot 1 of a 2-season batch.
    one = {"views": {m: v[:, 1:] for m, v in batch["views"].items()}, "offsets": batch["offsets"][:, 1:],
           "mask": batch["mask"][:, 1:], "season_ids": jnp.ones((BATCH, 1), jnp.int32)}
    encoder = jax.jit(lambda v, b: _encoder_out(model, v, b))
    _, tokens_two = encoder(variables, batch)
    _, tokens_one = encoder(variables, one)
    np.testing.assert_allclose(tokens_one[:, 0], tokens_two[:, 1], rtol=0, atol=1e-5)
    bad_loss, _ = apply(variables, dict(batch, season_ids=jnp.full((BATCH, SEASONS), model.num_seasons, jnp.int32)))
    assert np.isnan(bad_loss)


def test_dropped_modalities_leave_the_loss(setup):
    """batch['modality_dropped'] [B, M] (data.modality_dropout): those views' patches are not scored."""
    model, variables, batch, apply = setup
    dropped = np.zeros((BATCH, 2), bool)
    dropped[0, 1] = dropped[2, 0] = True  # sample 0 lost s1, sample 2 lost s2
    loss, aux = apply(variables, dict(batch, modality_dropped=jnp.asarray(dropped)))
    _, aux_all = apply(variables, batch)
    np.testing.assert_array_equal(aux["pred"]["s2"], aux_all["pred"]["s2"])  # still encoded the same way
    total = 0.0
    for i, m in enumerate(model.modalities):
        target = np.asarray(losses_lib.normalise_patches(patchify(batch["views"][m], PATCH)))
        per_patch = np.mean((np.asarray(aux["pred"][m]) - target) ** 2, axis=-1)  # [B, S, T]
        scored = np.asarray(batch["mask"][:, :, i]) & ~dropped[:, None, i, None]
        expected = per_patch[scored].mean()
        np.testing.assert_allclose(aux["losses"][m], expected, rtol=1e-5)
        assert abs(expected - per_patch[np.asarray(batch["mask"][:, :, i])].mean()) > 1e-4
        total += expected
    np.testing.assert_allclose(loss, total, rtol=1e-5)


def test_one_mask_count_rule_for_data_and_model():
    """T = 49 at ratio 0.5: data and model both mask 25 (round half up), and the loss is finite."""
    for tokens, ratio in [(49, 0.5), (5, 0.5), (196, 0.75), (49, 0.75), (16, 0.75), (45, 0.7), (9, 0.5)]:
        assert num_masked(tokens, ratio) == data_masking.num_masked(tokens, ratio) == mask_count.num_masked(
            tokens, ratio)
    assert num_masked(49, 0.5) == 25
    models = [build_model(_tiny_config(fusion="none", decoder_depth=1, scan_layers=True, season_encoding=mode),
                          modalities=("s2",), in_chans=IN_CHANS, num_seasons=1, image_size=56, mask_ratio=0.5)
              for mode in ("per_season", "joint")]
    assert models[0].num_tokens == 49
    rng = np.random.default_rng(0)
    batch = example_batch(models[0], 2)
    batch["views"] = {"s2": jnp.asarray(rng.normal(size=batch["views"]["s2"].shape), jnp.float32)}
    batch["mask"] = jnp.asarray(np.stack([data_masking.random_token_masks(rng, 1, 1, 49, 0.5) for _ in range(2)]))
    variables = jax.jit(models[0].init)(jax.random.key(0), batch)
    losses = [jax.jit(model.apply)(variables, batch)[0] for model in models]
    assert np.isfinite(losses[0])
    # One season, one modality: per_season and joint are the same (MAE) computation.
    np.testing.assert_array_equal(losses[0], losses[1])


def _block_params(d):
    return 12 * d * d + 13 * d  # norm1, qkv, proj, norm2, fc1 (4d), fc2 with biases


def _mae_param_count(d, depth, dd, dec_depth, p, c):
    """Trainable params of the reference (PyTorch) MAE; its pos embeds are fixed buffers."""
    encoder = d + (p * p * c * d + d) + depth * _block_params(d) + 2 * d  # cls, patch conv, blocks, norm
    decoder = (d * dd + dd) + dd + dec_depth * _block_params(dd) + 2 * dd + (dd * p * p * c + p * p * c)
    return encoder, encoder + decoder


def _abstract_params(model):
    return jax.eval_shape(model.init, jax.random.key(0), example_batch(model, 1))["params"]


def test_vit_b_param_counts_match_mae():
    config = _tiny_config(size="vit_b16", patch_size=16, fusion="none", decoder_dim=512, decoder_depth=8,
                          decoder_heads=16)
    model = build_model(config, modalities=("s2",), in_chans={"s2": 3}, num_seasons=1, image_size=224, mask_ratio=0.75)
    params = _abstract_params(model)
    encoder_expected, total_expected = _mae_param_count(768, 12, 512, 8, 16, 3)
    assert abs(param_count(params["encoder"]) - 86e6) / 86e6 < 0.01
    assert param_count(params["encoder"]) == encoder_expected
    assert param_count(params) == total_expected
    assert set(params) == {"encoder", "decoder_s2"}
    assert "season_embed" not in params["encoder"] and "modality_embed" not in params["encoder"]


def test_every_param_has_logical_axes(setup):
    model, variables, _, _ = setup
    boxed = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert boxed and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in boxed)
    layer_axis = variables["params"]["encoder"]["blocks"]["attn"]["qkv"]["kernel"].names
    assert layer_axis == ("layers", "embed", None, "heads", "kv")


def test_sharded_loss_matches_single_device(setup):
    model, variables, batch, apply = setup
    rules = get_config().sharding_rules
    loss_single, _ = apply(variables, batch)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    param_shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(variables), mesh, rules)
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        sharded_vars = jax.device_put(variables, param_shardings)
        sharded_batch = jax.device_put(batch, batch_sharding)
        qkv = sharded_vars["params"]["encoder"]["blocks"]["attn"]["qkv"]["kernel"].value
        assert qkv.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None, "model", None)
        loss_sharded = jax.jit(lambda v, b: model.apply(v, b)[0])(sharded_vars, sharded_batch)
    np.testing.assert_allclose(float(loss_sharded), float(loss_single), rtol=1e-5, atol=1e-5)


def test_gradients_finite_and_nonzero(setup):
    model, variables, batch, _ = setup
    # The fusion blocks' output projections start at zero (models/fusion.py), which zeroes the gradients of
    # everything upstream inside those blocks at init; give them small values, as after a few steps.
    rng = np.random.default_rng(4)
    zero_init = re.compile(r"fusion'\]\['blocks_\d+_\w+'\]\['(attn'\]\['proj|mlp'\]\['fc2)")
    variables = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.asarray(0.02 * rng.normal(size=x.shape), x.dtype)
        if zero_init.search(jax.tree_util.keystr(path)) else x, nn.meta.unbox(variables))
    grads = jax.jit(jax.grad(lambda v: model.apply(v, batch)[0]))(variables)
    flat = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(grads["params"]))
    assert len(flat) > 50
    for path, g in flat:
        name = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(g)), name
        assert np.any(g != 0), name


@pytest.mark.parametrize("modalities,seasons", [(("s2",), None), (("s1",), None), (("s2", "s1"), (1,))])
def test_encode_subsets(setup, modalities, seasons):
    model, variables, batch, _ = setup
    encode = jax.jit(lambda v, views, offsets: model.apply(v, views, offsets, method="encode",
                                                          modalities=modalities, seasons=seasons))
    tokens, pooled = encode(variables, batch["views"], batch["offsets"])
    num_seasons = SEASONS if seasons is None else len(seasons)
    width = model.size.width
    assert tokens.shape == (BATCH, num_seasons * len(modalities) * TOKENS, width)
    assert pooled.shape == (BATCH, width)
    assert np.all(np.isfinite(tokens))


def test_posembed_same_ground_pixel_same_embedding():
    dim, grid = 16, (4, 4)
    a = posembed.sincos_2d_from_offsets(dim, jnp.array([0, 0]), grid, 8)
    b = posembed.sincos_2d_from_offsets(dim, jnp.array([8, 16]), grid, 8)  # one row, two columns further
    np.testing.assert_allclose(b[0], a[1 * 4 + 2], atol=1e-6)
    c = posembed.sincos_2d_from_offsets(dim, jnp.array([4, 0]), grid, 8)  # half a patch down
    assert not np.allclose(c[0], a[0])
    # Offset zero = MAE's fixed table (written out independently here).
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij")
    emb = lambda pos: np.concatenate([np.sin(pos[:, None] * omega), np.cos(pos[:, None] * omega)], axis=1)
    mae = np.concatenate([emb(cols.reshape(-1)), emb(rows.reshape(-1))], axis=1)
    np.testing.assert_allclose(a, mae, atol=1e-6)


def test_random_mask_counts():
    mask = random_mask(jax.random.key(0), (3, 2, 2, TOKENS), 12)
    assert np.all(np.sum(mask, axis=-1) == 12)
    assert not np.all(mask[0, 0, 0] == mask[1, 0, 0])


def test_analytic_flops_match_xla_count():
    """Unrolled (no scan) plain MAE: XLA's count (dots + a little elementwise) is within 10% of ours."""
    # build_model's default backend is the generic XLA path (XLA counts no FLOPs inside the CPU kernels' calls).
    model = build_model(_tiny_config(fusion="none", scan_layers=False), modalities=("s2",), in_chans=IN_CHANS,
                        num_seasons=1, image_size=IMAGE, mask_ratio=0.75)
    batch = example_batch(model, 2)
    variables = jax.eval_shape(model.init, jax.random.key(0), batch)
    cost = jax.jit(model.apply).lower(variables, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    analytic = forward_flops(model, 2)["total"]
    assert analytic <= cost["flops"] <= 1.1 * analytic


def test_analytic_flops_per_season_aux_queries_match_xla_count():
    """Paper config (tiny, unrolled): per-season sequences and 2V-token fusion query sets are counted right."""
    model = _paper_tiny(scan_layers=False)
    batch = example_batch(model, 2)
    variables = jax.eval_shape(model.init, jax.random.key(0), batch)
    cost = jax.jit(model.apply).lower(variables, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    analytic = forward_flops(model, 2)
    assert analytic["fusion"] > 0.3 * analytic["total"]  # the fusion counts are really under test
    assert analytic["total"] <= cost["flops"] <= 1.15 * analytic["total"]  # ~1.10: tiny widths' elementwise work


def test_einsum_attention_matches_jax_dot_product_attention():
    from seamo_jax.models import attention

    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    q = jax.random.normal(keys[0], (2, 5, 4, 8))
    k = jax.random.normal(keys[1], (2, 7, 4, 8))
    v = jax.random.normal(keys[2], (2, 7, 4, 8))
    einsum_out = attention._attend(q, k, v, "einsum")
    xla_out = attention._attend(q, k, v, "xla")
    assert einsum_out.shape == (2, 5, 4, 8)
    np.testing.assert_allclose(np.asarray(einsum_out), np.asarray(xla_out), atol=1e-5)

    # The hand-written backward (delta = rowsum(dout * out)) against autodiff of jax's attention.
    cotangent = jax.random.normal(jax.random.PRNGKey(4), (2, 5, 4, 8))

    def grads(impl):
        return jax.grad(lambda *qkv: jnp.vdot(attention._attend(*qkv, impl), cotangent), argnums=(0, 1, 2))(q, k, v)

    for mine, reference in zip(grads("einsum"), grads("xla")):
        assert float(jnp.abs(reference).max()) > 1e-2
        np.testing.assert_allclose(np.asarray(mine), np.asarray(reference), atol=1e-5, rtol=1e-5)
    # bf16 compute: same gradients to bf16 precision.
    as_bf16 = [t.astype(jnp.bfloat16) for t in (q, k, v)]
    mine = jax.grad(lambda *qkv: jnp.vdot(attention._attend(*qkv, "einsum").astype(jnp.float32), cotangent),
                    argnums=(0, 1, 2))(*as_bf16)
    for m, reference in zip(mine, grads("xla")):
        assert m.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(m, np.float32), np.asarray(reference), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_module_matches_flax_layer_norm(dtype):
    """layers.LayerNorm (XLA path; the kernel path is tests/test_kernels.py) = flax nn.LayerNorm: same params, values."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((3, 7, 24)) * 2 + 1, dtype)
    ours = layers.layer_norm("norm", dtype)
    theirs = nn.LayerNorm(epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32)
    params = nn.meta.unbox(ours.init(jax.random.key(0), x))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, theirs.init(jax.random.key(0), x))
    params = {"params": {"scale": jnp.asarray(rng.standard_normal(24), jnp.float32),
                         "bias": jnp.asarray(rng.standard_normal(24), jnp.float32)}}
    got, want = ours.apply(params, x), theirs.apply(params, x)
    assert got.dtype == want.dtype == dtype
    tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tolerance, atol=tolerance)


def test_dense_rejects_unknown_activation():
    dense = layers.DenseND((4,), 1, ("embed", "mlp"), ("mlp",), activation="relu")
    with pytest.raises(ValueError, match="activation"):
        dense.init(jax.random.key(0), jnp.ones((2, 3)))
