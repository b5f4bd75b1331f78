"""Compiled pieces of one fine-tune: sharded state, jitted train step, jitted logits, encoder restore.

Everything here is built once per (model, input set, recipe, schedule
length, mesh) and cached (`get_trainer`), so the runs of a sweep that share
a schedule (seeds, and label fractions under a fixed `finetune.num_steps`)
reuse one compilation.

State: pretraining's `train/state.TrainState` (step, params {"encoder",
"classifier"}, opt_state, rng: raw uint32 [2] key; per-step keys
fold_in(rng, step)). Params are born in their NamedShardings (`jit(out_shardings=...)`,
from the logical axes of the model and head through `config.sharding_rules`);
the optimiser state is sharded like the params (parallel.like_params_shardings).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from seamo_jax import models, parallel
from seamo_jax.data.global_batch import loader_shard, to_global_batch
from seamo_jax.finetune import data as data_lib
from seamo_jax.finetune import head as head_lib
from seamo_jax.models import layer_layout
from seamo_jax.paths import PathLike
from seamo_jax.train import checkpoint as checkpoint_lib
from seamo_jax.train.optimizer import make_optimizer
from seamo_jax.train.state import TrainState, create_train_state, state_shardings, step_key
from seamo_jax.train.step import tracing_context

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The hashable optimisation settings of a run (what the compiled step depends on)."""

    learning_rate: float
    end_lr_ratio: float
    warmup_steps: int
    num_steps: int
    weight_decay: float
    b1: float
    b2: float
    clip_grad_norm: float
    layer_decay: float
    label_smoothing: float

    def optim_config(self) -> ml_collections.ConfigDict:
        """The keys `train/optimizer.make_optimizer` reads (those of config.optim)."""
        return ml_collections.ConfigDict({
            "learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
            "end_lr_ratio": self.end_lr_ratio, "weight_decay": self.weight_decay, "b1": self.b1, "b2": self.b2,
            "clip_grad_norm": self.clip_grad_norm, "layer_decay": self.layer_decay})


def _abstract_encoder(model: nn.Module) -> PyTree:
    """Boxed (logically partitioned) abstract encoder params of `model` (every tokenizer and season row)."""
    batch = models.example_batch(model, batch_size=1)
    return jax.eval_shape(lambda key: model.init(key, batch["views"], batch["offsets"], method="encode"),
                          jax.random.PRNGKey(0))["params"]["encoder"]


def expected_encoder_shapes(model: nn.Module) -> PyTree:
    """ShapeDtypeStructs of the encoder params `model` builds (its block layout)."""
    return nn.meta.unbox(_abstract_encoder(model))


def check_checkpoint_encoder(checkpoint_dir: PathLike, step: int, model: nn.Module) -> None:
    """ValueError (models.check_params_tree's, naming the first differing leaf) unless the checkpoint's
    encoder params have exactly the model's tree; reads only the checkpoint's metadata."""
    directory = checkpoint_lib.resolve_checkpoint_dir(checkpoint_dir)
    saved = ocp.PyTreeCheckpointer().metadata(directory / str(step) / "state").item_metadata.tree["params"]
    what = f"encoder params of {checkpoint_dir}"
    if "encoder" not in saved:
        raise ValueError(f"{what}: the checkpoint (step {step}) has no 'encoder' params; "
                         f"not a SeaMo pretraining checkpoint?")
    expected = layer_layout.match_layout(expected_encoder_shapes(model), like=saved["encoder"])
    models.check_params_tree(saved["encoder"], expected, what=what)


