"""seamo_jax.kernels: the CPU GEMM and attention kernels (XLA FFI) against XLA's own ops.

The kernels are compiled on first use; where that is impossible here (no
compiler, no bundled OpenBLAS) the kernel tests skip with the reason and the
fallback test still runs. The model uses them only with a Backend that has
cpu_kernels=True (models/backend.py); here it is set explicitly.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seamo_jax.experiments.demo_cpu import get_config
from seamo_jax import kernels
from seamo_jax.kernels import build
from seamo_jax.models import Backend, build_model, example_batch, layers, resolve_backend

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
@pytest.mark.parametrize("len_q,len_k,logit_scale,dim", [
    (197, 197, 1.0, 32),  # the MAE decoder's shape: 6 x 16 register tiles plus row/column tails
    (5, 13, 1.0, 8),  # cross-attention, short rows (scalar softmax tail, one 8-wide column block)
    (16, 24, 30.0, 24),  # large logits: softmax must subtract the row max; 16 + 8 wide column blocks
    (9, 11, 1.0, 7),  # head dim not a multiple of 8: the OpenBLAS path
])
def test_attention_matches_jax_dot_product_attention(len_q, len_k, logit_scale, dim):
    rng = np.random.default_rng(len_q)
    batch, heads = 2, 3
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
@pytest.mark.parametrize("shape", [(2, 197, 3, 3, 32), (3, 5, 3, 2, 7)])
def test_self_attention_reads_packed_qkv_like_sliced_attention(shape):
    """kernels.self_attention(qkv) = attention(q, k, v) sliced out of qkv; its gradient is the packed [B, L, 3, H, Dh]."""
    rng = np.random.default_rng(shape[1])
    qkv = _normal(rng, shape)
    cotangent = _normal(rng, shape[:2] + shape[3:])

    def sliced(t):
        return jax.nn.dot_product_attention(t[:, :, 0], t[:, :, 1], t[:, :, 2])

    out = jax.jit(kernels.self_attention)(qkv)
    np.testing.assert_allclose(np.asarray(out), np.asarray(sliced(qkv)), rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(lambda t: jnp.vdot(kernels.self_attention(t), cotangent)))(qkv)
    want = jax.grad(lambda t: jnp.vdot(sliced(t), cotangent))(qkv)
    assert got.shape == qkv.shape
    for part in range(3):  # dq, dk, dv each non-trivial and right
        assert float(jnp.abs(want[:, :, part]).max()) > 1e-3
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="qkv"):
        kernels.self_attention(qkv[:, :, :2])


@needs_kernels
@pytest.mark.parametrize("rows,cols", [(64, 256), (37, 19), (5, 1)])
def test_bias_gelu_matches_exact_gelu(rows, cols):
    rng = np.random.default_rng(cols)
    y, bias = _normal(rng, (rows, cols), 3.0), _normal(rng, (cols,))
    cotangent = _normal(rng, (rows, cols))

    def reference(y, bias):
        return nn.gelu(y + bias, approximate=False)

    np.testing.assert_allclose(np.asarray(jax.jit(kernels.bias_gelu)(y, bias)), np.asarray(reference(y, bias)),
                               rtol=1e-5, atol=2e-6)
    got = jax.jit(jax.grad(lambda y, b: jnp.vdot(kernels.bias_gelu(y, b), cotangent), argnums=(0, 1)))(y, bias)
    want = jax.grad(lambda y, b: jnp.vdot(reference(y, b), cotangent), argnums=(0, 1))(y, bias)
    for mine, ref in zip(got, want):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(ref), rtol=1e-5, atol=2e-6 * max(1.0, rows ** 0.5))
    with pytest.raises(ValueError, match="bias"):
        kernels.bias_gelu(y, bias[:-1] if cols > 1 else jnp.ones(2))


@needs_kernels
def test_bias_gelu_erf_accurate_over_its_range():
    """The kernel's erf approximation, on a dense grid through the clamp at |h| = 4 sqrt 2 and beyond."""
    import math

    grid = np.linspace(-8.0, 8.0, 40001, dtype=np.float32)
    got = np.asarray(jax.jit(kernels.bias_gelu)(jnp.asarray(grid)[None], jnp.zeros(grid.size, jnp.float32)))[0]
    exact = np.array([0.5 * float(h) * math.erfc(-float(h) / math.sqrt(2.0)) for h in grid])
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1.5e-6)


