"""Orbax save/restore of a sharded TrainState: exact round trip, resharding, atomicity, load_params."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seamo_jax import parallel, sensors
from seamo_jax.train import checkpoint as ckpt_lib
from seamo_jax.train import optimizer as optim_lib
from seamo_jax.train.state import TrainState, create_train_state, state_shardings

RULES = (("embed", "fsdp"), ("mlp", "model"))


class Annotated(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("embed", "mlp")), (8, 16))
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("mlp",)), (16,))
        return x @ w + b


def optim_config():
    cfg = ml_collections.ConfigDict()
    cfg.learning_rate, cfg.warmup_steps, cfg.end_lr_ratio = 1e-2, 2, 0.1
    cfg.weight_decay, cfg.b1, cfg.b2, cfg.clip_grad_norm, cfg.layer_decay = 0.05, 0.9, 0.95, 1.0, 1.0
    return cfg


def build_state(mesh_shape):
    mcfg = ml_collections.ConfigDict({"shape": mesh_shape, "axes": ("data", "fsdp", "model")})
    mesh = parallel.make_mesh(mcfg)
    rules = parallel.logical_rules(RULES, mesh)
    model = Annotated()
    params, pshard = parallel.sharded_init(lambda k: model.init(k, jnp.ones((2, 8)))["params"], mesh, rules,
                                           jax.random.key(1))
    tx, _ = optim_lib.make_optimizer(optim_config(), 10)
    abstract = jax.eval_shape(lambda p: create_train_state(p, tx, jax.random.key(3)), params)
    shardings = state_shardings(abstract, pshard, mesh)
    state = jax.jit(lambda p: create_train_state(p, tx, jax.random.key(3)), out_shardings=shardings)(params)

    # A few real updates so mu/nu/count are non-trivial.
    def update(state):
        grads = jax.grad(lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, jnp.ones((2, 8))))))(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(jnp.add, state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state)

    update = jax.jit(update, in_shardings=(shardings,), out_shardings=shardings)
    for _ in range(3):
        state = update(state)
    return state, shardings, abstract, mesh


def assert_bitwise_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype


def test_roundtrip_params_and_opt_state_bitwise(tmp_path):
    state, shardings, abstract, _ = build_state((2, 2, 2))
    ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", save_every=1, keep=2)
    assert ckpt.save(3, state, metrics={"loss": 1.0})
    ckpt.wait()
    restored, _ = ckpt.restore(ckpt_lib.abstract_with_shardings(abstract, shardings))
    ckpt.close()
    assert isinstance(restored, TrainState)
    assert_bitwise_equal(state, restored)
    assert int(restored.step) == 3
    assert float(jnp.abs(restored.opt_state[1][0].mu["kernel"]).sum()) > 0  # adam moments were saved, not zeros
    assert parallel.shardings_match(restored, shardings)


def test_restore_onto_different_mesh(tmp_path):
    state, _, _, _ = build_state((2, 2, 2))
    ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", save_every=1)
    ckpt.save(3, state)
    ckpt.close()
    # Same model on a (1, 4, 2) mesh over 8 devices, and a 4-device (4, 1, 1) mesh.
    for shape, devices in (((1, 4, 2), None), ((4, 1, 1), jax.devices()[:4])):
        mcfg = ml_collections.ConfigDict({"shape": shape, "axes": ("data", "fsdp", "model")})
        mesh = parallel.make_mesh(mcfg, devices=devices)
        rules = parallel.logical_rules(RULES, mesh)
        pabstract = jax.eval_shape(lambda k: Annotated().init(k, jnp.ones((2, 8)))["params"], jax.random.key(0))
        pshard = parallel.logical_shardings(pabstract, mesh, rules)
        tx, _ = optim_lib.make_optimizer(optim_config(), 10)
        abstract = jax.eval_shape(lambda p: create_train_state(p, tx, jax.random.key(3)), nn.meta.unbox(pabstract))
        shardings = state_shardings(abstract, pshard, mesh)
        restored, _ = ckpt_lib.Checkpointer(tmp_path / "ckpt", save_every=1).restore(
            ckpt_lib.abstract_with_shardings(abstract, shardings))
        assert_bitwise_equal(state, restored)
        assert restored.params["kernel"].sharding.mesh.shape == mesh.shape
        assert parallel.shardings_match(restored, shardings)


def test_incomplete_save_is_never_picked(tmp_path):
    state, shardings, abstract, _ = build_state((-1, 1, 1))
    directory = tmp_path / "ckpt"
    ckpt = ckpt_lib.Checkpointer(directory, save_every=1)
    ckpt.save(3, state)
    ckpt.close()
    # What a save killed mid-write leaves behind: an uncommitted temp dir of a newer step.
    tmp = directory / "5.orbax-checkpoint-tmp-1234"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_text("half written")
    ckpt = ckpt_lib.Checkpointer(directory, save_every=1)
    assert ckpt.latest_step() == 3
    restored, _ = ckpt.restore(ckpt_lib.abstract_with_shardings(abstract, shardings))
    assert_bitwise_equal(state, restored)
    ckpt.close()


def test_keep_last_k_and_best(tmp_path):
    state, _, _, _ = build_state((-1, 1, 1))
    ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", save_every=1, keep=2, keep_best=1)
    for step, loss in ((1, 5.0), (2, 1.0), (3, 4.0), (4, 3.0), (5, 2.0)):
        ckpt.save(step, state, metrics={"loss": loss})
        ckpt.wait()
    assert ckpt.all_steps() == [2, 4, 5]  # best (loss 1.0) + last two
    ckpt.close()


def test_load_params_reads_params_config_and_sensors(tmp_path):
    state, _, _, _ = build_state((2, 2, 2))
    config = ml_collections.ConfigDict({"seed": 7, "data": {"modalities": ("s2", "s1"),
                                                            "sensors": {"s2": "s2_l1c", "s1": "s1_grd"}},
                                        "model": {"scan_layers": True}})
    specs = ckpt_lib.sensor_specs_from_config(config.data)
    ckpt_lib.write_run_metadata(tmp_path, config, specs)
    ckpt = ckpt_lib.Checkpointer(tmp_path / ckpt_lib.CHECKPOINT_SUBDIR, save_every=1)
    ckpt.save(3, state)
    ckpt.close()
    for where in (tmp_path, tmp_path / "checkpoints"):
        params, loaded_config, loaded_specs = ckpt_lib.load_params(where)
        assert_bitwise_equal(state.params, params)
        assert loaded_config.seed == 7 and loaded_config.data.modalities == ("s2", "s1")  # tuples, as written
        assert loaded_specs["s2"] == sensors.S2_L1C and loaded_specs["s1"] == sensors.S1_GRD
    assert json.loads((tmp_path / "sensors.json").read_text())["s2"]["name"] == "s2_l1c"


def _dir_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_compression_switch_and_cross_format_restore(tmp_path):
    """compression=False writes raw bytes (large), True zstd (small); either reads the other's checkpoints."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    tree = {"zeros": jnp.zeros((512, 512), jnp.float32), "ramp": jnp.arange(1000, dtype=jnp.float32)}
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)
    sizes = {}
    for compression in (False, True):
        directory = tmp_path / f"compression_{compression}"
        ckpt = ckpt_lib.Checkpointer(directory, save_every=1, compression=compression)
        ckpt.save(1, tree)
        ckpt.close()
        sizes[compression] = _dir_bytes(directory / "1")
        # Read back with a Checkpointer of the other setting: the format comes from the metadata.
        reader = ckpt_lib.Checkpointer(directory, save_every=1, compression=not compression)
        restored, _ = reader.restore(abstract)
        reader.close()
        assert_bitwise_equal(tree, restored)
    assert sizes[False] > 512 * 512 * 4  # the 1 MiB of zeros is stored as is
    assert sizes[True] < sizes[False] / 4
