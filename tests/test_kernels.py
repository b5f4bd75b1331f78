"""seamo_jax.kernels: the CPU GEMM and attention kernels (XLA FFI) against XLA's own ops.

The kernels are compiled on first use; where that is impossible here (no
compiler, no bundled OpenBLAS) the kernel tests skip with the reason and the
fallback test still runs.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.demo_cpu import get_config
from seamo_jax import kernels
from seamo_jax.kernels import build
from seamo_jax.models import build_model, example_batch, layers

needs_kernels = pytest.mark.skipif(build.load() is None, reason=f"CPU kernels unavailable: {build.load_error()}")


def _normal(rng, shape, scale=1.0):
    return jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)


@needs_kernels
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", [(37, 19, 53), (300, 64, 9), (1, 5, 2)])
def test_gemm_matches_numpy(m, k, n, trans_a, trans_b):
    """All transpose combinations, odd sizes, m > n and m < n (the two ways the work is split)."""
    rng = np.random.default_rng(m + n)
    a = _normal(rng, (k, m) if trans_a else (m, k))
    b = _normal(rng, (n, k) if trans_b else (k, n))
    got = jax.jit(kernels.gemm, static_argnums=(2, 3))(a, b, trans_a, trans_b)
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    want = (a64.T if trans_a else a64) @ (b64.T if trans_b else b64)
    assert got.shape == (m, n) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_gemm_rejects_bad_operands():
    with pytest.raises(ValueError, match="contracting"):
        kernels.gemm(jnp.ones((3, 4)), jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="float32"):
        kernels.gemm(jnp.ones((3, 4), jnp.bfloat16), jnp.ones((4, 2), jnp.bfloat16))


@needs_kernels
def test_gemm_under_vmap():
    rng = np.random.default_rng(0)
    a, b = _normal(rng, (3, 6, 5)), _normal(rng, (3, 5, 4))
    got = jax.jit(jax.vmap(kernels.gemm))(a, b)
    np.testing.assert_allclose(np.asarray(got), np.einsum("bik,bkj->bij", a, b), rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("x_shape,kernel_shape,num_in_axes", [
    ((37, 24), (24, 3, 4, 2), 1),  # fused qkv: [D] -> [3, H, Dh]
    ((37, 4, 6), (4, 6, 24), 2),  # attention out proj: [H, Dh] -> [D]
])
def test_matmul_rows_values_and_grads_match_dot_general(x_shape, kernel_shape, num_in_axes):
    rng = np.random.default_rng(3)
    x, kernel = _normal(rng, x_shape), _normal(rng, kernel_shape)
    weights = _normal(rng, (x_shape[0], *kernel_shape[num_in_axes:]))
    contract = (tuple(range(1, 1 + num_in_axes)), tuple(range(num_in_axes)))

    def reference(x, kernel):
        return jnp.sum(jax.lax.dot_general(x, kernel, (contract, ((), ()))) * weights)

    def with_kernel(x, kernel):
        return jnp.sum(kernels.matmul_rows(x, kernel, num_in_axes) * weights)

    ref_value, ref_grads = jax.jit(jax.value_and_grad(reference, argnums=(0, 1)))(x, kernel)
    value, grads = jax.jit(jax.value_and_grad(with_kernel, argnums=(0, 1)))(x, kernel)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("len_q,len_k,logit_scale", [
    (197, 197, 1.0),  # the MAE decoder's length (not a multiple of the 8-wide SIMD rows)
    (5, 13, 1.0),  # cross-attention, short rows (scalar tail only)
    (16, 24, 30.0),  # large logits: softmax must subtract the row max
])
def test_attention_matches_jax_dot_product_attention(len_q, len_k, logit_scale):
    rng = np.random.default_rng(len_q)
    batch, heads, dim = 2, 3, 8
    q = _normal(rng, (batch, len_q, heads, dim), logit_scale)
    k, v = _normal(rng, (batch, len_k, heads, dim)), _normal(rng, (batch, len_k, heads, dim))
    cotangent = _normal(rng, (batch, len_q, heads, dim))

    def loss(fn):
        return lambda q, k, v: jnp.vdot(fn(q, k, v), cotangent)

    reference = jax.jit(jax.value_and_grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2)))(q, k, v)
    got = jax.jit(jax.value_and_grad(loss(kernels.attention), argnums=(0, 1, 2)))(q, k, v)
    out = jax.jit(kernels.attention)(q, k, v)
    np.testing.assert_allclose(np.asarray(out), np.asarray(jax.nn.dot_product_attention(q, k, v)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(got[0]), float(reference[0]), rtol=1e-5, atol=1e-4)  # a sum of ~1e4 terms
    for mine, want in zip(got[1], reference[1]):
        assert float(jnp.abs(want).max()) > 1e-3
        np.testing.assert_allclose(np.asarray(mine), np.asarray(want), rtol=1e-4, atol=1e-4 * logit_scale)


@needs_kernels
def test_enabled_only_for_unpartitioned_float32_cpu(monkeypatch):
    assert kernels.enabled(jnp.float32)
    assert not kernels.enabled(jnp.bfloat16)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):
        assert not kernels.enabled(jnp.float32)  # an FFI call has no sharding rule
    one_device = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
    with jax.set_mesh(one_device):
        assert kernels.enabled(jnp.float32)
    monkeypatch.setenv("SEAMO_CPU_KERNELS", "0")
    assert not kernels.enabled(jnp.float32)


def _tiny_seamo():
    model = build_model(get_config().model, modalities=("s2", "s1"), in_chans={"s2": 13, "s1": 2},
                        num_seasons=2, image_size=32)
    rng = np.random.default_rng(0)
    batch = example_batch(model, 4)
    batch["views"] = {m: _normal(rng, v.shape) for m, v in batch["views"].items()}
    variables = jax.jit(model.init)(jax.random.key(0), batch)
    return model, batch, variables


def _loss_and_grads(model, batch, variables):
    # A fresh jit per call: kernels.enabled is read while tracing.
    return jax.jit(jax.value_and_grad(lambda v: model.apply(v, batch)[0]))(variables)


@needs_kernels
def test_seamo_loss_and_grads_same_with_and_without_kernels(monkeypatch):
    """The whole tiny SeaMo (encoder, TM fusion cross-attention, decoders) through the kernels = through XLA."""
    model, batch, variables = _tiny_seamo()
    lowered = jax.jit(lambda v: model.apply(v, batch)[0]).lower(variables).as_text()
    assert "seamo_gemm" in lowered and "seamo_attention_fwd" in lowered
    loss, grads = _loss_and_grads(model, batch, variables)
    monkeypatch.setenv("SEAMO_CPU_KERNELS", "0")
    assert "seamo_" not in jax.jit(lambda v: model.apply(v, batch)[0]).lower(variables).as_text()
    ref_loss, ref_grads = _loss_and_grads(model, batch, variables)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    flat, ref_flat = jax.tree.leaves(nn.meta.unbox(grads)), jax.tree.leaves(nn.meta.unbox(ref_grads))
    assert len(flat) == len(ref_flat) > 50
    for got, want in zip(flat, ref_flat):
        scale = float(jnp.abs(want).max()) + 1e-6
        np.testing.assert_allclose(np.asarray(got) / scale, np.asarray(want) / scale, atol=1e-4)


def test_partitioned_step_does_not_call_kernels():
    """Under a multi-device mesh the model lowers to XLA ops only (sharded, no gathered FFI operands)."""
    model, batch, variables = _tiny_seamo()
    rules = get_config().sharding_rules
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        text = jax.jit(lambda v: model.apply(v, batch)[0]).lower(variables).as_text()
    assert "seamo_" not in text and "dot_general" in text


def test_unavailable_kernels_fall_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(build, "_state", {"library": None, "error": "FileNotFoundError: no C++ compiler found"})
    monkeypatch.setattr(kernels.ops, "_warned", False)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert not kernels.enabled(jnp.float32)
    x = jnp.ones((4, 3))
    dense = layers.DenseND((2,), 1, ("embed", "mlp"), ("mlp",))
    params = dense.init(jax.random.key(0), x)
    assert "seamo_" not in jax.jit(dense.apply).lower(params, x).as_text()


def test_library_cache_key_and_reuse(tmp_path, monkeypatch):
    compiler = build.find_compiler()
    if compiler is None or build.load() is None:
        pytest.skip(f"CPU kernels unavailable: {build.load_error()}")
    monkeypatch.setenv("SEAMO_KERNEL_CACHE", str(tmp_path))
    path = build.library_path(compiler)
    assert path.parent == tmp_path and path == build.library_path(compiler)
    built = build.build(compiler, path)
    mtime = built.stat().st_mtime_ns
    assert build.build(compiler, path).stat().st_mtime_ns == mtime  # second call reuses the file
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no temporary left behind
    assert os.access(built, os.R_OK)
