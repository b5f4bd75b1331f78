"""models/backend.py: the run's Backend from config (model.attention_impl, model.cpu_kernels) and the attentions.

The CPU kernels themselves are tests/test_kernels.py; here nothing needs them.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import pytest

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax.models import Backend, attention, build_model, example_batch, resolve_backend
from seamo_jax.models.backend import generic_backend
from seamo_jax.models.sizes import ViTSize


def _model_config(**overrides):
    return ml_collections.ConfigDict({**get_config().model, **overrides})


def test_configs_ask_for_xla_attention_and_auto_kernels():
    from seamo_jax.configs import load_config_file

    for name in ("demo_cpu.py", "seamo_vitb_ssl4eo.py:phase2", "seamo_vitl_pod.py", "probe_eurosat.py"):
        model = load_config_file(name).model
        assert (model.attention_impl, model.cpu_kernels) == ("xla", "auto"), name


def test_resolver_keeps_the_generic_path_off_single_device_float32_cpu():
    """No kernels (and no kernel build) wherever "auto" must not use them; "off" never does."""
    assert resolve_backend(_model_config(), 8) == Backend("xla", cpu_kernels=False)
    assert resolve_backend(_model_config(dtype="bfloat16"), 1) == Backend("xla")
    assert resolve_backend(_model_config(), 1, platform="tpu") == Backend("xla")
    assert resolve_backend(_model_config(cpu_kernels="off"), 1) == Backend("xla")
    assert resolve_backend(_model_config(cpu_kernels=False), 1) == Backend("xla")  # --config.model.cpu_kernels=False
    assert resolve_backend(_model_config(attention_impl="einsum", cpu_kernels="off"), 1) == Backend("einsum")
    # Accelerator attention kernels are never replaced by the CPU kernels.
    assert resolve_backend(_model_config(attention_impl="pallas_tpu"), 1) == Backend("pallas_tpu")
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    assert resolve_backend(_model_config(), mesh) == Backend("xla")


def test_resolver_rejects_impossible_or_unknown_choices():
    with pytest.raises(ValueError, match="needs one device"):
        resolve_backend(_model_config(cpu_kernels="on"), 8)
    with pytest.raises(ValueError, match="needs the cpu backend"):
        resolve_backend(_model_config(cpu_kernels="on"), 1, platform="gpu")
    with pytest.raises(ValueError, match="model.dtype float32"):
        resolve_backend(_model_config(cpu_kernels="on", dtype="bfloat16"), 1)
    with pytest.raises(ValueError, match="unknown model.cpu_kernels 'yes'"):
        resolve_backend(_model_config(cpu_kernels="yes"), 1)
    with pytest.raises(ValueError, match="unknown model.attention_impl 'flash'"):
        resolve_backend(_model_config(attention_impl="flash"), 1)
    with pytest.raises(ValueError, match=r"model.attention_impl='cudnn' needs model.dtype bfloat16 or float16, "
                                         r"got float32"):
        resolve_backend(_model_config(attention_impl="cudnn"), 8)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        Backend("flash")
    with pytest.raises(ValueError, match="cpu_kernels=True would replace"):
        Backend("cudnn", cpu_kernels=True)


def test_build_model_defaults_to_the_generic_path_and_validates():
    def build(**overrides):
        return build_model(_model_config(**overrides), modalities=("s2", "s1"), in_chans={"s2": 13, "s1": 2},
                           num_seasons=2, image_size=32, mask_ratio=0.75)

    assert build().backend == Backend("xla", cpu_kernels=False)
    assert build(attention_impl="cudnn", dtype="bfloat16").backend == Backend("cudnn")
    with pytest.raises(ValueError, match="cudnn"):
        build(attention_impl="cudnn")
    with pytest.raises(ValueError, match="cpu_kernels"):
        build(cpu_kernels="maybe")
    assert generic_backend(_model_config(attention_impl="einsum")) == Backend("einsum")


@pytest.mark.parametrize("impl", ["xla", "cudnn"])
def test_xla_and_cudnn_attention_are_jax_dot_product_attention(monkeypatch, impl):
    """The generic path is jax.nn.dot_product_attention, on [B, L, H, Dh], with the configured implementation."""
    calls = []
    real = jax.nn.dot_product_attention

    def spy(q, k, v, *args, implementation=None, **kwargs):
        calls.append((q.shape, k.shape, implementation))
        return real(q, k, v, *args, **kwargs)  # CPU: XLA's kernel, to check the plumbing only

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    x = jnp.ones((2, 5, 16))
    layer = attention.SelfAttention(num_heads=4, backend=Backend(impl))
    layer.apply(layer.init(jax.random.key(0), x), x)
    assert calls[-1] == ((2, 5, 4, 4), (2, 5, 4, 4), impl)


def _qkv(len_q, len_k, heads=2, dim=32, batch=4):
    keys = jax.random.split(jax.random.key(len_q + len_k), 4)
    q = jax.random.normal(keys[0], (batch, len_q, heads, dim))
    k, v = (jax.random.normal(key, (batch, len_k, heads, dim)) for key in keys[1:3])
    return q, k, v, jax.random.normal(keys[3], (batch, len_q, heads, dim))


def _value_and_grads(impl, q, k, v, cotangent):
    return jax.jit(jax.value_and_grad(lambda *t: jnp.vdot(attention._attend(*t, impl), cotangent),
                                      argnums=(0, 1, 2)))(q, k, v)


def _interpret():
    pltpu = pytest.importorskip("jax.experimental.pallas.tpu")
    return pltpu.force_tpu_interpret_mode()


@pytest.mark.parametrize("len_q,len_k", [(17, 150), (128, 128)])  # padded to 128-blocks / exact blocks
def test_pallas_tpu_flash_attention_matches_xla_in_interpret_mode(len_q, len_k):
    """Pallas' TPU flash kernel (run by Pallas' TPU interpreter on CPU): values and all three gradients."""
    q, k, v, cotangent = _qkv(len_q, len_k)
    want = _value_and_grads("xla", q, k, v, cotangent)
    with _interpret():
        got = _value_and_grads("pallas_tpu", q, k, v, cotangent)
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)
    for mine, ref in zip(got[1], want[1]):
        assert float(jnp.abs(ref).max()) > 1e-2
        np.testing.assert_allclose(np.asarray(mine), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_pallas_tpu_attention_runs_per_shard_under_a_mesh():
    """Under a mesh the kernel runs in a shard_map over batch / heads (no gathered operands), same values."""
    q, k, v, cotangent = _qkv(17, 40)
    want = _value_and_grads("xla", q, k, v, cotangent)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with _interpret(), jax.set_mesh(mesh), nn.logical_axis_rules(get_config().sharding_rules):
        got = _value_and_grads("pallas_tpu", q, k, v, cotangent)
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)
    for mine, ref in zip(got[1], want[1]):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_seamo_with_pallas_tpu_attention_matches_xla_in_interpret_mode():
    """A small SeaMo (encoder self-attention, TM cross-attention, decoders) with pallas_tpu = with xla: loss, preds.

    Forward only, one block and one head everywhere: the interpreter is slow on CPU (seconds per kernel),
    and the kernel's gradients are checked above.
    """
    def build(impl):
        config = _model_config(attention_impl=impl, size=ViTSize(width=32, depth=1, num_heads=1, mlp_dim=64),
                               decoder_dim=32, decoder_heads=1)
        return build_model(config, modalities=("s2", "s1"), in_chans={"s2": 13, "s1": 2}, num_seasons=1,
                           image_size=32, mask_ratio=0.75)

    model, pallas_model = build("xla"), build("pallas_tpu")
    batch = example_batch(model, 2)
    batch["views"] = {m: jax.random.normal(jax.random.key(i), x.shape) for i, (m, x) in enumerate(batch["views"].items())}
    variables = jax.jit(model.init)(jax.random.key(0), batch)
    want_loss, want_aux = jax.jit(model.apply)(variables, batch)
    # Same param tree (eval_shape only traces, so needs no interpreter).
    assert jax.tree.map(jnp.shape, jax.eval_shape(pallas_model.init, jax.random.key(0), batch)) == \
        jax.tree.map(jnp.shape, variables)
    with _interpret():
        loss, aux = jax.jit(pallas_model.apply)(variables, batch)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
    for m, pred in want_aux["pred"].items():
        np.testing.assert_allclose(np.asarray(aux["pred"][m]), np.asarray(pred), rtol=1e-4, atol=1e-5)
