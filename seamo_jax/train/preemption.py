"""SIGTERM -> finish the current step, save a checkpoint, exit cleanly.

TPU/GCE preemptions and most schedulers send SIGTERM with a grace period.
The handler only sets a flag; the loop polls it between steps (never inside a
jitted call or an Orbax write). With several processes, each polls its own
flag and they agree with a small all-gather every `sync_every` steps, so all
hosts save the same step together.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Context manager that catches SIGTERM (and optionally other signals).

    Args:
      sync_every: in multi-process runs, how often (in steps) flags are
        exchanged; 1 on a single process costs nothing.
      signals: which signals mean "save and stop".
    """

    def __init__(self, sync_every: int = 1, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.sync_every = max(int(sync_every), 1)
        self.signals = signals
        self._flag = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionWatcher":
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
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
        """Marks a preemption (used by tests and by callers with other notifiers)."""
        self._flag.set()

    def should_stop(self, step: int) -> bool:
        """True when this run (all processes) must save and stop after `step`."""
        if jax.process_count() == 1:
            return self._flag.is_set()
        if step % self.sync_every:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self._flag.is_set(), np.int32))
        return bool(np.any(flags))
