"""How much the training loop costs on top of the bare train step.

Builds the real setup (model, sharded state, Grain pipeline over in-memory
synthetic records, checkpointer) and measures, after compilation:

  bare_step_s   train step alone on one device-resident batch (blocking)
  loop_step_s   steady-state time per step of the real loop
                (`seamo_jax.train.loop.train_loop`: background-thread batch
                prefetch + placement, host one step ahead of the device,
                metrics fetched once per `--log-every` steps, telemetry, an
                async checkpoint every `--checkpoint-every` steps)
  loop_overhead loop_step_s / bare_step_s - 1
  save_s        wall time for `Checkpointer.save` to return (the blocking part
                of an async save) + time to finish it in the background
                (`save_finish_s`)
  stall_s       mean time per step the loop's main thread waited for a batch
  stall_ratio   stall_s / loop_step_s
  sync_*        the same for the previous, synchronous loop (next(iterator) +
                to_global_batch on the main thread before each step, metrics
                fetched every `--log-every` steps), measured in the same run
                for comparison

Prints ONE JSON line. Defaults fit a 2-core, 24 GB machine in ~9 minutes:
ViT-S/16 at 224 px, S1+S2, 2 seasons, batch 8, 10 steps. `--accelerator-size`
switches the unset sizes to an accelerator's (4 seasons, batch 64, 20
steps, 256 records; ~50 GB of host memory on CPU). On CPU the model runs
in fp32 without remat, its fastest step (`--accelerator-settings`: bf16 +
remat); `--model tiny` is the worst case (0.3 s steps, so input
preparation weighs most):

    python benchmarks/train_loop.py                        # ~9 min on 2 cores
    python benchmarks/train_loop.py --model tiny --steps 10
    python benchmarks/train_loop.py --accelerator-size     # GPU / TPU host
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def build_config(args: argparse.Namespace):
    from seamo_jax import configs

    config = configs.load_config("demo_cpu")
    if args.model == "tiny":
        config.model.size, config.model.patch_size = "tiny", 8
        config.data.crop_size, tile = 32, 48
        config.model.decoder_dim, config.model.decoder_depth, config.model.decoder_heads = 64, 1, 4
    else:
        config.model.size, config.model.patch_size = args.model, 16
        config.data.crop_size, tile = 224, 264
        config.data.overlap_range = (0.7, 1.0)  # 224-px windows of 264-px tiles overlap >= 0.675 (data/crops.py)
        config.model.decoder_dim, config.model.decoder_depth, config.model.decoder_heads = 512, 8, 16
        if args.cpu_settings:
            # The fastest CPU step (issue 4): fp32, no remat, unrolled layers. A
            # slower step would only make the loop's overhead look smaller.
            config.model.dtype, config.model.remat_policy, config.model.scan_layers = "float32", "none", False
        else:  # the accelerator configs' settings
            config.model.dtype = "bfloat16"
            config.model.remat_policy = "dots_with_no_batch_dims_saveable"
    config.data.batch_size = args.batch_size
    config.data.seasons = args.seasons
    config.data.worker_count = args.workers
    config.train.num_steps = 3 * args.steps + 2  # warm-up, bare, sync loop, real loop
    # Periodic async checkpoints inside the measured loop, as in a real run.
    config.train.checkpoint_every = args.checkpoint_every or 10**9
    config.train.log_every = args.log_every
    config.train.recon_every = 0
    config.train.progress_bar = False
    config.train.activation_constraints = not args.no_activation_constraints
    return config, tile


# Sizes that fit a 2-core, 24 GB CPU machine (the default) and an accelerator host (--accelerator-size).
SMALL_SIZE = {"batch_size": 8, "seasons": 2, "steps": 10, "log_every": 5, "records": 64}
ACCELERATOR_SIZE = {"batch_size": 64, "seasons": 4, "steps": 20, "log_every": 10, "records": 256}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_s16", help="tiny | vit_s16 | vit_b16 | ...")
    parser.add_argument("--accelerator-size", action="store_true",
                        help="unset sizes take accelerator values: " + ", ".join(f"{k}={v}" for k, v in ACCELERATOR_SIZE.items()))
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {SMALL_SIZE['batch_size']}")
    parser.add_argument("--seasons", type=int, default=None, help=f"default {SMALL_SIZE['seasons']}")
    parser.add_argument("--steps", type=int, default=None, help=f"default {SMALL_SIZE['steps']}")
    parser.add_argument("--log-every", type=int, default=None, help=f"default {SMALL_SIZE['log_every']}")
    parser.add_argument("--checkpoint-every", type=int, default=10,
                        help="save every N steps inside the measured loop (0: only the final save)")
    parser.add_argument("--workers", type=int, default=0, help="grain worker processes")
    parser.add_argument("--records", type=int, default=None, help=f"in-memory synthetic records, default {SMALL_SIZE['records']}")
    parser.add_argument("--no-activation-constraints", action="store_true")
    parser.add_argument("--accelerator-settings", dest="cpu_settings", action="store_false",
                        help="bf16 + remat as in the accelerator configs (default on CPU: fp32, no remat, unrolled)")
    args = parser.parse_args()
    for key, value in (ACCELERATOR_SIZE if args.accelerator_size else SMALL_SIZE).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    import jax
    if jax.default_backend() != "cpu":
        args.cpu_settings = False

    from seamo_jax.data import testing
    from seamo_jax.train.loop import train_loop
    from seamo_jax.train.setup import build_train_setup

    config, tile = build_config(args)
    records = testing.make_records(args.records, seed=0, num_seasons=args.seasons, tile_size=tile)
    with tempfile.TemporaryDirectory() as workdir:
        setup = build_train_setup(config, workdir, records)
        state, iterator = setup.state, setup.iterator

        # Compile + warm up (not timed).
        batch = setup.to_global(next(iterator))
        state, metrics = setup.train_step(state, batch)
        jax.block_until_ready(metrics)

        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = setup.train_step(state, batch)
        jax.block_until_ready((state, metrics))
        bare_step_s = (time.perf_counter() - start) / args.steps

        # The previous loop: input on the main thread, between two steps.
        stall = 0.0
        start = time.perf_counter()
        for i in range(1, args.steps + 1):
            t = time.perf_counter()
            batch = setup.to_global(next(iterator))
            stall += time.perf_counter() - t
            state, metrics = setup.train_step(state, batch)
            if i % args.log_every == 0:
                jax.device_get(metrics)
        jax.block_until_ready((state, metrics))
        sync_step_s = (time.perf_counter() - start) / args.steps
        sync_stall_s = stall / args.steps

        step = int(jax.device_get(state.step))
        t = time.perf_counter()
        setup.checkpointer.save(step, state, iterator, force=True)
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        setup.checkpointer.wait()
        save_finish_s = time.perf_counter() - t

        # The real loop; its first step (a drain) is outside its steady-state numbers.
        setup.state = state
        config.train.num_steps = step + args.steps + 1
        summary = train_loop(setup, workdir)

    loop_step_s, stall_s = summary["step_time_s"], summary["input_wait_s"]
    print(json.dumps({
        "model": args.model, "cpu_settings": args.cpu_settings, "batch_size": args.batch_size,
        "seasons": args.seasons, "steps": args.steps,
        "devices": jax.device_count(), "platform": jax.devices()[0].platform, "num_params": setup.num_params,
        "bare_step_s": bare_step_s, "loop_step_s": loop_step_s, "loop_overhead": loop_step_s / bare_step_s - 1,
        "save_s": save_s, "save_finish_s": save_finish_s, "stall_s": stall_s, "stall_ratio": stall_s / loop_step_s,
        "images_per_s": args.batch_size / loop_step_s, "final_loss": summary["loss_end"],
        "sync_loop_step_s": sync_step_s, "sync_loop_overhead": sync_step_s / bare_step_s - 1,
        "sync_stall_s": sync_stall_s, "sync_stall_ratio": sync_stall_s / sync_step_s,
        "malloc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    }))

if __name__ == "__main__":
    # Same host-malloc settings as the `seamo` command (seamo_jax/host_memory.py);
    # SEAMO_DEFAULT_MALLOC=1 measures with glibc's defaults instead.
    from seamo_jax.host_memory import reexec_for_cpu_run

    reexec_for_cpu_run()
    sys.exit(main())
