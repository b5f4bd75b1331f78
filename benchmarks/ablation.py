"""SeaMo ablation on the synthetic seasons set: each arm pretrained with the same compute, then probed.

What it measures. Every arm is the tiny CPU SeaMo of seamo_jax/experiments/demo_cpu.py
plus a few config overrides (ARMS). Each arm is pretrained with
`seamo_jax.train.loop.run_pretraining` on the same synthetic dataset and
probed on frozen features with `seamo_jax.evaluate.probe.run_probe`: linear
probe (L-BFGS logistic regression) and kNN top-1 at 100% of the labels,
3 seeds, mean / std / 95% t-interval, next to run_probe's baselines on the
same inputs (the same architecture at random init, per-band mean/std, and
whatever else --probe-config lists, e.g. the texture baseline).

  a         S2 only, 1 season, no fusion: plain MAE
  b         S1+S2, 1 season, no TM
  c         S1+S2, 4 seasons, no TM
  d         full SeaMo: S1+S2, 4 seasons, TM (regions partial, per_season, view positions)
  d_same / d_disjoint   d with data.region_selection = same / disjoint
  d_joint               d with model.season_encoding = joint
  d_tile                d with model.position_frame = tile

Same compute: by default (--match flops) every arm gets the training FLOPs of
arm d at --steps steps (seamo_jax.models.flops.training_flops per step x
steps; batch fixed at data.batch_size), so arms with fewer tokens per sample
run more steps. --match tokens: the same steps x batch x input tokens (every
patch of every view); --match steps: the same steps x batch. Warmup is 8% of
each arm's steps, as in the demo (40 of 500). Single-season arms draw one
random season per sample (data.season_subsample), so all arms see the same
imagery; what differs is whether the seasons come together.

Probe inputs: every arm on the input it was trained on ("own": S2+S1 x 4
seasons, S2+S1 season 0, or S2 season 0) and on one common input, S2
season 0 (the only input every arm can encode), so rows compare across arms.

Dataset: synthetic_seasons with 64 px tiles (the demo uses 48) so that four
disjoint 32 px views fit in a tile; labels from --labels (builder kwarg
`labels`; '' = the builder's default scene-layout labels); the probe reads
that same dataset, with the other settings of --probe-config.

    python benchmarks/ablation.py --out docs/ablation.md   # all 8 arms, default labels / probe config
    python benchmarks/ablation.py --quick                  # smoke: arm d, tiny set, 8 steps, 1 seed (~1.5 min)
    python benchmarks/ablation.py --quick --arms a,d       # smoke of the single-season path too (~3 min)
    python benchmarks/ablation.py --arms d,d_joint --steps 100 --set data.batch_size=32
    python benchmarks/ablation.py --plan                   # arms, overrides, steps, FLOPs; no training

Expected cost (2 CPU cores, extrapolated from --quick runs; arm d at 0.35
s/step quiet as in the demo, 0.6-0.7 s/step with other jobs running): about
30 min for all arms on a quiet machine, about 45 min on a shared one; the
probes take about 40% of it.
The single-season arms run the longest (8.7x / 5x the steps of d, at more
overhead per FLOP). XLA's persistent cache in <workdir>/jax_cache lets arms
with equal programs (d, d_same, d_disjoint) skip compilation.

Prints one JSON line per arm on stdout (progress goes to stderr): settings,
pretraining steps / FLOPs / wall time / loss, and per probe input and
encoder the metrics' mean, std, 95% CI half-width and per-seed values.
`--out FILE.md` also writes the tables with the exact command that made them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shlex
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE_CONFIG = "demo_cpu"
REFERENCE_ARM = "d"
ARMS = {  # name -> (description, overrides of BASE_CONFIG on top of COMMON)
    "a": ("S2 only, 1 season, no fusion (MAE)",
          ("data.modalities=s2", "data.seasons=1", "data.season_subsample=True", "model.fusion=none")),
    "b": ("S1+S2, 1 season, no TM", ("data.seasons=1", "data.season_subsample=True", "model.fusion=none")),
    "c": ("S1+S2, 4 seasons, no TM", ("model.fusion=none",)),
    "d": ("full SeaMo: S1+S2, 4 seasons, TM", ()),
    "d_same": ("d, region_selection=same", ("data.region_selection=same",)),
    "d_disjoint": ("d, region_selection=disjoint", ("data.region_selection=disjoint",)),
    "d_joint": ("d, season_encoding=joint", ("model.season_encoding=joint",)),
    "d_tile": ("d, position_frame=tile", ("model.position_frame=tile",)),
}
COMMON = ("data.builder_kwargs.tile_size=64", "train.recon_every=0", "train.progress_bar=False",
          "train.keep_checkpoints=1", "train.log_every=50")
QUICK = ("data.builder_kwargs.num_train=256", "data.builder_kwargs.num_test=128", "probe.num_train=256")
QUICK_ARMS, QUICK_STEPS, DEFAULT_STEPS = "d", 8, 200
WARMUP_FRACTION = 0.08
COMMON_INPUT = {"name": "S2, season 0", "modalities": ("s2",), "seasons": (0,)}
METRICS = {"single_label": ("linear_top1", "knn_top1"), "multi_label": ("macro_map", "micro_map")}
# model keys that only touch fusion / decoders / loss, not `encode`
ENCODE_INDEPENDENT = ("fusion", "num_fusion_blocks", "tm_carry", "decoder_dim", "decoder_depth", "decoder_heads",
                      "norm_pix_loss")
SETTINGS = ("data.modalities", "data.seasons", "model.fusion", "data.region_selection", "model.season_encoding",
            "model.position_frame")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", default="", help=f"comma list of {','.join(ARMS)} (default all; --quick: {QUICK_ARMS})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"steps of the reference arm d; the others get the same compute (default {DEFAULT_STEPS}; "
                        f"--quick {QUICK_STEPS})")
    p.add_argument("--match", choices=("flops", "tokens", "steps"), default="flops")
    p.add_argument("--seeds", default=None, help="probe seeds, comma list (default 0,1,2; --quick 0)")
    p.add_argument("--labels", default="land_cover",
                   help="synthetic label set (builder kwarg labels); '' = the builder default (scene)")
    p.add_argument("--probe-config", default="probe_synthetic:land_cover")
    p.add_argument("--workdir", default="runs/ablation", help="<workdir>/tfds, <workdir>/<arm>/{pretrain,probe}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny dataset, few steps, 1 seed")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use <workdir>/jax_cache (XLA's persistent cache: arms with equal programs reuse them)")
    p.add_argument("--plan", action="store_true", help="print each arm's plan (JSON lines) and exit")
    p.add_argument("--out", default="", help="also write a Markdown table here, e.g. docs/ablation.md")
    args = p.parse_args(argv)
    args.arms = [a for a in (args.arms or (QUICK_ARMS if args.quick else ",".join(ARMS))).split(",") if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arms {unknown}; known: {list(ARMS)}")
    args.steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    args.seeds = tuple(int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(","))
    return args


def base_config(args: argparse.Namespace):
    """demo_cpu.py + COMMON (+ QUICK) + --set, labels and data dir: what every arm starts from."""
    from seamo_jax.configs import apply_overrides, load_config

    import ml_collections

    config = load_config(BASE_CONFIG, COMMON + (QUICK if args.quick else ()))
    if args.labels:  # a builder kwarg: builder_kwargs is replaced whole
        config.data.builder_kwargs = ml_collections.ConfigDict({**config.data.builder_kwargs, "labels": args.labels})
    config.data.data_dir = str(pathlib.Path(args.workdir) / "tfds")
    return apply_overrides(config, args.set)


def arm_config(base, name: str):
    """A copy of `base` with arm `name`'s overrides (KeyError for a key the config lacks)."""
    from seamo_jax.configs import apply_overrides, config_from_dict

    return apply_overrides(config_from_dict(base.to_dict()), ARMS[name][1])


