"""Preemption: all processes agree on one step to save at, then stop cleanly.

Multi-process runs (a pod slice, a GPU cluster, `jax.distributed`) use JAX's
coordination service, as MaxText does: its preemption notifier catches the
scheduler's SIGTERM on any host, the service picks the next step every host
will reach, and `CheckpointManager.reached_preemption(step)` turns True at
that step on every host at once; no per-step host collective is needed.

A single process without `jax.distributed` has no coordination service, so
there a SIGTERM handler sets a flag that the loop polls between steps (never
inside a jitted call or an Orbax write).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from jax._src import distributed as _distributed  # the coordination-service client (no public getter)


def coordination_service_running() -> bool:
    """True after `jax.distributed.initialize()` (multi-controller runs)."""
    return _distributed.global_state.client is not None


class PreemptionWatcher:
    """Context manager: `should_stop(step)` is True at the step every process saves at and stops.

    Args:
      checkpoint_manager: the run's `ocp.CheckpointManager` (its
        `reached_preemption` asks the coordination service).
      signals: what means "save and stop" for a lone process.
    """

    def __init__(self, checkpoint_manager: Any, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._manager = checkpoint_manager
        self._coordinated = coordination_service_running()
        self.signals = signals
        self._flag = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionWatcher":
        # With the coordination service JAX's own notifier owns SIGTERM; a
        # Python handler would replace it. Handlers need the main thread.
        if not self._coordinated and threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal API
        self._flag.set()

    def request(self) -> None:
        """Marks a preemption of a lone process (tests, other notifiers)."""
        self._flag.set()

    def should_stop(self, step: int) -> bool:
        """True when this run (all processes) must save and stop after `step`; call it every step."""
        if self._coordinated:
            return bool(self._manager.reached_preemption(step))
        return self._flag.is_set()
