"""`run_pretraining(config, workdir)`: the SeaMo pretraining loop.

data (Grain, per-process shard) -> global batch on the mesh -> jitted,
state-donating train step -> telemetry / async checkpoints / recon images.
Resumes automatically from the newest complete checkpoint in the workdir
(params, optimiser state, step, RNG and the Grain iterator position), so a
killed-and-resumed run produces bitwise the same params as a straight one on
the same mesh.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from seamo_jax.train import checkpoint as ckpt_lib
from seamo_jax.train.preemption import PreemptionWatcher
from seamo_jax.train.recon_images import write_recon_images
from seamo_jax.train.setup import TrainSetup, build_train_setup
from seamo_jax.train.telemetry import Telemetry


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; training stopped, the last good checkpoint is kept."""


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
    """config.data.data_dir, else $SEAMO_DATA_DIR, else <workdir>/tfds."""
    if config.data.get("data_dir"):
        return pathlib.Path(config.data.data_dir).expanduser()
    if os.environ.get("SEAMO_DATA_DIR"):
        return pathlib.Path(os.environ["SEAMO_DATA_DIR"]).expanduser()
    return workdir / "tfds"


def builder_kwargs(data_config: Any) -> dict[str, Any]:
    """Builder constructor arguments: config.data.builder_kwargs, else for
    synthetic_seasons the generator settings in config.data.synthetic."""
    explicit = data_config.get("builder_kwargs", None)
    if explicit:
        return dict(explicit)
    if data_config.builder == "synthetic_seasons" and data_config.get("synthetic", None) is not None:
        return dict(data_config.synthetic)
    return {}


