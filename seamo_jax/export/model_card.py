"""model_card.json: everything a user needs to feed an exported encoder correctly.

A ViT trained on normalised 13-band L1C reflectances silently produces
garbage on 12-band L2A or unnormalised input, so the card records, per
modality, the sensor spec (band names in channel order, level, units,
normalisation mean/std, GSD), plus patch and image size, the timm
constructor arguments, the training config, the pretraining data and the
step.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from seamo_jax.models.from_config import num_seasons_of

CARD_VERSION = 1


def _config_dict(config: Any) -> dict:
    """ConfigDict / dict -> JSON-safe dict (tuples become lists)."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config, default=str))


def build_card(config: Any, specs: Mapping[str, Any], *, step: int | None, timm_modality: str,
               timm_kwargs: Mapping[str, Any] | None, files: Mapping[str, str], source: str = "") -> dict:
    """Assembles the JSON-ready card.

    Args:
      config: training ConfigDict (data, model, ... sections).
      specs: modality -> seamo_jax.sensors.SensorSpec the checkpoint was trained on.
      step: training step of the exported params.
      timm_modality: modality of the timm ViT export; timm_kwargs its constructor args (None: not exported).
      files: role -> file name in the export dir.
    """
    data = config.data
    sensors = {}
    for modality, spec in specs.items():
        sensors[modality] = {
            "sensor": spec.name, "level": spec.level, "bands": list(spec.bands), "units": spec.units,
            "input_dtype": spec.dtype,  # the encoder reads values in `units`; records may store codes:
            "record_storage": [{"dtype": d, "value": f"code * {scale} + {offset}"} for d, scale, offset in spec.storage],
            "gsd_m": list(spec.gsd_m), "wavelength_nm":
                None if spec.wavelength_nm is None else list(spec.wavelength_nm),
            "normalisation": {"formula": "(x - mean) / std per band, channels last",
                              "mean": list(spec.mean), "std": list(spec.std)},
        }
    card = {
        "card_version": CARD_VERSION,
        "model": "SeaMo encoder (seamo_jax)",
        "step": step,
        "source_checkpoint": source,
        "files": dict(files),
        "modalities": list(data.modalities),
        "num_seasons": num_seasons_of(config),  # season-embedding rows (phase 1 carries phase 2's table)
        "image_size": int(data.crop_size),
        "patch_size": int(config.model.patch_size),
        "model_size": str(config.model.size),
        "sensors": sensors,
        "data": {"builder": str(data.builder), "split": str(data.split),
                 "seasons": int(data.seasons), "overlap_range": list(data.overlap_range),
                 "region_selection": str(data.region_selection),
                 "region_reading": str(data.region_reading)},
        "encoder": {"season_encoding": str(config.model.season_encoding),
                    "position_frame": str(config.model.position_frame)},
        "training_config": _config_dict(config),
    }
    if timm_kwargs is not None:
        card["timm"] = {
            "modality": timm_modality,
            "class": "timm.models.vision_transformer.VisionTransformer",
            "kwargs": dict(timm_kwargs),
            "input": f"NCHW float32, {timm_modality} bands in `sensors.{timm_modality}.bands` order, normalised",
            "notes": "pos_embed = sin-cos at crop offset 0 + season-0 and modality embeddings; cls position is zero",
        }
    return card