class Trainer:
    """Sharded state, train step and logits of one (model, input set, recipe) on a mesh. Use `get_trainer`."""

    def __init__(self, model: nn.Module, head: head_lib.ClassifierHead, modalities: tuple[str, ...],
                 seasons: tuple[int, ...], pool: str, task: str, recipe: Recipe, mesh: Mesh, rules: tuple,
                 activation_constraints: bool):
        self.model, self.head, self.modalities, self.seasons = model, head, modalities, seasons
        self.pool, self.task, self.recipe, self.mesh, self.rules = pool, task, recipe, mesh, rules
        self.activation_constraints = activation_constraints
        self.batch_axes = parallel.batch_mesh_axes(rules)
        self.batch_sharding = parallel.batch_sharding(mesh, self.batch_axes)
        self.data_shards = parallel.data_parallel_size(mesh, self.batch_axes)
        self.shard = loader_shard(self.batch_sharding)
        self.tx, self.schedule = make_optimizer(recipe.optim_config(), recipe.num_steps)
        replicated = parallel.replicated(mesh)

        width = model.size.width
        boxed = {"encoder": _abstract_encoder(model),
                 "classifier": jax.eval_shape(lambda key: head.init(key, jnp.zeros((1, width), jnp.float32)),
                                              jax.random.PRNGKey(0))["params"]}
        self.params_shardings = parallel.logical_shardings(boxed, mesh, rules)
        self.abstract_params = checkpoint_lib.abstract_with_shardings(nn.meta.unbox(boxed), self.params_shardings)
        abstract_state = jax.eval_shape(self._make_state, self.abstract_params["encoder"],
                                        self.abstract_params["classifier"], jax.ShapeDtypeStruct((2,), jnp.uint32))
        self.state_shardings = state_shardings(abstract_state, self.params_shardings, mesh)
        self.abstract_state = checkpoint_lib.abstract_with_shardings(abstract_state, self.state_shardings)

        enc_shardings, cls_shardings = self.params_shardings["encoder"], self.params_shardings["classifier"]
        example = models.example_batch(model, batch_size=1)
        self._init_encoder = jax.jit(
            lambda key: nn.meta.unbox(model.init(key, example["views"], example["offsets"], method="encode"))
            ["params"]["encoder"], out_shardings=enc_shardings)
        self._init_classifier = jax.jit(
            lambda key: nn.meta.unbox(head.init(key, jnp.zeros((1, width), jnp.float32)))["params"],
            out_shardings=cls_shardings)
        self._new_state = jax.jit(self._make_state, out_shardings=self.state_shardings)
        self._step = jax.jit(self._train_step, in_shardings=(self.state_shardings, self.batch_sharding),
                             out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
        self._logits = jax.jit(self._eval_logits, in_shardings=(self.params_shardings, self.batch_sharding,
                                                                self.batch_sharding), out_shardings=replicated)
        self._copy_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=self.params_shardings)
        self._stacked_encoder = None

    # ---- state ----
    def _make_state(self, encoder: PyTree, classifier: PyTree, rng: jax.Array) -> TrainState:
        # Copies: the pretrained encoder arrays seed every run of a sweep and the train step donates its state.
        params = jax.tree.map(jnp.copy, {"encoder": encoder, "classifier": classifier})
        return create_train_state(params, self.tx, jnp.asarray(rng, jnp.uint32))

    def random_encoder(self, seed: int) -> PyTree:
        """Encoder params of `model.init(PRNGKey(seed))`, sharded: the probe's random init of that seed."""
        return self._init_encoder(jax.random.PRNGKey(int(seed)))

    def restore_encoder(self, checkpoint_dir: PathLike, step: int) -> PyTree:
        """The checkpoint's encoder params read straight into their NamedShardings (train/checkpoint.restore_params).

        Call `check_checkpoint_encoder` first: this reads the leaves the model has.
        """
        target = {"encoder": self.abstract_params["encoder"]}
        restored, _ = checkpoint_lib.restore_params(checkpoint_dir, target, step=step)
        encoder = restored["encoder"]
        if layer_layout.is_unrolled(encoder) != layer_layout.is_unrolled(target["encoder"]):
            like = target["encoder"]
            encoder = jax.jit(lambda t: layer_layout.match_layout(t, like=like),
                              out_shardings=self.params_shardings["encoder"])(encoder)
        return encoder

    def new_state(self, encoder: PyTree, seed: int) -> TrainState:
        """Fresh run state: `encoder` (copied), a head from seed, the run's rng from seed."""
        base = jax.random.PRNGKey(int(seed))
        classifier = self._init_classifier(jax.random.fold_in(base, 1))
        return self._new_state(encoder, classifier, jax.random.fold_in(base, 2))  # raw uint32 [2] key data

    def copy_params(self, params: PyTree) -> PyTree:
        return self._copy_params(params)

    # ---- step ----
    def _train_step(self, state: TrainState, batch: Mapping[str, Any]) -> tuple[TrainState, dict]:
        key = step_key(state)

        def objective(params):
            logits = head_lib.logits_fn(self.model, self.head, self.modalities, self.seasons, self.pool, params,
                                        batch["views"], batch["offsets"], train=True, key=key)
            loss = head_lib.loss_fn(self.task, logits, batch["target"], label_smoothing=self.recipe.label_smoothing)
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss.astype(jnp.float32), "lr": jnp.asarray(self.schedule(state.step), jnp.float32),
                   "grad_norm": optax.global_norm(grads).astype(jnp.float32),
                   "param_norm": optax.global_norm(params).astype(jnp.float32),
                   "train_batch_accuracy": head_lib.batch_metric(self.task, logits, batch["target"])}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def step(self, state: TrainState, batch: Mapping[str, Any]) -> tuple[TrainState, dict]:
        """One optimiser update on a global batch; donates `state`."""
        with tracing_context(self.mesh, self.rules, self.activation_constraints):
            return self._step(state, batch)

    # ---- evaluation ----
    def _eval_logits(self, params: PyTree, views: Mapping[str, Any], offsets: Any) -> jax.Array:
        return head_lib.logits_fn(self.model, self.head, self.modalities, self.seasons, self.pool, params, views,
                                  offsets, train=False)

    def to_global(self, local: Any) -> Any:
        return to_global_batch(local, self.batch_sharding)

    def global_batch(self, arrays: Mapping[str, Any], rows: np.ndarray, *, target_key: str, seed: int, step: int,
                     augment: bool) -> dict:
        """Global batch of `rows` (this process loads its block)."""
        local = data_lib.local_batch(arrays, rows, modalities=self.modalities, target_key=target_key, seed=seed,
                                     step=step, augment=augment, shard_index=self.shard.index,
                                     shard_count=self.shard.count)
        return self.to_global(local)

    def logits(self, params: PyTree, arrays: Mapping[str, Any], rows: np.ndarray, *, target_key: str,
               batch_size: int) -> np.ndarray:
        """float32 [len(rows), K] logits of `rows`, in batches of `batch_size` (rounded up to the data shards).

        The last batch is padded with copies of its first row (real data, so nothing non-finite) and the
        padding outputs are dropped; one compilation serves every batch.
        """
        batch_size = -(-max(int(batch_size), 1) // self.data_shards) * self.data_shards
        outputs = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            padded = np.concatenate([chunk, np.full(batch_size - len(chunk), chunk[0], chunk.dtype)])
            batch = self.global_batch(arrays, padded, target_key=target_key, seed=0, step=0, augment=False)
            with tracing_context(self.mesh, self.rules, self.activation_constraints):
                out = self._logits(params, batch["views"], batch["offsets"])
            outputs.append(np.asarray(jax.device_get(out), np.float32)[:len(chunk)])
        return np.concatenate(outputs, 0)


@functools.lru_cache(maxsize=16)
def get_trainer(model: nn.Module, head: head_lib.ClassifierHead, modalities: tuple[str, ...],
                seasons: tuple[int, ...], pool: str, task: str, recipe: Recipe, mesh: Mesh, rules: tuple,
                activation_constraints: bool) -> Trainer:
    """One Trainer (and its compilations) per distinct argument tuple, reused across runs and calls."""
    return Trainer(model, head, modalities, seasons, pool, task, recipe, mesh, rules, activation_constraints)


__all__ = ["Recipe", "Trainer", "check_checkpoint_encoder", "expected_encoder_shapes", "get_trainer"]