def load_train_source(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> Any:
    """Builds the dataset if missing (`registry.prepare`) and opens the train split."""
    from data_pipelines import registry  # imported late: building needs tfds, only the loop needs it

    data_dir = resolve_data_dir(config, workdir)
    kwargs = builder_kwargs(config.data)
    registry.prepare(config.data.builder, str(data_dir), manual_dir=config.data.get("manual_dir", None) or None,
                     **kwargs)
    return registry.load_source(config.data.builder, config.data.split, str(data_dir), **kwargs)


def _first_rows(array: jax.Array) -> np.ndarray:
    """The addressable shard holding global row 0 (process 0's first sample), as numpy."""
    for shard in array.addressable_shards:
        if shard.index and (shard.index[0].start or 0) == 0:
            return np.asarray(shard.data)
    return np.asarray(array.addressable_shards[0].data)


def _write_recon(setup: TrainSetup, state: Any, batch: Any, local_batch: Any, step: int, out_dir: pathlib.Path) -> None:
    aux = setup.predict(state.params, batch)  # every process joins the computation
    if jax.process_index() != 0:
        return
    preds = {m: _first_rows(p) for m, p in aux["pred"].items()}
    config = setup.config
    write_recon_images(out_dir, step, local_batch["views"], preds, np.asarray(local_batch["mask"]),
                       tuple(config.data.modalities), setup.sensor_specs, int(config.model.patch_size),
                       bool(config.model.get("norm_pix_loss", True)))


# The loss reflects the params *before* an update; grad and param norms catch
# an update that already blew the params up, before they are checkpointed.
_MUST_BE_FINITE = ("loss", "grad_norm", "param_norm")


def _check_finite(history: list[tuple[int, dict]], checkpointer: ckpt_lib.Checkpointer) -> None:
    for step, metrics in history:
        bad = sorted(k for k, v in metrics.items()
                     if (k in _MUST_BE_FINITE or k.startswith("loss/")) and not np.isfinite(v))
        if bad:
            checkpointer.wait()
            last = checkpointer.latest_step()
            where = f"step {last} in {checkpointer.directory}" if last is not None else "none (no checkpoint yet)"
            raise NonFiniteLossError(
                f"loss is {metrics['loss']} at step {step} (non-finite: {bad}); training stopped without saving. "
                f"Last good checkpoint: {where}. Try a lower optim.learning_rate, more optim.warmup_steps, "
                f"optim.clip_grad_norm, or model.dtype='float32'.")


def run_pretraining(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, source: Any = None
                    ) -> dict[str, Any]:
    """Pretrains (or resumes) SeaMo as described by `config` in `workdir`.

    Args:
      source: random-access record source; default: build/open
        `config.data.builder` via `data_pipelines.registry` (tests pass records).

    Returns:
      summary dict: loss_start / loss_end (first and last step of this
      invocation), start_step, final_step, steps (run now), wall_time_s,
      compile_s, images_per_s (steady state), preempted, checkpoint_dir,
      tensorboard_dir, recon_dir, metrics_file.
    Raises:
      NonFiniteLossError: NaN/Inf loss; nothing is saved after the last
        finite check, so the newest checkpoint is a good one.
    """
    wall_start = time.time()
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    train = config.train
    num_steps = int(train.num_steps)
    source = load_train_source(config, workdir) if source is None else source
    setup = build_train_setup(config, workdir, source)
    state, iterator = setup.state, setup.iterator
    start_step = int(jax.device_get(state.step))
    recon_dir = workdir / "recon"
    telemetry = Telemetry(workdir, total_steps=num_steps, start_step=start_step,
                          global_batch_size=int(config.data.batch_size), enabled=jax.process_index() == 0,
                          progress_bar=bool(train.get("progress_bar", True)))
    if setup.warm_start_report:
        r = setup.warm_start_report
        telemetry.message(f"init_from {config.init_from}: copied {len(r['copied'])} params, "
                          f"fresh {len(r['fresh'])}: {r['fresh'][:8]}")
    if start_step:
        telemetry.message(f"resumed from step {start_step} ({setup.checkpointer.directory})")

    log_every, save_every = max(int(train.log_every), 1), max(int(train.checkpoint_every), 1)
    recon_every = int(train.get("recon_every", 0) or 0)
    pending: list[tuple[int, dict]] = []
    loss_start = loss_end = None
    compile_s, steady_start, steady_steps, preempted = 0.0, None, 0, False
    interval_start, interval_steps = time.time(), 0
    step = start_step
    try:
        with PreemptionWatcher(sync_every=int(train.get("preemption_sync_every", 10))) as watcher:
            while step < num_steps:
                local_batch = next(iterator)
                batch = setup.to_global(local_batch)
                state, metrics = setup.train_step(state, batch)
                step += 1
                pending.append((step, metrics))
                if steady_start is None:
                    # First step compiles; keep it out of the throughput numbers.
                    jax.block_until_ready(metrics)
                    compile_s = time.time() - interval_start
                    steady_start, interval_start = time.time(), time.time()
                else:
                    steady_steps += 1
                    interval_steps += 1
                telemetry.advance()
                preempted = watcher.should_stop(step)
                is_last = step == num_steps
                will_save = step % save_every == 0 or is_last or preempted
                if step % log_every == 0 or will_save or loss_start is None:
                    history = [(s, {k: float(v) for k, v in jax.device_get(m).items()}) for s, m in pending]
                    pending.clear()
                    # Check every step since the last check *before* saving, so a
                    # checkpoint never holds params that produced a NaN.
                    _check_finite(history, setup.checkpointer)
                    loss_start = history[0][1]["loss"] if loss_start is None else loss_start
                    loss_end = history[-1][1]["loss"]
                    step_time = (time.time() - interval_start) / interval_steps if interval_steps else compile_s
                    telemetry.log(step, history[-1][1], step_time_s=step_time)
                    interval_start, interval_steps = time.time(), 0
                if will_save:
                    setup.checkpointer.save(step, state, iterator, metrics={"loss": loss_end}, force=True)
                if recon_every and (step % recon_every == 0 or is_last):
                    _write_recon(setup, state, batch, local_batch, step, recon_dir)
                if preempted:
                    telemetry.message(f"preemption signal: saved step {step}, exiting")
                    break
    finally:
        loop_end = time.time()  # before waiting for the last async save
        setup.checkpointer.close()
        telemetry.close()
    steady_time = loop_end - steady_start if steady_start else 0.0
    images_per_s = steady_steps * int(config.data.batch_size) / steady_time if steady_time > 0 else float("nan")
    return {
        "loss_start": loss_start,
        "loss_end": loss_end,
        "start_step": start_step,
        "final_step": step,
        "steps": step - start_step,
        "wall_time_s": time.time() - wall_start,
        "compile_s": compile_s,
        "images_per_s": images_per_s,
        "preempted": preempted,
        "num_params": setup.num_params,
        "mesh": dict(setup.mesh.shape),
        "checkpoint_dir": str(setup.checkpointer.directory),
        "tensorboard_dir": str(telemetry.tensorboard_dir),
        "recon_dir": str(recon_dir),
        "metrics_file": str(telemetry.jsonl_path),
    }


__all__ = ["NonFiniteLossError", "load_train_source", "resolve_data_dir", "run_pretraining"]