def step_cost(config, match: str) -> float:
    """Compute of one training step in the --match unit."""
    from seamo_jax.models import build_model_from_config, flops

    batch = int(config.data.batch_size)
    if match == "steps":
        return float(batch)
    model = build_model_from_config(config)
    if match == "tokens":
        return float(batch * int(config.data.seasons) * len(config.data.modalities) * model.num_tokens)
    return float(flops.training_flops(model, batch))


def set_schedule(config, steps: int):
    config.train.num_steps = int(steps)
    config.optim.warmup_steps = max(1, round(WARMUP_FRACTION * steps))
    config.train.checkpoint_every = int(steps)  # one save, at the end
    return config


def probe_inputs(config) -> dict[str, dict]:
    """role -> probe input set: "own" (what the arm trained on) and "common" (S2, season 0)."""
    mods, seasons = tuple(config.data.modalities), int(config.data.seasons)
    name = f"{'+'.join(m.upper() for m in mods)}, " + (f"{seasons} seasons" if seasons > 1 else "season 0")
    return {"own": {"name": name, "modalities": mods, "seasons": tuple(range(seasons))}, "common": COMMON_INPUT}


def plan(args: argparse.Namespace) -> dict[str, dict]:
    """arm -> {"config", "steps", "cost_per_step", "train_flops"}, compute matched to arm d at args.steps."""
    from seamo_jax.models import build_model_from_config, flops

    base = base_config(args)
    names = list(dict.fromkeys([REFERENCE_ARM, *args.arms]))
    configs = {n: arm_config(base, n) for n in names}
    cost = {n: step_cost(c, args.match) for n, c in configs.items()}
    budget = args.steps * cost[REFERENCE_ARM]
    out = {}
    for n in args.arms:
        steps = max(1, round(budget / cost[n]))
        config = set_schedule(configs[n], steps)
        per_step = flops.training_flops(build_model_from_config(config), int(config.data.batch_size))
        out[n] = {"config": config, "steps": steps, "cost_per_step": cost[n], "train_flops_per_step": per_step,
                  "train_flops": per_step * steps}
    return out


