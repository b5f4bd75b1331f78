"""Train-step throughput and MFU of SeaMo on this machine. Prints ONE JSON line.

Times a full step (forward, backward, AdamW update; jitted, params and
optimizer state donated) after warm-up, and measures this machine's fp32
matmul peak in the same run: the best-rate matmul (XLA's jnp.dot, or the
CPU kernels' OpenBLAS GEMM where those are on) and size of --peak-sizes are
found first, then that matmul is timed right after every timed step, so each
step has a peak measured under the same machine conditions (on a shared VM
the speed of both drifts by +-15% within minutes). MFU = analytic FLOPs per
step (models/flops.py: 2 FLOPs per multiply-add, backward = 2 x forward,
remat recompute not counted) / step time / peak:
  mfu            median over steps of the per-step ratio (step vs. its paired peak);
  mfu_best_peak  median step vs. the best peak seen in the whole run (a
                 conservative lower figure; the only one in the first version);
  mfu_cpu        the paired ratio on process CPU time instead of wall time.
The process re-executes itself once with the host-malloc tunables of
seamo_jax/host_memory.py on a CPU run, as the `seamo` command does
(SEAMO_DEFAULT_MALLOC=1: off). The CPU kernels are chosen as a training run
chooses them: models.resolve_backend(model config, 1 device), from
--cpu-kernels (= model.cpu_kernels) and --attention-impl (= model.attention_impl).

Default = plain MAE ViT-S/16 at 224 px, batch 16, 1 season, S2 only with 3
input channels (MAE's RGB setting, so numbers compare with PyTorch MAE; pass
--in-chans 13 for S2-L1C), MAE decoder (512 wide, 8 deep, 16 heads), fp32,
layers unrolled (--scan: under nn.scan).

    python benchmarks/train_step.py                       # default
    python benchmarks/train_step.py --model tiny --img 32 --patch 8 --seasons 4 --modalities s2,s1 --fusion tm
    python benchmarks/train_step.py --remat full --steps 3
    python benchmarks/train_step.py --cpu-kernels off     # XLA-only baseline of the same step (generic path)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import resource
import sys
import time
import types

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import optax  # noqa: E402

from seamo_jax import kernels  # noqa: E402
from seamo_jax.models import build_model_from_config, num_masked, random_mask, training_flops  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_s16", choices=["tiny", "vit_s16", "vit_b16", "vit_l16", "vit_h14"])
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--in-chans", type=int, default=3, help="S2 bands (S1 always has 2)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seasons", type=int, default=1)
    parser.add_argument("--modalities", default="s2")
    parser.add_argument("--fusion", default="none", choices=["tm", "none"])
    parser.add_argument("--season-encoding", default="per_season", choices=["per_season", "joint"],
                        help="per_season: each season its own encoder sequence (the paper); joint: one sequence")
    parser.add_argument("--num-fusion-blocks", type=int, default=1)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--decoder-dim", type=int, default=512)
    parser.add_argument("--decoder-depth", type=int, default=8)
    parser.add_argument("--decoder-heads", type=int, default=16)
    parser.add_argument("--remat", default="none",
                        choices=["none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"])
    parser.add_argument("--scan", action="store_true",
                        help="layers under one nn.scan (model.scan_layers=True, the accelerator configs' layout); "
                             "default unrolled (model.scan_layers=False): on CPU with the malloc tunables it "
                             "measured 10-15%% faster, as it skips stacking every layer's residuals")
    parser.add_argument("--attention-impl", default="xla", choices=["xla", "cudnn", "pallas_tpu", "einsum"],
                        help="model.attention_impl of the XLA path: xla / cudnn = jax.nn.dot_product_attention, "
                             "pallas_tpu = Pallas TPU flash attention, einsum = head-major einsums")
    parser.add_argument("--cpu-kernels", default="auto", choices=["auto", "on", "off"],
                        help="model.cpu_kernels. auto: the step's fp32 GEMMs, attention, GELU and LayerNorm use "
                             "seamo_jax/kernels on this single-device CPU run; on: the same, an error if "
                             "impossible; off: XLA's own ops (the generic path, the A/B baseline)")
    parser.add_argument("--steps", type=int, default=5,
                        help="timed steps (after 2 warm-up steps; an untimed step separates each peak measurement "
                             "from the next timed step)")
    parser.add_argument("--peak-sizes", default="1024,2048,3072,4096",
                        help="square fp32 matmul sizes for the peak; the best rate of any size is the peak")
    return parser.parse_args(argv)


def peak_matmuls(cpu_kernels: bool) -> dict:
    """The fp32 matmuls the peak may come from: XLA's jnp.dot, plus the kernels' OpenBLAS GEMM where
    they are on (the step's GEMMs then run there, so the peak must not come from a slower library)."""
    def donating(matmul):
        # `out` is donated: XLA writes the product into it, so a measurement
        # allocates no new memory between train steps.
        return jax.jit(lambda a, b, out: matmul(a, b), donate_argnums=2)

    matmuls = {"xla_dot": donating(jnp.dot)}
    if cpu_kernels:
        matmuls["seamo_gemm"] = donating(kernels.gemm)
    return matmuls


def measure_peak_flops(sizes: list[int], matmuls: dict, repeats: int = 3,
                       operands: dict | None = None) -> tuple[float, float, int, str]:
    """Best fp32 matmul rate over square sizes and matmuls.

    Returns (FLOP/s of wall time, FLOP per CPU-second, best wall size, best matmul's name).
    The rate of one size depends on cache blocking and threading overhead, so
    every size is tried and the best rate kept (a conservative, lower MFU).
    The CPU-second rate (process CPU time, all threads) is the load-independent
    twin used by `mfu_cpu`: on a shared machine wall time includes time the
    OS gave to other processes, CPU time does not. `operands` caches the
    inputs and the (donated) output per size, made on device with
    jax.random, so the per-step measurement allocates nothing.
    """
    operands = {} if operands is None else operands
    best_wall, best_cpu, best_size, best_name = 0.0, 0.0, 0, ""
    for size, (name, matmul) in itertools.product(sizes, matmuls.items()):
        if size not in operands:
            key_a, key_b = jax.random.split(jax.random.key(size))
            operands[size] = [jax.random.normal(key_a, (size, size)), jax.random.normal(key_b, (size, size)),
                              jnp.zeros((size, size))]
        a, b, _ = operands[size]
        operands[size][2] = matmul(a, b, operands[size][2]).block_until_ready()
        for _ in range(repeats):
            cpu_start, start = time.process_time(), time.perf_counter()
            operands[size][2] = matmul(a, b, operands[size][2]).block_until_ready()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if 2.0 * size**3 / wall > best_wall:
                best_wall, best_size, best_name = 2.0 * size**3 / wall, size, name
            best_cpu = max(best_cpu, 2.0 * size**3 / max(cpu, 1e-9))
    return best_wall, best_cpu, best_size, best_name


def make_batch(model, batch_size: int, seasons: int, key: jax.Array) -> dict:
    """Random normalised views, zero offsets and random masks with the model's mask count."""
    rng = np.random.default_rng(0)
    h, w = model.image_size
    views = {m: jnp.asarray(rng.standard_normal((batch_size, seasons, h, w, c), np.float32))
             for m, c in zip(model.modalities, model.in_chans)}
    mask = random_mask(key, (batch_size, seasons, len(model.modalities), model.num_tokens),
                       num_masked(model.num_tokens, model.mask_ratio))
    return {"views": views, "offsets": jnp.zeros((batch_size, seasons, 2), jnp.int32), "mask": mask}


def main(argv=None) -> dict:
    args = parse_args(argv)
    modalities = tuple(args.modalities.split(","))
    config = ml_collections.ConfigDict({
        "data": {"modalities": modalities, "seasons": args.seasons, "crop_size": args.img,
                 "sensors": {"s2": "s2_l1c", "s1": "s1_grd"}},
        "mask": {"ratio": args.mask_ratio},
        "model": {
            "size": args.model, "patch_size": args.patch, "fusion": args.fusion, "num_seasons": 0,
            "num_fusion_blocks": args.num_fusion_blocks, "decoder_dim": args.decoder_dim,
            "decoder_depth": args.decoder_depth, "decoder_heads": args.decoder_heads, "norm_pix_loss": True,
            "dtype": args.dtype, "remat_policy": args.remat, "scan_layers": args.scan,
            "attention_impl": args.attention_impl, "cpu_kernels": args.cpu_kernels,
            "season_encoding": args.season_encoding, "position_frame": "view", "tm_carry": "aux_queries",
        },
    })
    # The benchmark's S2 has --in-chans bands (3 = the MAE/ImageNet comparison point), not a real sensor's.
    band_counts = {"s2": types.SimpleNamespace(num_bands=args.in_chans), "s1": types.SimpleNamespace(num_bands=2)}
    # One device: the step is a plain jit on the default device (no mesh).
    model = build_model_from_config(config, band_counts, mesh=1)
    backend = model.backend
    batch = make_batch(model, args.batch, args.seasons, jax.random.key(1))
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), batch)["params"])
    optimizer = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05)
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda p: model.apply({"params": p}, batch)[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))
    # The size sweep runs before the warm-up steps: on this VM the train step
    # right after large matmuls paid seconds of extra kernel (sys) time in its
    # XLA threads (e.g. 0.4 s -> 3-6 s; same page-fault count, no compaction
    # stalls), and the warm-up absorbs that.
    matmuls = peak_matmuls(backend.cpu_kernels)
    _, _, peak_size, peak_matmul = measure_peak_flops([int(v) for v in args.peak_sizes.split(",")], matmuls)
    peak_operands: dict = {}
    compile_start = time.perf_counter()
    for _ in range(2):  # compile + one warm step (first-run allocations)
        params, opt_state, loss = step(params, opt_state, batch)
    loss.block_until_ready()
    warmup_s = time.perf_counter() - compile_start

    times, cpu_times, peaks, peaks_cpu = [], [], [], []
    for index in range(args.steps):
        if index > 0:  # an untimed step after each peak measurement, for the same reason
            params, opt_state, loss = step(params, opt_state, batch)
            loss.block_until_ready()
        cpu_start, start = time.process_time(), time.perf_counter()
        params, opt_state, loss = step(params, opt_state, batch)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        peak, peak_cpu, _, _ = measure_peak_flops([peak_size], {peak_matmul: matmuls[peak_matmul]}, repeats=2,
                                                  operands=peak_operands)
        peaks.append(peak)
        peaks_cpu.append(peak_cpu)
    step_s = float(np.median(times))
    step_cpu_s = float(np.median(cpu_times))
    flops = training_flops(model, args.batch, args.seasons)
    result = {
        "step_s": round(step_s, 4),
        "step_s_min": round(min(times), 4),
        "images_per_s": round(args.batch / step_s, 2),
        "flops_per_step": flops,
        "achieved_flops": round(flops / step_s),
        "peak_flops": round(float(np.median(peaks))),
        "peak_flops_best": round(max(peaks)),
        "peak_size": peak_size,
        "peak_matmul": peak_matmul,
        "mfu": round(float(np.median([flops / t / p for t, p in zip(times, peaks)])), 4),
        "mfu_best_peak": round(flops / step_s / max(peaks), 4),
        "step_times_s": [round(t, 3) for t in times],
        "peaks_gflops": [round(p / 1e9, 1) for p in peaks],
        # Same paired ratio on process CPU time (step and peak): robust to other processes' load.
        "step_cpu_s": round(step_cpu_s, 4),
        "mfu_cpu": round(float(np.median([flops / t / p for t, p in zip(cpu_times, peaks_cpu)])), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "warmup_s": round(warmup_s, 2),
        "loss": float(loss),
        "malloc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "cpu_kernels": backend.cpu_kernels,
        "device": f"{jax.devices()[0].platform}:{jax.device_count()}x{os.cpu_count()}cpu",
        "config": vars(args),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    # Same host-malloc settings as the `seamo` command (seamo_jax/host_memory.py);
    # SEAMO_DEFAULT_MALLOC=1 measures with glibc's defaults instead.
    from seamo_jax.host_memory import reexec_for_cpu_run

    reexec_for_cpu_run()
    main()
