"""Does a record storage / view path change what the encoder learns? Pretrain + probe side by side. ONE JSON line.

Each variant builds the demo's synthetic_seasons set (48 px, 1536 + 512
records) in its storage, pretrains the demo's tiny SeaMo (`demo_cpu`) for
`--steps` steps with each pretraining seed, and probes every run with
`probe_synthetic` on the same storage (linear top-1, 100% labels, averaged
over the probe's own seeds). Reported per variant and probe input: the mean
over pretraining seeds, the 95% t-interval half-width, the per-seed values,
and whether its interval overlaps the first variant's (the reference).

Variants:
  grid_host      `s2` on the 10 m grid, no codec, views made by the host (the pipeline before 2026-12-01)
  native_device  S2 at native 10/20/60 m, blosc2, views made in the jitted step (config.data.views="device")
  grid_device    the grid records, views made in the step (isolates the view path)

    python benchmarks/storage_probe.py                      # grid_host vs native_device, 200 steps, seeds 0,1,2
    python benchmarks/storage_probe.py --variants grid_host,grid_device --steps 100
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

VARIANTS = {
    "grid_host": (dict(), "host"),
    "native_device": (dict(s2_layout="native", codec="blosc2"), "device"),
    "grid_device": (dict(), "device"),
}
PROBE_METRIC = ("linear_top1", 1.0)


def _interval(values: list[float]) -> tuple[float, float]:
    from scipy import stats  # noqa: PLC0415

    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def run_variant(name: str, args: argparse.Namespace) -> dict:
    from data_pipelines import registry  # noqa: PLC0415
    from seamo_jax import configs  # noqa: PLC0415
    from seamo_jax.evaluate.probe import run_probe  # noqa: PLC0415
    from seamo_jax.train.loop import run_pretraining  # noqa: PLC0415

    storage, views = VARIANTS[name]
    root = pathlib.Path(args.workdir)
    data_dir = root / "tfds"
    per_input: dict[str, list[float]] = {}
    losses, seconds_all = [], []
    for seed in args.seeds:
        config = configs.load_config("demo_cpu")
        with config.unlocked():
            config.data.builder_kwargs.update(storage)
        config.data.data_dir = str(data_dir)
        config.data.views = views
        config.seed = seed
        config.train.num_steps = args.steps
        config.train.progress_bar = False
        workdir = root / name / f"seed{seed}"
        done = workdir / "storage_probe_run.json"  # a finished run is reused when the script is rerun
        if done.exists():
            run = json.loads(done.read_text())
        else:
            registry.prepare(config.data.builder, str(data_dir), **dict(config.data.builder_kwargs))
            start = time.time()
            summary = run_pretraining(config, str(workdir))
            seconds = time.time() - start
            probe = configs.load_config("probe_synthetic")
            probe.data.data_dir = str(data_dir)
            probe.probe.builder_kwargs = dict(config.data.builder_kwargs)
            probe.probe.encoders = ("pretrained",)
            results = run_probe(probe, str(workdir), str(workdir / "probe"))
            rows = {row["input"]: 100.0 * float(row["mean"]) for row in results["results"]
                    if (row["protocol"], row["metric"], row["label_fraction"]) == ("seamo", *PROBE_METRIC)
                    and row["encoder"] == "pretrained"}
            run = {"loss": float(summary["loss_end"]), "seconds": seconds, "linear_top1_pct": rows}
            done.write_text(json.dumps(run))
        losses.append(run["loss"])
        seconds_all.append(run["seconds"])
        for key, value in run["linear_top1_pct"].items():
            per_input.setdefault(key, []).append(value)
        print(f"{name} seed {seed}: {run['seconds']:.0f} s, loss {run['loss']:.6f}", file=sys.stderr, flush=True)
    return {"storage": storage or "grid/none", "views": views, "final_loss": losses,
            "pretrain_s": [round(s, 1) for s in seconds_all],
            "linear_top1_pct": {k: {"mean": round(_interval(v)[0], 2), "ci95": round(_interval(v)[1], 2),
                                    "per_seed": [round(x, 2) for x in v]} for k, v in per_input.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="grid_host,native_device")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", default="runs/storage_probe")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; use {sorted(VARIANTS)}")
    from seamo_jax.host_memory import reexec_for_cpu_run  # noqa: PLC0415

    reexec_for_cpu_run()  # the malloc tunables of the `seamo` command (seamo_jax/host_memory.py)
    measured = {name: run_variant(name, args) for name in names}
    reference = measured[names[0]]["linear_top1_pct"]
    for name in names[1:]:
        for key, row in measured[name]["linear_top1_pct"].items():
            ref = reference.get(key)
            if ref is not None:
                row["overlaps_reference"] = bool(abs(row["mean"] - ref["mean"]) <= row["ci95"] + ref["ci95"])
    print(json.dumps({"reference": names[0], "steps": args.steps, "seeds": args.seeds,
                      "metric": "linear top-1 %, 100% labels, mean over probe seeds; mean +- 95% t over pretraining "
                                "seeds", "variants": measured}))


if __name__ == "__main__":
    main()
