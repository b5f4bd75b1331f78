"""One fine-tuning run of the sweep: train (resumable, preemptible), select on val, score the test split.

The run's Orbax checkpoints hold the TrainState, plus the best val params
when selecting on val, so a run killed at any step and rerun selects and
scores as an uninterrupted one (batches are a pure function of (seed, step),
data.py). Every step's loss and norms are checked finite.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from etils import epath

from seamo_jax import parallel
from seamo_jax.finetune import head as head_lib
from seamo_jax.finetune import trainer as trainer_lib
from seamo_jax.finetune.data import batch_rows
from seamo_jax.train import checkpoint as checkpoint_lib
from seamo_jax.train.loop import NonFiniteLossError
from seamo_jax.train.preemption import PreemptionWatcher
from seamo_jax.train.telemetry import Telemetry


class Preempted(Exception):
    """A preemption signal arrived: the current run saved its step; rerun the same command to resume."""


class _Prefetch:
    """Global batches of steps [start, stop) made `depth` ahead in one thread (pure function of the step)."""

    def __init__(self, make: Callable[[int], Any], start: int, stop: int, depth: int):
        self._make, self._next, self._stop, self._depth = make, start, stop, max(int(depth), 0)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if self._depth else None
        self._queue: list[tuple[int, Any]] = []

    def _fill(self) -> None:
        while self._pool and len(self._queue) < self._depth and self._next < self._stop:
            self._queue.append((self._next, self._pool.submit(self._make, self._next)))
            self._next += 1

    def get(self, step: int) -> Any:
        if self._pool is None:
            return self._make(step)
        self._fill()
        queued, future = self._queue.pop(0)
        assert queued == step, (queued, step)
        value = future.result()
        self._fill()
        return value

    def close(self) -> None:
        if self._pool is not None:
            for _, future in self._queue:
                future.cancel()
            self._pool.shutdown(wait=True)


def _finite_or_raise(step: int, values: Mapping[str, float], checkpointer: checkpoint_lib.Checkpointer,
                     run_name: str) -> None:
    bad = sorted(k for k in ("loss", "grad_norm", "param_norm") if not np.isfinite(values[k]))
    if bad:
        checkpointer.wait()
        last = checkpointer.latest_step()
        raise NonFiniteLossError(
            f"fine-tune {run_name}: loss is {values['loss']} at step {step} (non-finite: {bad}); stopped without "
            f"saving; last good checkpoint: {last if last is not None else 'none'} in {checkpointer.directory}. "
            f"Try a lower finetune.base_learning_rate or more finetune.warmup_epochs.")


def train_and_score(trainer: trainer_lib.Trainer, *, arrays: Mapping[str, Any], task: str, target_key: str,
                    train_rows: np.ndarray, val_rows: np.ndarray, test_rows: np.ndarray, seed: int,
                    init_encoder: Callable[[], Any], run_dir: epath.Path, run_name: str, config: Any,
                    on_step: Callable[[int], None] | None = None) -> dict:
    """One fine-tuning run (resumed from its latest checkpoint if any) and its test scores.

    Args:
      arrays: pooled eval arrays (train + test rows) of probe_data.
      train_rows / val_rows / test_rows: rows of `arrays`; val_rows empty = no selection.
      init_encoder: () -> sharded encoder params to start from (not called on resume).
      on_step: called with the step number after each step's bookkeeping (tests interrupt runs with it).
    Returns:
      {"test": metrics, "val": best val metrics or None, "selected_step", "final_step", "state": final state}.
    Raises:
      Preempted: a preemption signal; the step was saved.
    """
    ft = config.finetune
    num_steps, batch_size = trainer.recipe.num_steps, int(ft.batch_size)
    eval_batch = int(ft.eval_batch_size) or batch_size
    select = len(val_rows) > 0
    steps_per_epoch = max(1, math.ceil(len(train_rows) / batch_size))
    eval_every = int(ft.eval_every) or steps_per_epoch
    primary = head_lib.PRIMARY_METRIC[task]
    checkpointer = checkpoint_lib.Checkpointer(
        run_dir / "checkpoints", save_every=max(int(ft.checkpoint_every), 1), keep=int(ft.keep_checkpoints),
        async_save=bool(config.train.async_checkpointing), compression=bool(config.train.checkpoint_compression))
    targets = arrays[target_key]

    def val_scores(params) -> dict:
        logits = trainer.logits(params, arrays, val_rows, target_key=target_key, batch_size=eval_batch)
        return head_lib.scores(task, logits, targets[val_rows])

    # Checkpoint item: the TrainState, or (TrainState, best) when selecting on val; best = the params of
    # the best val evaluation so far, its metric and step, so a resumed run selects as a straight one.
    abstract: Any = trainer.abstract_state
    if select:
        replicated = parallel.replicated(trainer.mesh)
        abstract = (abstract, {"params": trainer.abstract_params,
                               "metric": jax.ShapeDtypeStruct((), np.float32, sharding=replicated),
                               "step": jax.ShapeDtypeStruct((), np.int32, sharding=replicated)})
    try:
        if checkpointer.latest_step() is not None:
            saved, _ = checkpointer.restore(abstract)
            state, best = saved if select else (saved, None)
        else:
            state = trainer.new_state(init_encoder(), seed)
            best = None
            if select:  # step 0 is a candidate too: the selected params are never worse on val than the start
                best = {"params": trainer.copy_params(state.params),
                        "metric": np.float32(val_scores(state.params)[primary]), "step": np.int32(0)}
        start = int(jax.device_get(state.step))

        def make_batch(step: int) -> Any:
            rows = train_rows[batch_rows(seed, step, len(train_rows), batch_size)]
            return trainer.global_batch(arrays, rows, target_key=target_key, seed=seed, step=step,
                                        augment=bool(ft.augment))

        telemetry = Telemetry(run_dir, total_steps=num_steps, start_step=start, global_batch_size=batch_size,
                              enabled=jax.process_index() == 0, progress_bar=bool(ft.progress_bar))
        if telemetry._bar is not None:  # Telemetry names its bar "pretrain"
            telemetry._bar.set_description(f"finetune {run_name}")
        if start:
            telemetry.message(f"{run_name}: resumed from step {start} ({checkpointer.directory})")
        batches = _Prefetch(make_batch, start, num_steps, int(config.train.prefetch_batches))
        log_every, save_every = max(int(ft.log_every), 1), max(int(ft.checkpoint_every), 1)
        pending: list[tuple[int, dict]] = []
        interval_start, interval_from = time.time(), start
        try:
            with PreemptionWatcher(checkpointer.manager) as watcher:
                for step in range(start + 1, num_steps + 1):
                    state, metrics = trainer.step(state, batches.get(step - 1))
                    pending.append((step, metrics))
                    preempted = watcher.should_stop(step)
                    is_last = step == num_steps
                    # The final save keeps the fine-tuned params; with delete_checkpoints they would be
                    # removed once result.json is written, so it is skipped (a kill before that resumes
                    # from the last periodic checkpoint, to the same bits).
                    will_save = step % save_every == 0 or (is_last and not ft.delete_checkpoints) or preempted
                    will_eval = select and (step % eval_every == 0 or is_last)
                    if step % log_every == 0 or will_save or will_eval or is_last:  # every step finite-checked
                        fetched = jax.device_get([m for _, m in pending])
                        done = max(step - interval_from, 1)
                        step_time = (time.time() - interval_start) / done
                        for (s, _), values in zip(pending, fetched):
                            values = {k: float(v) for k, v in values.items()}
                            _finite_or_raise(s, values, checkpointer, run_name)
                            if s % log_every == 0 or s == step:
                                telemetry.log(s, values, step_time_s=step_time)
                        telemetry.advance(step - interval_from)
                        pending, interval_start, interval_from = [], time.time(), step
                    if will_eval:
                        value = val_scores(state.params)[primary]
                        telemetry.message(f"{run_name}: step {step} val {primary} {value:.4f}")
                        if value > float(best["metric"]):  # ties keep the earlier step
                            best = {"params": trainer.copy_params(state.params), "metric": np.float32(value),
                                    "step": np.int32(step)}
                    if will_save:
                        checkpointer.save(step, (state, best) if select else state, force=True)
                    if preempted:
                        checkpointer.wait()
                        raise Preempted(f"{run_name}: preemption signal, saved step {step} in {checkpointer.directory}")
                    if on_step is not None:
                        on_step(step)
        finally:
            batches.close()
            telemetry.close()
        final_step = int(jax.device_get(state.step))
        params = best["params"] if select else state.params
        logits = trainer.logits(params, arrays, test_rows, target_key=target_key, batch_size=eval_batch)
        test = head_lib.scores(task, logits, targets[test_rows])
        val = val_scores(params) if select else None
        selected = int(best["step"]) if select else final_step
    finally:
        checkpointer.close()
    return {"test": test, "val": val, "selected_step": selected, "final_step": final_step, "state": state}
