"""Optimizer pieces and the jitted step's mechanics (sharding, donation, accumulation),
with a small linear-regression module that speaks the model contract."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seamo_jax import parallel
from seamo_jax.train import optimizer as optim_lib
from seamo_jax.train.state import create_train_state, state_shardings
from seamo_jax.train.step import make_train_step
from seamo_jax.train.recon_images import patchify_np, reconstruct_view, write_recon_images
from seamo_jax.train.preemption import PreemptionWatcher
from seamo_jax import sensors

RULES = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "model"))


class Regressor(nn.Module):
    """Contract-shaped toy: apply(vars, batch, train, rngs) -> (loss, {"losses": ...})."""

    @nn.compact
    def __call__(self, batch, train=True):
        w = self.param("kernel", nn.with_logical_partitioning(nn.initializers.normal(0.5), ("embed", "mlp")), (4, 2))
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (2,))
        err = jnp.square(batch["x"] @ w + b - batch["y"])
        losses = {"a": err[:, 0].mean(), "b": err[:, 1].mean()}
        return losses["a"] + losses["b"], {"losses": losses}


def optim_config(**overrides):
    cfg = ml_collections.ConfigDict(dict(learning_rate=0.1, warmup_steps=2, end_lr_ratio=0.1, weight_decay=0.05,
                                         b1=0.9, b2=0.95, clip_grad_norm=1.0, layer_decay=1.0, grad_accum_steps=1))
    cfg.update(overrides)
    return cfg


def setup_step(accum, mesh_shape=(2, 2, 2)):
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"shape": mesh_shape, "axes": ("data", "fsdp", "model")}))
    rules = parallel.logical_rules(RULES, mesh)
    model = Regressor()
    batch = {"x": jnp.ones((8, 4)), "y": jnp.ones((8, 2))}
    params, pshard = parallel.sharded_init(lambda k: model.init(k, batch)["params"], mesh, rules, jax.random.key(0))
    tx, schedule = optim_lib.make_optimizer(optim_config(), 10)
    make = lambda p: create_train_state(p, tx, jax.random.key(1))  # noqa: E731
    shardings = state_shardings(jax.eval_shape(make, params), pshard, mesh)
    state = jax.jit(make, out_shardings=shardings)(params)
    bsh = parallel.batch_sharding(mesh)
    step = make_train_step(model, tx, schedule, mesh, rules, shardings, bsh, grad_accum_steps=accum)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(8, 4)).astype(np.float32), "y": rng.normal(size=(8, 2)).astype(np.float32)}
    return step, state, shardings, jax.device_put(data, bsh)


def test_schedule_warmup_then_cosine():
    schedule = optim_lib.learning_rate_schedule(optim_config(), 10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(2)) == pytest.approx(0.1)
    assert float(schedule(10)) == pytest.approx(0.01)
    assert float(schedule(6)) < float(schedule(3))


def test_weight_decay_mask_only_kernels():
    params = {"enc": {"blocks": {"mlp": {"kernel": jnp.ones((3, 4, 4)), "bias": jnp.ones((3, 4))},
                                 "norm": {"scale": jnp.ones((3, 4))}}},
              "pos_embed": jnp.ones((1, 4)), "mask_token": jnp.ones((1, 4)), "head": {"kernel": jnp.ones((4, 2))}}
    mask = optim_lib.weight_decay_mask(params)
    assert mask["enc"]["blocks"]["mlp"] == {"kernel": True, "bias": False}
    assert mask["enc"]["blocks"]["norm"]["scale"] is False
    assert mask["pos_embed"] is False and mask["mask_token"] is False and mask["head"]["kernel"] is True


def test_layer_decay_scales():
    params = {"encoder": {"blocks": {"kernel": jnp.ones((3, 4, 4))}, "patch_embed_s2": {"kernel": jnp.ones((4, 4))},
                          "norm": {"scale": jnp.ones((4,))}},
              "decoder_s2": {"kernel": jnp.ones((4, 4))}}
    scales = optim_lib.layer_decay_scales(params, 0.5)
    np.testing.assert_allclose(np.asarray(scales["encoder"]["blocks"]["kernel"]).ravel(), [0.125, 0.25, 0.5])
    assert scales["encoder"]["blocks"]["kernel"].shape == (3, 1, 1)
    assert float(scales["encoder"]["patch_embed_s2"]["kernel"]) == pytest.approx(0.0625)
    assert float(scales["encoder"]["norm"]["scale"]) == 1.0 and float(scales["decoder_s2"]["kernel"]) == 1.0
    unrolled = {"encoder": {"blocks_0": {"kernel": jnp.ones((4, 4))}, "blocks_1": {"kernel": jnp.ones((4, 4))}}}
    scales = optim_lib.layer_decay_scales(unrolled, 0.5)
    assert float(scales["encoder"]["blocks_0"]["kernel"]) == 0.25 and float(scales["encoder"]["blocks_1"]["kernel"]) == 0.5
    # Wired into the optimizer: the update of block 0 is scaled relative to the last block.
    tx, _ = optim_lib.make_optimizer(optim_config(layer_decay=0.5, weight_decay=0.0, clip_grad_norm=0.0, warmup_steps=0), 10)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    block = np.asarray(updates["encoder"]["blocks"]["kernel"])[:, 0, 0]
    np.testing.assert_allclose(block / block[-1], [0.25, 0.5, 1.0], rtol=1e-6)


def test_step_shardings_donation_and_metrics():
    step, state, shardings, batch = setup_step(accum=1)
    old_params = state.params
    new_state, metrics = step(state, batch)
    assert old_params["kernel"].is_deleted()  # state was donated
    assert parallel.shardings_match(new_state, shardings)
    assert new_state.params["kernel"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "model")
    assert int(new_state.step) == 1
    assert set(metrics) >= {"loss", "loss/a", "loss/b", "grad_norm", "lr", "param_norm"}
    assert float(metrics["loss"]) == pytest.approx(float(metrics["loss/a"] + metrics["loss/b"]), rel=1e-6)
    assert float(metrics["lr"]) == 0.0


def test_grad_accumulation_matches_full_batch():
    step1, state1, _, batch1 = setup_step(accum=1)
    step4, state4, _, batch4 = setup_step(accum=4)
    for _ in range(3):
        state1, m1 = step1(state1, batch1)
        state4, m4 = step4(state4, batch4)
    # Mean of micro-batch means == full-batch mean (equal micro-batch sizes).
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state1.params["kernel"]), np.asarray(state4.params["kernel"]),
                               rtol=1e-5, atol=1e-6)


def test_recon_perfect_prediction_reproduces_input(tmp_path):
    rng = np.random.default_rng(0)
    view = rng.normal(size=(16, 16, 13)).astype(np.float32)
    mask = np.zeros(4, bool)
    mask[:3] = True
    recon, flags = reconstruct_view(view, patchify_np(view, 8), mask, 8, norm_pix_loss=False)
    np.testing.assert_allclose(recon, view, rtol=1e-6)
    assert flags[:8, :8].all() and not flags[8:, 8:].any()
    views = {"s2": rng.normal(size=(2, 2, 16, 16, 13)).astype(np.float32),
             "s1": rng.normal(size=(2, 2, 16, 16, 2)).astype(np.float32)}
    preds = {"s2": rng.normal(size=(2, 2, 4, 8 * 8 * 13)), "s1": rng.normal(size=(2, 2, 4, 8 * 8 * 2))}
    paths = write_recon_images(tmp_path, 5, views, preds, np.ones((2, 2, 2, 4), bool), ("s2", "s1"),
                               {"s2": sensors.S2_L1C, "s1": sensors.S1_GRD}, 8, True)
    assert [p.name for p in paths] == ["step_000005_s2.png", "step_000005_s1.png"]
    from PIL import Image
    image = np.asarray(Image.open(paths[0]).convert("L"))
    height, width = image.shape
    # 3 panels x 2 seasons, 2-px gaps, x4, plus a header of column labels and a margin of row labels.
    assert width > 3 * 18 * 4 and height > 2 * 18 * 4
    header, margin = height - 2 * 18 * 4, width - 3 * 18 * 4
    assert (image[:header] < 128).any() and (image[header:, :margin] < 128).any()  # text was drawn
    other_seasons = write_recon_images(tmp_path / "b", 5, views, preds, np.ones((2, 2, 2, 4), bool), ("s2",),
                                    {"s2": sensors.S2_L1C}, 8, True, season_ids=np.array([[2, 3], [0, 1]]))
    assert not np.array_equal(np.asarray(Image.open(other_seasons[0]).convert("L"))[:, :margin], image[:, :margin])


def test_preemption_watcher_catches_sigterm_and_restores_handler():
    import os
    import signal
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatcher(checkpoint_manager=None) as watcher:  # one process: no coordination service
        assert not watcher.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.should_stop(2)
    assert signal.getsignal(signal.SIGTERM) == before

