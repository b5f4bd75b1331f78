"""`run_pretraining(config, workdir)`: the SeaMo pretraining loop.

data (Grain, per-process shard) -> global batch on the mesh (both in a
prefetch thread) -> jitted, state-donating train step -> telemetry / async
checkpoints / recon images. The host stays one step ahead of the device and
fetches metrics once per log interval, so neither input preparation nor
metric transfers sit between two steps on the device.
Resumes automatically from the newest complete checkpoint in the workdir
(params, optimiser state, step, RNG and the Grain iterator position), so a
killed-and-resumed run produces bitwise the same params as a straight one on
the same mesh.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from seamo_jax.paths import PathLike, user_path
from seamo_jax.train import checkpoint as ckpt_lib
from seamo_jax.train.prefetch import prefetch_to_device
from seamo_jax.train.preemption import PreemptionWatcher
from seamo_jax.train.recon_images import write_recon_images
from seamo_jax.train.setup import TrainSetup, build_train_setup
from seamo_jax.train.telemetry import Telemetry


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; training stopped, the last good checkpoint is kept."""


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: PathLike) -> epath.Path:
    """config.data.data_dir, else $SEAMO_DATA_DIR, else <workdir>/tfds (local paths or URLs)."""
    if config.data.data_dir:
        return user_path(config.data.data_dir)
    if os.environ.get("SEAMO_DATA_DIR"):
        return user_path(os.environ["SEAMO_DATA_DIR"])
    return user_path(workdir) / "tfds"


def builder_kwargs(data_config: Any) -> dict[str, Any]:
    """Builder constructor arguments: config.data.builder_kwargs as a plain dict."""
    return dict(data_config.builder_kwargs)


def load_train_source(config: ml_collections.ConfigDict, workdir: PathLike, *, build: bool = False) -> Any:
    """Opens the train split of the prepared dataset (`seamo data build` prepares it).

    Args:
      build: build the dataset first if it is missing (`seamo demo`, one
        process only: several processes building into one folder race).
    Raises:
      DatasetNotPreparedError: the dataset is missing; its message is the
        exact `seamo data build` command.
    """
    from data_pipelines import registry  # imported late: only the loop needs tfds

    data_dir = resolve_data_dir(config, workdir)
    kwargs = builder_kwargs(config.data)
    if build:
        registry.prepare(config.data.builder, str(data_dir), manual_dir=config.data.manual_dir or None,
                         **kwargs)
    # views="device": blosc2 S2 frames stay undecoded until the batch, which decodes them into its rows.
    return registry.load_source(config.data.builder, config.data.split, str(data_dir),
                                lazy_decode=config.data.views == "device",
                                record_reader=config.data.record_reader, **kwargs)


def _first_rows(array: jax.Array) -> np.ndarray:
    """The addressable shard holding global row 0 (process 0's first sample), as numpy."""
    for shard in array.addressable_shards:
        if shard.index and (shard.index[0].start or 0) == 0:
            return np.asarray(shard.data)
    return np.asarray(array.addressable_shards[0].data)


def _write_recon(setup: TrainSetup, state: Any, batch: Any, local_batch: Any, step: int, out_dir: epath.Path) -> None:
    aux = setup.predict(state.params, batch)  # every process joins the computation
    if jax.process_index() != 0:
        return
    preds = {m: _first_rows(p) for m, p in aux["pred"].items()}
    views = {m: _first_rows(v) for m, v in aux["views"].items()}  # made in the step when config.data.views="device"
    config = setup.config
    write_recon_images(out_dir, step, views, preds, np.asarray(local_batch["mask"]),
                       tuple(config.data.modalities), setup.sensor_specs, int(config.model.patch_size),
                       bool(config.model.norm_pix_loss), season_ids=local_batch.get("season_ids"))


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


