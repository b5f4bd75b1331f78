"""Export: file names/shapes, numpy loader round trip, timm parity (torch extra)."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seamo_jax import configs, models, sensors
from seamo_jax.evaluate import encoders
from seamo_jax.export import exporter, tensor_files, timm_convert
from seamo_jax.models.sizes import ViTSize

TINY = ViTSize(width=32, depth=2, num_heads=4, mlp_dim=64)
IMAGE, PATCH = 16, 4


def _config(modalities=("s2", "s1"), seasons=4, fusion="tm", scan=True) -> ml_collections.ConfigDict:
    config = configs.base_config()
    config.data.update(dict(modalities=modalities, seasons=seasons, crop_size=IMAGE))
    config.model.update(dict(size="tiny", patch_size=PATCH, fusion=fusion, num_fusion_blocks=1, decoder_dim=16,
                             decoder_depth=1, decoder_heads=2, scan_layers=scan, num_seasons=0))
    return config


def _model_and_params(config, seed=0):
    """Tiny model with every param perturbed (zero biases / unit norms would hide mapping errors)."""
    data = config.data
    model = models.build_model(config.model, modalities=data.modalities,
                               in_chans={m: sensors.get_sensor(data.sensors[m]).num_bands for m in data.modalities},
                               num_seasons=data.seasons, image_size=data.crop_size, mask_ratio=0.75)
    model = model.clone(size=TINY)
    source = encoders.EncoderSource(model, config.model, tuple(data.modalities), data.seasons, data.crop_size, {})
    variables = encoders.random_init(source, seed, full=True)
    leaves, treedef = jax.tree.flatten(variables)
    rng = np.random.default_rng(seed)
    leaves = [np.asarray(x + rng.normal(0, 0.1, x.shape), np.float32) for x in leaves]
    return model, jax.tree.unflatten(treedef, leaves)


def _specs(config):
    return {m: sensors.get_sensor(config.data.sensors[m]) for m in config.data.modalities}


@pytest.mark.parametrize("scan", [True, pytest.param(False, marks=pytest.mark.slow)])  # unrolled: ~30 s more
def test_export_files_names_and_shapes(tmp_path, scan):
    config = _config(scan=scan)
    _, variables = _model_and_params(config)
    card = exporter.export_params(variables["params"], config, _specs(config), tmp_path, step=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["encoder.safetensors", "timm_vit_s2.safetensors", "s1_fusion.safetensors", "model_card.json"])
    timm_state = tensor_files.load_numpy(tmp_path / "timm_vit_s2.safetensors")
    D, T = TINY.width, (IMAGE // PATCH) ** 2
    assert timm_state["cls_token"].shape == (1, 1, D)
    assert timm_state["pos_embed"].shape == (1, 1 + T, D)
    np.testing.assert_array_equal(timm_state["pos_embed"][0, 0], 0.0)  # cls gets no position
    assert timm_state["patch_embed.proj.weight"].shape == (D, 13, PATCH, PATCH)
    assert timm_state["blocks.1.attn.qkv.weight"].shape == (3 * D, D)
    assert timm_state["blocks.1.attn.qkv.bias"].shape == (3 * D,)
    assert timm_state["blocks.0.attn.proj.weight"].shape == (D, D)
    assert timm_state["blocks.0.mlp.fc1.weight"].shape == (TINY.mlp_dim, D)
    assert timm_state["blocks.0.mlp.fc2.weight"].shape == (D, TINY.mlp_dim)
    assert timm_state["norm.weight"].shape == (D,)
    assert "blocks.2.norm1.weight" not in timm_state
    extras = tensor_files.load_numpy(tmp_path / "s1_fusion.safetensors")
    assert extras["encoder/patch_embed_s1/kernel"].shape == (PATCH, PATCH, 2, D)
    assert extras["encoder/season_embed"].shape == (4, D)
    assert extras["encoder/modality_embed"].shape == (2, D)
    assert any(name.startswith("fusion/") for name in extras)
    assert not any("patch_embed_s2" in name or "decoder" in name for name in extras)
    # Flax tree round trip through the numpy loader.
    nested = tensor_files.load_numpy(tmp_path / "encoder.safetensors", nested=True)
    np.testing.assert_array_equal(nested["encoder"]["cls_token"], variables["params"]["encoder"]["cls_token"])
    on_disk = json.loads((tmp_path / "model_card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert on_disk["step"] == 7 and on_disk["image_size"] == IMAGE and on_disk["patch_size"] == PATCH
    assert on_disk["sensors"]["s2"]["bands"] == list(sensors.S2_L1C.bands)
    assert on_disk["sensors"]["s2"]["normalisation"]["mean"] == list(sensors.S2_L1C.mean)
    assert on_disk["timm"]["kwargs"]["depth"] == 2 and on_disk["timm"]["kwargs"]["num_heads"] == 4
    assert on_disk["training_config"]["model"]["patch_size"] == PATCH


def test_position_table_folds_season_and_modality_embeddings():
    config = _config()
    _, variables = _model_and_params(config)
    encoder = variables["params"]["encoder"]
    table = timm_convert.position_table(encoder, modality="s2", modalities=("s2", "s1"), image_size=IMAGE,
                                        patch_size=PATCH)
    bare = {k: v for k, v in encoder.items() if k not in ("season_embed", "modality_embed")}
    plain = timm_convert.position_table(bare, modality="s2", modalities=("s2", "s1"), image_size=IMAGE,
                                        patch_size=PATCH)
    np.testing.assert_allclose(table[0, 1:] - plain[0, 1:],
                               np.broadcast_to(encoder["season_embed"][0] + encoder["modality_embed"][0],
                                               plain[0, 1:].shape), atol=1e-6)


def _flax_s2_tokens(model, variables, images):
    """Flax encode of S2-only, season 0 views -> (cls [B, D], patch tokens [B, T, D])."""
    views = {"s2": jnp.asarray(images)[:, None]}
    offsets = jnp.zeros((len(images), 1, 2), jnp.int32)
    tokens, cls = model.apply(variables, views, offsets, method="encode", modalities=("s2",), seasons=(0,), pool="cls")
    return np.asarray(cls), np.asarray(tokens)


@pytest.mark.torch
@pytest.mark.parametrize("modalities,seasons,fusion", [(("s2", "s1"), 4, "tm"), (("s2",), 1, "none")])
def test_timm_parity(tmp_path, modalities, seasons, fusion):
    torch = pytest.importorskip("torch")
    vision_transformer = pytest.importorskip("timm.models.vision_transformer")
    config = _config(modalities=modalities, seasons=seasons, fusion=fusion)
    model, variables = _model_and_params(config, seed=1)
    card = exporter.export_params(variables["params"], config, _specs(config), tmp_path, step=0)
    state = tensor_files.load_numpy(tmp_path / card["files"]["timm"])
    vit = vision_transformer.VisionTransformer(**card["timm"]["kwargs"])
    missing, unexpected = vit.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    assert not missing and not unexpected
    vit.eval()
    images = np.random.default_rng(2).normal(size=(3, IMAGE, IMAGE, 13)).astype(np.float32)
    with torch.no_grad():
        timm_tokens = vit.forward_features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    cls, tokens = _flax_s2_tokens(model, variables, images)
    np.testing.assert_allclose(timm_tokens[:, 0], cls, atol=1e-4, rtol=0)
    np.testing.assert_allclose(timm_tokens[:, 1:], tokens, atol=1e-4, rtol=0)
    # The comparison is sensitive: a wrong season embedding changes the tokens.
    if seasons > 1:
        other_season = model.apply(variables, {"s2": jnp.asarray(images)[:, None].repeat(2, 1)},
                                   jnp.zeros((3, 2, 2), jnp.int32), method="encode", modalities=("s2",),
                                   seasons=(1,))[0]
        assert np.abs(np.asarray(other_season) - timm_tokens[:, 1:]).max() > 1e-3


@pytest.mark.parametrize("modalities,seasons,fusion", [(("s2", "s1"), 4, "tm"), (("s2",), 1, "none")])
def test_numpy_forward_of_the_timm_export_matches_flax(tmp_path, modalities, seasons, fusion):
    """Numpy only: the exported timm-named weights, run by export/numpy_vit.py, give the Flax encoder's tokens."""
    from seamo_jax.export import numpy_vit

    config = _config(modalities=modalities, seasons=seasons, fusion=fusion)
    model, variables = _model_and_params(config, seed=1)
    card = exporter.export_params(variables["params"], config, _specs(config), tmp_path, step=0)
    state = tensor_files.load_numpy(tmp_path / card["files"]["timm"])
    images = np.random.default_rng(2).normal(size=(3, IMAGE, IMAGE, 13)).astype(np.float32)
    tokens = numpy_vit.forward_features(state, images, num_heads=card["timm"]["kwargs"]["num_heads"])
    cls, flax_tokens = _flax_s2_tokens(model, variables, images)
    np.testing.assert_allclose(tokens[:, 0], cls, atol=1e-4, rtol=0)
    np.testing.assert_allclose(tokens[:, 1:], flax_tokens, atol=1e-4, rtol=0)
    if seasons > 1:  # sensitive: season 1's embedding gives other tokens
        other = model.apply(variables, {"s2": jnp.asarray(images)[:, None].repeat(2, 1)},
                            jnp.zeros((3, 2, 2), jnp.int32), method="encode", modalities=("s2",), seasons=(1,))[0]
        assert np.abs(np.asarray(other) - tokens[:, 1:]).max() > 1e-3