def probe_config(train_config, args: argparse.Namespace):
    """The probe config of one arm: --probe-config with the arm's data/model/mask/mesh (as demo_probe_config)."""
    import ml_collections
    from seamo_jax.configs import config_from_dict, load_config
    from seamo_jax.train.loop import builder_kwargs

    config = config_from_dict({**train_config.to_dict(), "probe": load_config(args.probe_config).probe.to_dict()})
    probe = config.probe
    probe.input_sets = tuple({s["name"]: dict(s) for s in probe_inputs(train_config).values()}.values())
    probe.label_fractions = (1.0,)
    probe.seeds = args.seeds
    probe.num_train = int(train_config.probe.num_train)
    probe.data_dir = train_config.data.data_dir
    probe.builder_kwargs = ml_collections.ConfigDict(builder_kwargs(train_config.data))  # the pretraining dataset
    probe.crop_size = int(train_config.data.crop_size)
    probe.build_dataset = True
    probe.cache_dir = str(pathlib.Path(args.workdir) / "feature_cache" / encoder_signature(train_config))
    return config


def encoder_signature(config) -> str:
    """Digest of what `encode` depends on besides params: arms sharing it share random-init features.

    The feature cache keys on params, inputs and pooling but not on the model config, so arms whose
    encoders compute differently (season_encoding, position_frame) must not share a cache folder.
    """
    import hashlib

    model = {k: v for k, v in config.model.to_dict().items() if k not in ENCODE_INDEPENDENT}
    data = {k: config.data[k] for k in ("modalities", "seasons", "crop_size", "sensors")}
    return hashlib.sha256(json.dumps([model, data], sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_inputs(args: argparse.Namespace, base) -> None:
    """Fails early, naming the fix, when the label set or the probe config variant does not exist."""
    from data_pipelines import registry
    from seamo_jax.configs import load_config
    from seamo_jax.train.loop import builder_kwargs

    try:
        load_config(args.probe_config)
    except (ValueError, FileNotFoundError, AttributeError) as err:
        raise SystemExit(f"ablation: probe config {args.probe_config!r} is not available ({err}); "
                         "pass e.g. --probe-config probe_synthetic") from err
    kwargs = builder_kwargs(base.data)
    try:
        registry.get_builder(base.data.builder, base.data.data_dir, **kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise SystemExit(f"ablation: builder {base.data.builder!r} rejects {kwargs} ({err}); label set "
                         f"{args.labels!r} may not exist yet: pass --labels '' for the default labels") from err


def _cell(rows: list[dict], metric: str) -> dict:
    r = next(r for r in rows if r["metric"] == metric)
    return {"mean": r["mean"], "std": r["std"], "ci95": r["ci_half_width"], "per_seed": r["values"]}


def summarize_probe(results: dict, inputs: dict[str, dict]) -> dict:
    """input name -> {"roles", encoder -> metric -> {mean, std, ci95, per_seed}} at 100% labels."""
    rows = [r for r in results["results"] if r["label_fraction"] == 1.0]
    out = {}
    for role, spec in inputs.items():
        entry = out.setdefault(spec["name"], {"roles": []})
        entry["roles"].append(role)
        for encoder in dict.fromkeys(r["encoder"] for r in rows if r["input"] == spec["name"]):
            cell = [r for r in rows if r["input"] == spec["name"] and r["encoder"] == encoder]
            metrics = [m for m in METRICS[results["task"]] if any(r["metric"] == m for r in cell)]
            entry[encoder] = {m: _cell(cell, m) for m in metrics}
    return out


def run_arm(name: str, arm: dict, args: argparse.Namespace) -> dict:
    from seamo_jax.evaluate.probe import run_probe
    from seamo_jax.train.loop import run_pretraining

    config, arm_dir = arm["config"], pathlib.Path(args.workdir) / name
    shutil.rmtree(arm_dir, ignore_errors=True)  # a fresh run, not a resume of an older one
    start = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON lines
        print(f"[ablation] arm {name}: {ARMS[name][0]}, {arm['steps']} steps", flush=True)
        pre = run_pretraining(config, arm_dir / "pretrain", build_dataset=True)
        probe_start = time.time()
        results = run_probe(probe_config(config, args), str(arm_dir / "pretrain"), str(arm_dir / "probe"))
    inputs = probe_inputs(config)
    return {
        "benchmark": "ablation", "arm": name, "description": ARMS[name][0], "overrides": list(ARMS[name][1]),
        "settings": {k: _get(config, k) for k in SETTINGS}, "match": args.match,
        "pretraining": {"steps": pre["steps"], "batch_size": int(config.data.batch_size),
                        "train_flops_per_step": arm["train_flops_per_step"], "train_flops": arm["train_flops"],
                        "wall_time_s": pre["wall_time_s"], "compile_s": pre["compile_s"],
                        "step_time_s": pre["step_time_s"], "images_per_s": pre["images_per_s"],
                        "loss_start": pre["loss_start"], "loss_end": pre["loss_end"], "num_params": pre["num_params"]},
        "probe": {"task": results["task"], "num_classes": results["num_classes"], "seeds": results["seeds"],
                  "own_input": inputs["own"]["name"], "common_input": inputs["common"]["name"],
                  "wall_time_s": time.time() - probe_start, "out_dir": str(arm_dir / "probe"),
                  "inputs": summarize_probe(results, inputs)},
        "wall_time_s": time.time() - start,
    }


def _get(config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return list(value) if isinstance(value, tuple) else value


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "-"
    ci = f" ± {100 * cell['ci95']:.1f}" if cell.get("ci95") is not None else ""
    return f"{100 * cell['mean']:.1f}{ci}"


def markdown(rows: list[dict], args: argparse.Namespace, command: str, extra: dict) -> str:
    import jax

    task = rows[0]["probe"]["task"]
    primary, secondary = METRICS[task]
    common = COMMON_INPUT["name"]
    lines = [
        "# SeaMo ablation on the synthetic seasons set", "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')} ({jax.devices()[0].platform}, {os.cpu_count()} cores; "
        f"{extra['wall_time_s'] / 60:.1f} min in all, dataset build {extra['build_s']:.0f} s). "
        "Generated by benchmarks/ablation.py; its docstring describes the arms.", "",
        f"- Base config `{BASE_CONFIG}` + `{' '.join(COMMON + (QUICK if args.quick else ()) + tuple(args.set))}`; "
        f"label set `{args.labels or 'default'}`, probe config `{args.probe_config}`.",
        f"- Same compute (`--match {args.match}`): arm {REFERENCE_ARM} runs {args.steps} steps at batch "
        f"{rows[0]['pretraining']['batch_size']}; every arm gets the same "
        + {"flops": "training FLOPs (models/flops.py)", "tokens": "steps x batch x input tokens",
           "steps": "steps x batch"}[args.match] + ".",
        f"- Probe: frozen features, {primary} / {secondary} at 100% labels, {rows[0]['probe']['num_classes']} "
        f"classes, mean ± 95% CI half-width over seeds {list(args.seeds)}, in %. \"own\" = the input the arm "
        f"was trained on, \"{common}\" = the common input every arm can encode.", "",
        f"| arm | setting | steps | train TFLOP | pretrain s | loss start → end | own input | {primary} own | "
        f"{secondary} own | {primary} {common} | {secondary} {common} |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        pre, probe = r["pretraining"], r["probe"]
        own, com = probe["inputs"][probe["own_input"]]["pretrained"], probe["inputs"][common]["pretrained"]
        lines.append(f"| {r['arm']} | {r['description']} | {pre['steps']} | {pre['train_flops'] / 1e12:.2f} | "
                     f"{pre['wall_time_s']:.0f} | {pre['loss_start']:.3f} → {pre['loss_end']:.3f} | "
                     f"{probe['own_input']} | {_fmt(own.get(primary))} | {_fmt(own.get(secondary))} | "
                     f"{_fmt(com.get(primary))} | {_fmt(com.get(secondary))} |")
    baselines = list(dict.fromkeys(e for r in rows for i in r["probe"]["inputs"].values() for e in i
                                   if e not in ("roles", "pretrained")))
    lines += ["", f"Baselines from the same run_probe calls ({primary} / {secondary}; random init = the arm's "
                  "architecture, untrained):", "",
              "| arm | input | " + " | ".join(baselines) + " |", "|---|---|" + "---:|" * len(baselines)]
    for r in rows:
        for input_name, entry in r["probe"]["inputs"].items():
            cells = [f"{_fmt(entry.get(b, {}).get(primary))} / {_fmt(entry.get(b, {}).get(secondary))}"
                     for b in baselines]
            lines.append(f"| {r['arm']} | {input_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax/TFDS notices; the report is the output
    arms = plan(args)
    if args.plan:
        for name, arm in arms.items():
            print(json.dumps({"arm": name, "description": ARMS[name][0], "overrides": list(ARMS[name][1]),
                              **{k: v for k, v in arm.items() if k != "config"},
                              "probe_inputs": probe_inputs(arm["config"])}, default=list))
        return []
    import jax
    from data_pipelines import registry
    from seamo_jax.train.loop import builder_kwargs

    if not args.no_compile_cache:  # d, d_same, d_disjoint compile the same programs; probes share solvers
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.workdir) / "jax_cache"))
    start = time.time()
    base = base_config(args)
    check_inputs(args, base)
    with contextlib.redirect_stdout(sys.stderr):
        registry.prepare(base.data.builder, base.data.data_dir, **builder_kwargs(base.data))
    build_s = time.time() - start
    rows = []
    for name, arm in arms.items():
        rows.append(run_arm(name, arm, args))
        print(json.dumps(rows[-1], default=str), flush=True)
    if args.out:
        command = "python benchmarks/ablation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        text = markdown(rows, args, command.strip(), {"wall_time_s": time.time() - start, "build_s": build_s})
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(text)
        print(f"[ablation] wrote {args.out}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    from seamo_jax.host_memory import reexec_for_cpu_run

    reexec_for_cpu_run()  # same malloc tunables as the `seamo` command (seamo_jax/host_memory.py)
    main()