def run_pretraining(config: ml_collections.ConfigDict, workdir: PathLike, *, source: Any = None,
                    build_dataset: bool = False) -> dict[str, Any]:
    """Pretrains (or resumes) SeaMo as described by `config` in `workdir`.

    Args:
      source: random-access record source; default: open the prepared
        `config.data.builder` via `data_pipelines.registry` (tests pass records).
      build_dataset: build the dataset first when missing (single-process
        `seamo demo`); otherwise a missing dataset is an error naming the
        `seamo data build` command.

    Returns:
      the summary of `train_loop`, with wall_time_s covering setup too.
    Raises:
      NonFiniteLossError: NaN/Inf loss; nothing is saved after the last
        finite check, so the newest checkpoint is a good one.
    """
    wall_start = time.time()
    workdir = user_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = load_train_source(config, workdir, build=build_dataset) if source is None else source
    summary = train_loop(build_train_setup(config, workdir, source), workdir)
    summary["wall_time_s"] = time.time() - wall_start
    return summary


class _PendingMetrics:
    """Metrics of dispatched steps, kept on device until they are checked.

    Fetching them all at once when a log or save is due (they are finished
    by then) costs one host transfer per interval instead of a sync per step.
    """

    def __init__(self) -> None:
        self._items: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        self._items.append((step, metrics))

    def wait_for(self, step: int) -> None:
        """Blocks until `step` (and so every earlier step) has finished on the device."""
        jax.block_until_ready(next(m for s, m in self._items if s == step)["loss"])

    def due(self, upto: int, every: int) -> bool:
        return any(s <= upto and s % every == 0 for s, _ in self._items)

    def fetch(self, upto: int) -> list[tuple[int, dict[str, float]]]:
        """Host copies of the metrics of every pending step <= `upto`, oldest first; drops them."""
        ready = [(s, m) for s, m in self._items if s <= upto]
        self._items = [(s, m) for s, m in self._items if s > upto]
        values = jax.device_get([m for _, m in ready])
        return [(s, {k: float(v) for k, v in m.items()}) for (s, _), m in zip(ready, values)]


