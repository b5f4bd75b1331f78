"""The encoders a probe compares: pretrained checkpoint vs random init of the same architecture.

A probe number alone does not show what pretraining bought; the same probe
on a randomly initialised encoder of the *same* architecture and config (and
on band statistics, see band_stats.py) does. Both encoders here are built
from one model config — the checkpoint's when there is one — so the only
difference is the weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from seamo_jax import models, sensors
from seamo_jax.train import checkpoint as checkpoint_lib

PyTree = Any


@dataclasses.dataclass
class EncoderSource:
    """A model definition plus, when pretrained, its params.

    Attributes:
      model: the SeaMo module (build_model), used through method="encode".
      model_config: config.model it was built from.
      modalities / num_seasons / image_size: the training data layout.
      sensor_specs: modality -> SensorSpec the weights were trained on.
      pretrained: {"params": ...} of the checkpoint, or None (random-init only).
      checkpoint_dir, step: where the weights came from.
    """

    model: Any
    model_config: Any
    modalities: tuple[str, ...]
    num_seasons: int
    image_size: int
    sensor_specs: dict[str, sensors.SensorSpec]
    pretrained: PyTree | None = None
    checkpoint_dir: str | None = None
    step: int | None = None


def load_encoder_source(config: Any, checkpoint_dir: str | None, step: int | None = None) -> EncoderSource:
    """Reads the checkpoint (when given) or falls back to `config`'s model for a random-init-only run."""
    if checkpoint_dir:
        params, train_config, specs = checkpoint_lib.load_params(checkpoint_dir, step=step)
        params = dict(params)
        variables = params if set(params) == {"params"} else {"params": params}
        variables = jax.tree.map(np.asarray, variables)
        step = checkpoint_lib.latest_complete_step(checkpoint_dir) if step is None else step
    else:
        train_config, variables = config, None
        specs = checkpoint_lib.sensor_specs_from_config(config.data)
    data = train_config.data
    model = models.build_model_from_config(train_config, specs)
    if variables is not None:  # the probe reads the encoder: its tree must be the model's, leaf for leaf
        batch = models.example_batch(model)
        expected = jax.eval_shape(lambda key: model.init(key, batch["views"], batch["offsets"], method="encode"),
                                  jax.random.key(0))
        models.check_params_tree(variables["params"]["encoder"], nn.meta.unbox(expected)["params"]["encoder"],
                                 what=f"encoder params of {checkpoint_dir}")
    return EncoderSource(model=model, model_config=train_config.model,
                         modalities=tuple(data.modalities), num_seasons=int(data.seasons),
                         image_size=int(data.crop_size), sensor_specs=dict(specs), pretrained=variables,
                         checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, step=step)


def random_init(source: EncoderSource, seed: int, full: bool = False) -> PyTree:
    """Freshly initialised variables of the same model (numpy leaves), from PRNGKey(seed).

    By default only the encoder is initialised (through `encode` with every
    modality and season present, so every tokenizer and embedding table is
    created): it is all a probe reads, and compiles far faster than the full
    model with fusion and decoders. Flax derives each submodule's init RNG
    from its path, so the encoder params are the same either way. `full=True`
    initialises the whole pretraining model (export tests).
    """
    variables = _init_fn(source.model, full)(jax.random.PRNGKey(seed))
    # Unbox logical-axis metadata: apply() accepts both, and plain arrays hash/serialise simply.
    return jax.tree.map(np.asarray, nn.meta.unbox(variables))


@functools.lru_cache(maxsize=8)
def _init_fn(model: Any, full: bool):
    """One jitted init per (model, full): seeds reuse the compilation."""
    batch = models.example_batch(model, batch_size=1)
    if full:
        return jax.jit(lambda key: model.init(key, batch))
    return jax.jit(lambda key: model.init(key, batch["views"], batch["offsets"], method="encode"))


def encoder_variables(variables: PyTree) -> PyTree:
    """The part of the variables `encode` reads ({"params": {"encoder": ...}}): what features depend on."""
    return {"params": {"encoder": variables["params"]["encoder"]}}


def make_encode_fn(model: Any, modalities: Sequence[str], seasons: Sequence[int], pool: str = "mean"):
    """(variables, views, offsets) -> pooled [B, D] for `extract_features`."""
    return functools.partial(_encode_pooled, model, tuple(modalities), tuple(int(s) for s in seasons), pool)


def _encode_pooled(model, modalities, seasons, pool, variables, views, offsets):
    _, pooled = model.apply(variables, views, offsets, method="encode", modalities=modalities, seasons=seasons,
                            pool=pool)
    return pooled
