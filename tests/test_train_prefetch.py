"""prefetch_to_device: batches are produced ahead in another thread, yet the
checkpoint state is that of the last batch consumed, so resuming from it
neither repeats nor skips a batch."""

import threading
import time

import grain
import numpy as np

from seamo_jax.train.prefetch import prefetch_to_device


def _batches():
    return iter(grain.MapDataset.range(100).map(lambda i: np.full((2,), i)).to_iter_dataset())


def test_prefetch_runs_ahead_in_a_thread_and_checkpoints_consumed_position():
    threads = []

    def place(x):
        threads.append(threading.current_thread())
        return x * 10

    it = prefetch_to_device(_batches(), place, buffer_size=3)
    consumed = [next(it) for _ in range(4)]
    deadline = time.time() + 10
    while len(threads) < 4 + 3 and time.time() < deadline:  # the producer fills the buffer
        time.sleep(0.01)
    assert len(threads) >= 4 + 3, "prefetch did not run ahead"
    assert all(t is not threading.main_thread() for t in threads)
    assert [int(local[0]) for local, _ in consumed] == [0, 1, 2, 3]
    assert [int(placed[0]) for _, placed in consumed] == [0, 10, 20, 30]

    state = it.get_state()
    it.close()
    reference = _batches()
    for _ in range(4):
        next(reference)
    assert state == reference.get_state()  # not the producer's (further) position

    resumed = prefetch_to_device(_batches(), place, buffer_size=3)
    resumed.set_state(state)
    assert [int(next(resumed)[0][0]) for _ in range(3)] == [4, 5, 6]
    resumed.close()


def test_producer_errors_reach_the_consumer():
    def place(x):
        if int(x[0]) == 2:
            raise ValueError("bad batch 2")
        return x

    it = prefetch_to_device(_batches(), place, buffer_size=2)
    next(it), next(it)
    try:
        next(it)
    except ValueError as error:
        assert "bad batch 2" in str(error)
    else:
        raise AssertionError("error in the prefetch thread was swallowed")
    finally:
        it.close()