def train_loop(setup: TrainSetup, workdir: PathLike) -> dict[str, Any]:
    """Runs `setup.train_step` from `setup.state` to `config.train.num_steps`.

    Host/device overlap: a thread prepares and places the next batches
    (`prefetch_to_device`) while the device runs the current step, and the
    host waits only for the *previous* step, so one step is always queued on
    the device. Full syncs happen at the first step (compile), before each
    save and at the end.

    Returns:
      summary dict: loss_start / loss_end (first and last step of this
      invocation), start_step, final_step, steps (run now), compile_s,
      step_time_s and images_per_s (steady state: after the first step, up to
      the last step finishing, saves in between included), input_wait_s
      (mean time per steady step the host waited for a batch), preempted,
      checkpoint_dir, tensorboard_dir, recon_dir, metrics_file.
    Raises:
      NonFiniteLossError: NaN/Inf loss or norms; raised before any save of
        the bad step's params, so the newest checkpoint is a good one.
    """
    wall_start = time.time()
    workdir = user_path(workdir)
    config = setup.config
    train = config.train
    num_steps = int(train.num_steps)
    state = setup.state
    start_step = int(jax.device_get(state.step))
    recon_dir = workdir / "recon"
    telemetry = Telemetry(workdir, total_steps=num_steps, start_step=start_step,
                          global_batch_size=int(config.data.batch_size), enabled=jax.process_index() == 0,
                          progress_bar=bool(train.progress_bar))
    if setup.warm_start_report:
        r = setup.warm_start_report
        telemetry.message(f"init_from {config.init_from}: copied {len(r['copied'])} params, "
                          f"fresh {len(r['fresh'])}: {r['fresh'][:8]}")
    if start_step:
        telemetry.message(f"resumed from step {start_step} ({setup.checkpointer.directory})")

    log_every, save_every = max(int(train.log_every), 1), max(int(train.checkpoint_every), 1)
    recon_every = int(train.recon_every)
    batches = prefetch_to_device(setup.iterator, setup.to_global, int(train.prefetch_batches))
    pending = _PendingMetrics()
    loss_start = loss_end = None
    compile_s, steady_start, steady_end, preempted = 0.0, None, None, False
    input_wait = interval_wait = 0.0
    # Per-log-interval timing counts finished steps (`settled`), not dispatched ones.
    settled = step = start_step
    interval_start, interval_from = time.time(), start_step
    try:
        with PreemptionWatcher(setup.checkpointer.manager) as watcher:
            while step < num_steps:
                wait_start = time.time()
                local_batch, batch = next(batches)
                first = steady_start is None
                if not first:  # the first batch includes pipeline start-up
                    input_wait += time.time() - wait_start
                    interval_wait += time.time() - wait_start
                state, metrics = setup.train_step(state, batch)
                step += 1
                pending.add(step, metrics)
                preempted = watcher.should_stop(step)
                is_last = step == num_steps
                will_save = step % save_every == 0 or is_last or preempted
                # Wait for the previous step only (this one is queued behind it), except
                # at the first step (compile time) and before a save: the finite check
                # must cover the very params being saved.
                target = step if (first or will_save) else step - 1
                if target > settled:
                    pending.wait_for(target)
                    telemetry.advance(target - settled)
                    settled = target
                if first:
                    compile_s = time.time() - interval_start
                    steady_start = interval_start = time.time()
                    interval_from, interval_wait = step, 0.0
                if first or will_save or pending.due(settled, log_every):
                    history = pending.fetch(settled)
                    loss_start = history[0][1]["loss"] if loss_start is None else loss_start
                    done = settled - interval_from
                    step_time = (time.time() - interval_start) / done if done else compile_s
                    for s, values in history:
                        # Every step since the last check is checked *before* saving, so a
                        # checkpoint never holds params that produced a NaN; steps before a
                        # bad one are still logged.
                        _check_finite([(s, values)], setup.checkpointer)
                        loss_end = values["loss"]
                        # Log steps, plus the step that forced this check (first step, save).
                        if s % log_every == 0 or s == settled:
                            telemetry.log(s, {**values, "input_wait_s": interval_wait / max(done, 1)},
                                          step_time_s=step_time)
                    interval_start, interval_from, interval_wait = time.time(), settled, 0.0
                if is_last or preempted:
                    steady_end = time.time()  # before the final save
                if will_save:
                    setup.checkpointer.save(step, state, batches, metrics={"loss": loss_end}, force=True)
                if recon_every and (step % recon_every == 0 or is_last):
                    _write_recon(setup, state, batch, local_batch, step, recon_dir)
                if preempted:
                    telemetry.message(f"preemption signal: saved step {step}, exiting")
                    break
    finally:
        batches.close()
        setup.checkpointer.close()
        telemetry.close()
    steady_steps = step - start_step - 1
    steady_time = steady_end - steady_start if steady_start and steady_end else 0.0
    step_time_s = steady_time / steady_steps if steady_steps > 0 and steady_time > 0 else float("nan")
    return {
        "loss_start": loss_start,
        "loss_end": loss_end,
        "start_step": start_step,
        "final_step": step,
        "steps": step - start_step,
        "wall_time_s": time.time() - wall_start,
        "compile_s": compile_s,
        "step_time_s": step_time_s,
        "images_per_s": int(config.data.batch_size) / step_time_s,
        "input_wait_s": input_wait / steady_steps if steady_steps > 0 else float("nan"),
        "preempted": preempted,
        "num_params": setup.num_params,
        "mesh": dict(setup.mesh.shape),
        "checkpoint_dir": str(setup.checkpointer.directory),
        "tensorboard_dir": str(telemetry.tensorboard_dir),
        "recon_dir": str(recon_dir),
        "metrics_file": str(telemetry.jsonl_path),
    }


__all__ = ["NonFiniteLossError", "load_train_source", "resolve_data_dir", "run_pretraining", "train_loop"]
