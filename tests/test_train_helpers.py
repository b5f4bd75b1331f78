"""Shared pieces for the train tests (no tests here): a very small SeaMo config,
in-memory records, and a subprocess entry point for kill/resume and
multi-process runs.

Records come from `seamo_jax.data.testing` (random content, real schema), so
the tests exercise the real Grain pipeline and model without building a TFDS
dataset.

    python tests/test_train_helpers.py WORKDIR --steps 40 [--slow-after-reads N]
        [--devices 8] [--mesh 2,2,2] [--process-id I --num-processes P --port PORT]
        [--seasons 2] [--fusion tm] [--init-from DIR --save-init-only] [--replicate-heads]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import threading
import time

import ml_collections

from seamo_jax import configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def demo_config(arg: str = "fast") -> ml_collections.ConfigDict:
    return configs.load_config(f"demo_cpu:{arg}" if arg else "demo_cpu")


def tiny_config(num_steps: int = 6, mesh_shape=(2, 2, 2), batch_size: int = 8, seasons: int = 2
                ) -> ml_collections.ConfigDict:
    """demo_cpu:fast shrunk further: 16-px crops of 24-px tiles, patch 8, 2 seasons."""
    config = demo_config("fast")
    config.data.crop_size = 16
    config.data.seasons = seasons
    config.data.batch_size = batch_size
    config.data.prefetch = 1
    config.model.decoder_dim = 32
    config.model.decoder_heads = 2
    config.mesh.shape = tuple(mesh_shape)
    config.train.num_steps = num_steps
    config.train.log_every = 2
    config.train.checkpoint_every = 4
    config.train.recon_every = 0
    config.train.progress_bar = False
    config.optim.warmup_steps = 2
    return config


def tiny_records(num: int = 32, seasons: int = 2):
    from seamo_jax.data import testing
    return testing.make_records(num, seed=0, num_seasons=seasons, tile_size=24)


class SlowSource:
    """Record source that sleeps `delay` s per read after `limit` reads: stretches a run past a
    known checkpoint so a test can SIGKILL / SIGTERM it mid-run. Content is unchanged."""

    def __init__(self, records, limit: int, delay: float):
        self._records, self._limit, self._delay, self._reads = records, limit, delay, 0
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._records)

    def __getitem__(self, index):
        with self._lock:
            self._reads += 1
            slow = self._reads > self._limit
        if slow:
            time.sleep(self._delay)
        return self._records[index]


def worker_env(devices: int, cache_dir: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = f"{REPO}:{env.get('PYTHONPATH', '')}"
    if cache_dir:
        # Later runs of the same step reuse the executable: 3 runs, 1 compile.
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def first_batch_digest(config: ml_collections.ConfigDict, source) -> str:
    """sha256 of the first batch this process loads, through the loop's own sharding and pipeline."""
    import hashlib

    import jax
    import numpy as np

    from seamo_jax import parallel
    from seamo_jax.data import global_batch, pipeline

    mesh = parallel.make_mesh(config.mesh)
    sharding = parallel.batch_sharding(mesh, parallel.batch_mesh_axes(parallel.logical_rules(config.sharding_rules,
                                                                                             mesh)))
    shard = global_batch.loader_shard(sharding)
    batch = next(pipeline.make_train_iterator(config, source, shard_index=shard.index, shard_count=shard.count))
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(batch):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--slow-after-reads", type=int, default=0)
    parser.add_argument("--read-delay", type=float, default=0.25)
    parser.add_argument("--mesh", default="2,2,2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seasons", type=int, default=2)
    parser.add_argument("--fusion", default="tm")
    parser.add_argument("--init-from", default="")
    parser.add_argument("--save-init-only", action="store_true",
                        help="build the (warm-started) state, save it as step 0 and stop")
    parser.add_argument("--replicate-heads", action="store_true",
                        help="rules keep attention heads unsharded, so a model axis of 8 fits the tiny model")
    args = parser.parse_args()

    import jax
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{args.port}", num_processes=args.num_processes,
                                   process_id=args.process_id)
    from seamo_jax.train.loop import run_pretraining

    config = tiny_config(num_steps=args.steps, mesh_shape=tuple(int(v) for v in args.mesh.split(",")),
                         batch_size=args.batch_size, seasons=args.seasons)
    config.model.fusion = args.fusion
    config.init_from = args.init_from
    config.train.checkpoint_every = args.checkpoint_every
    config.train.log_every = args.checkpoint_every
    if args.replicate_heads:
        config.sharding_rules = tuple((k, None if k == "heads" else v) for k, v in config.sharding_rules)
    source = tiny_records()  # 2-season records; a 1-season config reads the first
    if args.slow_after_reads:
        source = SlowSource(source, args.slow_after_reads, args.read_delay)
    if args.save_init_only:
        from seamo_jax.train.setup import build_train_setup
        setup = build_train_setup(config, args.workdir, source)
        setup.checkpointer.save(0, setup.state, force=True)
        setup.checkpointer.close()
        summary = {"warm_start": setup.warm_start_report}
    else:
        summary = run_pretraining(config, args.workdir, source=source)
        summary["first_batch_sha256"] = first_batch_digest(config, source)
    print("SUMMARY " + json.dumps(summary), flush=True)
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    sys.exit(_main())