@needs_kernels
@pytest.mark.parametrize("rows,cols,offset", [(300, 384, 0.0), (37, 19, 5.0), (5, 13, 0.0), (3, 1, 0.0)])
def test_layer_norm_matches_flax(rows, cols, offset):
    """Values and the x / scale / bias gradients equal flax's nn.LayerNorm (eps 1e-6), incl. fewer rows than partial blocks."""
    rng = np.random.default_rng(rows)
    x = _normal(rng, (rows, cols), 3.0) + offset
    scale, bias = _normal(rng, (cols,)), _normal(rng, (cols,))
    cotangent = _normal(rng, (rows, cols))
    flax_norm = nn.LayerNorm(epsilon=1e-6)

    def reference(x, scale, bias):
        return flax_norm.apply({"params": {"scale": scale, "bias": bias}}, x)

    def mine(x, scale, bias):
        return kernels.layer_norm(x, scale, bias, 1e-6)

    np.testing.assert_allclose(np.asarray(jax.jit(mine)(x, scale, bias)), np.asarray(reference(x, scale, bias)),
                               rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(lambda *a: jnp.vdot(mine(*a), cotangent), argnums=(0, 1, 2)))(x, scale, bias)
    want = jax.grad(lambda *a: jnp.vdot(reference(*a), cotangent), argnums=(0, 1, 2))(x, scale, bias)
    for got_grad, want_grad in zip(got, want):
        tolerance = 1e-5 * (float(jnp.abs(want_grad).max()) + 1.0)
        np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), rtol=1e-4, atol=tolerance)


@needs_kernels
def test_auto_turns_kernels_on_only_for_single_device_float32_cpu():
    model = get_config().model
    assert resolve_backend(model, 1) == Backend("xla", cpu_kernels=True)
    one_device = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
    assert resolve_backend(model, one_device).cpu_kernels
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    assert resolve_backend(model, mesh) == Backend("xla")  # an FFI call has no sharding rule
    assert not resolve_backend(ml_collections.ConfigDict({**model, "dtype": "bfloat16"}), 1).cpu_kernels
    assert not resolve_backend(model, 1, platform="gpu").cpu_kernels
    assert not resolve_backend(ml_collections.ConfigDict({**model, "cpu_kernels": "off"}), 1).cpu_kernels
    assert resolve_backend(ml_collections.ConfigDict({**model, "cpu_kernels": "on"}), 1).cpu_kernels


def _tiny_seamo(backend: Backend = Backend()):
    model = build_model(get_config().model, modalities=("s2", "s1"), in_chans={"s2": 13, "s1": 2},
                        num_seasons=2, image_size=32, backend=backend, mask_ratio=0.75)
    rng = np.random.default_rng(0)
    batch = example_batch(model, 4)
    batch["views"] = {m: _normal(rng, v.shape) for m, v in batch["views"].items()}
    variables = jax.jit(model.init)(jax.random.key(0), batch)
    return model, batch, variables


def _loss_and_grads(model, batch, variables):
    return jax.jit(jax.value_and_grad(lambda v: model.apply(v, batch)[0]))(variables)


@needs_kernels
@pytest.mark.slow  # the CPU kernels are an optional backend; per-kernel parity tests stay default
def test_seamo_loss_and_grads_same_with_and_without_kernels():
    """The whole tiny SeaMo (encoder, TM fusion cross-attention, decoders) through the kernels = through XLA."""
    model, batch, variables = _tiny_seamo(Backend(cpu_kernels=True))
    generic, _, generic_variables = _tiny_seamo()
    # Same param tree (names, shapes, logical axes): checkpoints do not depend on the backend.
    assert jax.tree.structure(variables) == jax.tree.structure(generic_variables)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, generic_variables)
    lowered = jax.jit(lambda v: model.apply(v, batch)[0]).lower(variables).as_text()
    for target in ("seamo_gemm", "seamo_attention_fwd", "seamo_attention_qkv_fwd", "seamo_bias_gelu_fwd",
                   "seamo_layer_norm_fwd"):
        assert target in lowered
    loss, grads = _loss_and_grads(model, batch, variables)
    assert "seamo_" not in jax.jit(lambda v: generic.apply(v, batch)[0]).lower(variables).as_text()
    ref_loss, ref_grads = _loss_and_grads(generic, batch, variables)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    flat, ref_flat = jax.tree.leaves(nn.meta.unbox(grads)), jax.tree.leaves(nn.meta.unbox(ref_grads))
    assert len(flat) == len(ref_flat) > 50
    for got, want in zip(flat, ref_flat):
        scale = float(jnp.abs(want).max()) + 1e-6
        np.testing.assert_allclose(np.asarray(got) / scale, np.asarray(want) / scale, atol=1e-4)


@pytest.mark.slow  # optional CPU backend
def test_partitioned_step_does_not_call_kernels():
    """The backend resolved for a multi-device mesh lowers to XLA ops only (sharded, no gathered FFI operands)."""
    config = get_config()
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    backend = resolve_backend(config.model, mesh)
    assert backend == Backend("xla")
    model, batch, variables = _tiny_seamo(backend)
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.sharding_rules):
        text = jax.jit(lambda v: model.apply(v, batch)[0]).lower(variables).as_text()
    assert "seamo_" not in text and "dot_general" in text


def test_unavailable_kernels_fall_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(build, "_state", {"library": None, "error": "FileNotFoundError: no C++ compiler found"})
    model = get_config().model
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert resolve_backend(model, 1) == Backend("xla")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        resolve_backend(ml_collections.ConfigDict({**model, "cpu_kernels": "on"}), 1)
    with pytest.raises(RuntimeError, match="unavailable"):  # a direct call never lowers to an unregistered target
        kernels.gemm(jnp.ones((4, 3)), jnp.ones((3, 2)))
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
