"""`seamo export --checkpoint DIR --out DIR`: checkpoint -> safetensors + timm ViT + model card.

Writes into `out_dir`:

    encoder.safetensors        the Flax encoder tree, flat names "encoder/blocks/blocks/attn/qkv/kernel"
                               (all modalities' tokenizers, season/modality embeddings, blocks, norm)
    timm_vit_s2.safetensors    timm VisionTransformer state dict of the S2-only, season-0 encoder
                               (see timm_convert.py; constructor kwargs in the model card)
    s1_fusion.safetensors      what the timm ViT cannot hold: the other modalities' tokenizers,
                               season / modality embedding tables and the TM fusion blocks
                               (flat Flax names)
    model_card.json            sensor specs, timm kwargs, training config, data, step, file list

The MAE decoders are pretraining-only and are not exported.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from seamo_jax.export import model_card, tensor_files, timm_convert
from seamo_jax.paths import PathLike, user_path
from seamo_jax.train import checkpoint as checkpoint_lib

ENCODER_FILE = "encoder.safetensors"
TIMM_FILE_TEMPLATE = "timm_vit_{modality}.safetensors"
EXTRAS_FILE = "s1_fusion.safetensors"
CARD_FILE = "model_card.json"


def model_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The model's param dict, whether given as variables {"params": {...}} or the params themselves."""
    params = dict(params)
    if set(params) == {"params"}:
        params = dict(params["params"])
    if "encoder" not in params:
        raise KeyError(f"no 'encoder' subtree in the checkpoint params; top-level keys: {sorted(params)}")
    return params


def _numpy_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _numpy_tree(v) if isinstance(v, Mapping) else np.asarray(v) for k, v in tree.items()}


def extras_tensors(params: Mapping[str, Any], exported_modality: str) -> dict[str, np.ndarray]:
    """Flat tensors the timm ViT does not hold: other tokenizers, season/modality tables, fusion blocks."""
    encoder = params["encoder"]
    extras = {f"encoder/{name}": subtree for name, subtree in encoder.items()
              if (name.startswith("patch_embed_") and name != f"patch_embed_{exported_modality}")
              or name in ("season_embed", "modality_embed")}
    extras.update({name: subtree for name, subtree in params.items() if "fusion" in name})
    flat: dict[str, np.ndarray] = {}
    for name, subtree in sorted(extras.items()):
        if isinstance(subtree, Mapping):
            flat.update(tensor_files.flatten_tree(subtree, name))
        else:
            flat[name] = np.asarray(subtree)
    return flat


def export(checkpoint_dir: PathLike, out_dir: PathLike, *, step: int | None = None,
           timm_modality: str = "s2") -> dict:
    """Exports a training checkpoint (latest step unless `step`); returns the model card dict."""
    step = checkpoint_lib.latest_complete_step(checkpoint_dir) if step is None else step
    params, config, specs = checkpoint_lib.load_params(checkpoint_dir, step=step)
    return export_params(_numpy_tree(model_params(params)), config, specs, out_dir, step=step,
                         timm_modality=timm_modality, source=str(user_path(checkpoint_dir)))


def export_params(params: Mapping[str, Any], config: Any, specs: Mapping[str, Any], out_dir: PathLike, *,
                  step: int | None, timm_modality: str = "s2", source: str = "") -> dict:
    """Writes the export files for an in-memory params tree (numpy leaves).

    Args:
      params: model params with an `encoder` subtree.
      config: the training ConfigDict (needs data.modalities, data.crop_size, model.patch_size).
      specs: modality -> SensorSpec the model was trained on.
    """
    out_dir = user_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = params["encoder"]
    modalities = tuple(config.data.modalities)
    image_size, patch_size = int(config.data.crop_size), int(config.model.patch_size)
    files = {"encoder": ENCODER_FILE}
    tensor_files.save_tensors(out_dir / ENCODER_FILE, tensor_files.flatten_tree(encoder, "encoder"),
                              metadata={"format": "seamo_jax flax encoder", "separator": "/"})
    timm = None
    if f"patch_embed_{timm_modality}" in encoder:
        timm_file = TIMM_FILE_TEMPLATE.format(modality=timm_modality)
        state = timm_convert.to_timm_state_dict(encoder, modality=timm_modality, modalities=modalities,
                                                image_size=image_size, patch_size=patch_size)
        tensor_files.save_tensors(out_dir / timm_file, state, metadata={"format": "pt"})
        files["timm"] = timm_file
        timm = timm_convert.timm_kwargs(encoder, modality=timm_modality, image_size=image_size,
                                        patch_size=patch_size)
    extras = extras_tensors(params, timm_modality)
    if extras:
        tensor_files.save_tensors(out_dir / EXTRAS_FILE, extras, metadata={"format": "seamo_jax flax", "separator": "/"})
        files["extras"] = EXTRAS_FILE
    card = model_card.build_card(config, specs, step=step, timm_modality=timm_modality, timm_kwargs=timm,
                                 files=files, source=source)
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True))
    return card
