"""`seamo demo`: synthetic data -> tiny SeaMo pretraining -> linear probe, in minutes on a CPU.

Steps (each a public stage, nothing demo-only):
1. `run_pretraining(config, <workdir>/pretrain)` builds the synthetic
   four-season S1+S2 dataset (TFDS builder, ArrayRecord) if missing and
   pretrains; progress bar, TensorBoard events, reconstruction PNGs.
2. `run_probe(...)` on frozen features: the pretrained encoder, the same
   encoder at random init and the per-band mean/std baseline, 3 seeds each.
3. A table on stdout and `<workdir>/demo_results.json`.

The probe uses the demo config's probe section, restricted to the input the
model was trained on (S2+S1, 4 seasons, all labels) to stay within the time
budget; `seamo probe --config probe_synthetic` runs the full grid (S1-only,
S2-only, one season, label fractions).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import ml_collections

from seamo_jax import configs
from seamo_jax.configs import apply_overrides, load_config
from seamo_jax.paths import user_path

ENCODER_TITLES = {"pretrained": "SeaMo pretrained", "random_init": "same encoder, random init",
                  "band_stats": "band mean/std baseline", "texture": "texture-feature baseline"}


def demo_probe_config(train_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The demo's probe: its own config's probe section, on the input it trained on, all labels."""
    probe_config = configs.config_from_dict(train_config.to_dict(), "the demo config")
    probe_config.probe.input_sets = ({"name": "S2+S1, 4 seasons", "modalities": tuple(train_config.probe.modalities),
                                      "seasons": tuple(range(int(train_config.probe.seasons)))},)
    probe_config.probe.label_fractions = (1.0,)
    probe_config.probe.data_dir = train_config.data.data_dir
    probe_config.probe.build_dataset = True
    return probe_config


def _summaries(probe_results: dict[str, Any], metric: str = "linear_top1") -> dict[str, dict]:
    rows = [r for r in probe_results["results"] if r["metric"] == metric and r["label_fraction"] == 1.0]
    return {r["encoder"]: {"mean": r["mean"], "std": r["std"], "ci_half_width": r.get("ci_half_width"),
                           "per_seed": [s["value"] for s in r["per_seed"]]} for r in rows}


def format_table(results: dict[str, Any]) -> str:
    pre = results["pretraining"]
    lines = [
        "",
        "SeaMo demo results",
        "==================",
        f"pretraining: {pre['steps']} steps, batch {pre['batch_size']}, loss {pre['loss_start']:.4f} -> "
        f"{pre['loss_end']:.4f}, {pre['images_per_s']:.1f} images/s, {pre['wall_time_s']:.0f} s",
        f"linear probe on frozen features, {results['probe']['num_classes']} classes "
        f"(chance {100 / results['probe']['num_classes']:.1f}%), seeds {results['probe']['seeds']}:",
        f"  {'features':<28} {'top-1 mean':>10} {'std':>7}   per seed",
    ]
    for name, summary in results["probe"]["linear_top1"].items():
        per_seed = ", ".join(f"{100 * v:.2f}" for v in summary["per_seed"])
        lines.append(f"  {ENCODER_TITLES.get(name, name):<28} {100 * summary['mean']:>9.2f}% "
                     f"{100 * summary['std']:>6.2f}   [{per_seed}]")
    knn = results["probe"].get("knn_top1", {})
    if knn:
        lines.append("  kNN (k=20, cosine) top-1: " + ", ".join(
            f"{ENCODER_TITLES.get(n, n)} {100 * s['mean']:.2f}%" for n, s in knn.items()))
    lines += [
        f"pretrained beats random init by {100 * results['margins']['vs_random_init']:.2f} points, "
        f"band statistics by {100 * results['margins']['vs_band_stats']:.2f} points "
        f"(largest seed std {100 * results['margins']['max_std']:.2f})",
        f"total wall time: {results['wall_time_s']:.0f} s",
        "",
        f"checkpoint:          {pre['checkpoint_dir']}",
        f"TensorBoard events:  {pre['tensorboard_dir']}   (tensorboard --logdir {pre['tensorboard_dir']})",
        f"reconstructions:     {pre['recon_dir']}",
        f"probe table:         {results['probe']['out_dir']}/probe_results.md",
        f"these numbers:       {results['results_file']}",
    ]
    return "\n".join(lines)


def run_demo(workdir: str | os.PathLike = "runs/demo", *, config_spec: str = "demo_cpu",
             overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the whole demo in `workdir`; returns (and writes) the results dict."""
    from seamo_jax.evaluate.probe import run_probe
    from seamo_jax.train.loop import run_pretraining

    from absl import logging as absl_logging

    # Orbax/TFDS log read-only-manager notices at WARNING; the demo's own output is the report.
    absl_logging.set_verbosity(absl_logging.ERROR)
    wall_start = time.time()
    workdir = user_path(workdir)
    config = load_config(config_spec)
    config.data.data_dir = config.data.data_dir or str(workdir / "tfds")
    apply_overrides(config, overrides)

    print(f"[1/2] pretraining a {config.model.size} SeaMo ({'+'.join(config.data.modalities)}, "
          f"{config.data.seasons} seasons, fusion={config.model.fusion}) in {workdir / 'pretrain'}")
    pretraining = run_pretraining(config, workdir / "pretrain", build_dataset=True)  # one process: safe to build
    pretraining["batch_size"] = int(config.data.batch_size)

    print("[2/2] linear probe: pretrained vs random init vs band statistics")
    probe_out = workdir / "probe"
    probe_results = run_probe(demo_probe_config(config), str(workdir / "pretrain"), str(probe_out))

    linear = _summaries(probe_results, "linear_top1")
    knn = _summaries(probe_results, "knn_top1")
    results = {
        "pretraining": pretraining,
        "probe": {"num_classes": probe_results["num_classes"], "seeds": probe_results["seeds"],
                  "linear_top1": linear, "knn_top1": knn, "out_dir": str(probe_out)},
        "margins": {
            "vs_random_init": linear["pretrained"]["mean"] - linear["random_init"]["mean"],
            "vs_band_stats": linear["pretrained"]["mean"] - linear["band_stats"]["mean"],
            "max_std": max(s["std"] for s in linear.values()),
        },
        "wall_time_s": time.time() - wall_start,
        "results_file": str(workdir / "demo_results.json"),
    }
    (workdir / "demo_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(format_table(results))
    return results
