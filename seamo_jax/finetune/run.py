"""`run_finetune`: end-to-end fine-tuning of the SeaMo encoder over input sets, label fractions and seeds.

For each input set (modalities x seasons fed to `encode`), encoder
("pretrained": the checkpoint's encoder; "random_init": the same
architecture from scratch), seed and label fraction, one run fine-tunes
encoder + fc_norm + linear head with the MAE recipe (head.py, base.py's
`finetune` section): AdamW, layer-wise lr decay, drop path, linear warmup +
cosine, label smoothing (single-label) or sigmoid BCE (multi-label), and
scores the test split once at the end. The label subsets are the probe's
(the same arrays, `evaluate/splits.py` files in <out>/splits), so rows of
finetune_results.json sit beside probe_results.json in the probe's schema.

Runs are resumable: each lives in <out>/runs/<input>/<encoder>/fraction_<f>/seed_<s>
with its Orbax checkpoints (every `finetune.checkpoint_every` steps),
metrics.jsonl + TensorBoard, run.json (the settings it was started with;
a rerun with other settings is an error) and, when done, result.json (a
rerun skips it). Batches are a pure function of (seed, step) (data.py), so a
run killed at any point and rerun ends with bitwise the params of an
uninterrupted run on the same mesh, and the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np
from etils import epath

from seamo_jax import configs, models, parallel
from seamo_jax.evaluate import encoders, probe_data, report, splits, stats
from seamo_jax.finetune import head as head_lib
from seamo_jax.finetune import trainer as trainer_lib
from seamo_jax.finetune.train_one import Preempted, train_and_score
from seamo_jax.paths import PathLike, user_path, write_text_atomic
from seamo_jax.train import checkpoint as checkpoint_lib

ENCODERS = ("pretrained", "random_init")
PROTOCOL = "finetune_mae"
JSON_FILE = "finetune_results.json"
MARKDOWN_FILE = "finetune_results.md"
METRIC_PREFIX = "finetune_"


# ------------------------------------------------------------------ sweep description

def input_sets(config: Any) -> list[dict]:
    """finetune.input_sets, else the probe's (probe.input_sets, else probe.modalities x probe.seasons).

    Each: {"name", "modalities": tuple, "seasons": tuple of season indices}.
    """
    from seamo_jax.evaluate.probe import input_sets as probe_input_sets

    return probe_input_sets(config, config.finetune.input_sets)


def sweep_axes(config: Any) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(label fractions, seeds): the finetune section's, or the probe's where those are ()."""
    ft = config.finetune
    fractions = tuple(float(f) for f in (ft.label_fractions or config.probe.label_fractions))
    seeds = tuple(int(s) for s in (ft.seeds or config.probe.seeds))
    return fractions, seeds


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9+.-]+", "_", name.lower()).strip("_") or "input"


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(array, np.int64)).tobytes()).hexdigest()[:16]


# ------------------------------------------------------------------ encoder source

def encoder_source(config: Any, checkpoint_dir: str | None) -> tuple[encoders.EncoderSource, Any]:
    """The architecture (and, with a checkpoint, its step) without reading any weights.

    With a checkpoint its config.json / sensors.json define the model and the
    encoder tree in the checkpoint is checked against it from metadata
    (models.check_params_tree's error on any difference); without one,
    `config` does (random init only).
    Returns:
      (source, fine-tune config): source.pretrained is None (weights are
      restored into shardings later); the second is the architecture config
      with model.drop_path = finetune.drop_path (and finetune.dtype).
    """
    if checkpoint_dir:
        if not user_path(checkpoint_dir).exists():
            raise FileNotFoundError(f"checkpoint {checkpoint_dir} does not exist (give a pretraining workdir "
                                    f"or its checkpoints/ dir)")
        train_config, specs = checkpoint_lib.read_run_metadata(checkpoint_dir)
        step = checkpoint_lib.latest_complete_step(checkpoint_dir)
        if step is None:
            directory = checkpoint_lib.resolve_checkpoint_dir(checkpoint_dir)
            raise FileNotFoundError(f"no complete checkpoint in {directory}")
    else:
        train_config, step = config, None
        specs = checkpoint_lib.sensor_specs_from_config(config.data)
    ft_config = configs.config_from_dict(train_config.to_dict(), origin="fine-tune architecture")
    ft_config.model.drop_path = float(config.finetune.drop_path)
    if config.finetune.dtype:
        ft_config.model.dtype = config.finetune.dtype
    model = models.build_model_from_config(train_config, specs)  # as the checkpoint was written (no drop path)
    if checkpoint_dir:
        trainer_lib.check_checkpoint_encoder(checkpoint_dir, step, model)
    data = train_config.data
    source = encoders.EncoderSource(model=model, model_config=train_config.model, modalities=tuple(data.modalities),
                                    num_seasons=models.num_seasons_of(train_config), image_size=int(data.crop_size),
                                    sensor_specs=dict(specs), pretrained=None,
                                    checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, step=step)
    return source, ft_config


def _check_input_sets(sets: list[dict], source: encoders.EncoderSource) -> None:
    for s in sets:
        unknown = [m for m in s["modalities"] if m not in source.modalities]
        if unknown:
            raise ValueError(f"fine-tune input set {s['name']!r} asks for modalities {unknown}; the encoder has "
                             f"tokenizers for {list(source.modalities)}")
        if max(s["seasons"]) >= source.num_seasons or min(s["seasons"]) < 0:
            raise ValueError(f"fine-tune input set {s['name']!r} asks for seasons {list(s['seasons'])}; the encoder "
                             f"has {source.num_seasons} season embedding(s)")


# ------------------------------------------------------------------ one run

def _json_read(path: epath.Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: epath.Path, value: Any) -> None:
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


# ------------------------------------------------------------------ the sweep



def _recipe(config: Any, num_train: int) -> trainer_lib.Recipe:
    """Schedule length and lr of a run on `num_train` labelled rows (base.py's finetune keys)."""
    ft = config.finetune
    batch_size = int(ft.batch_size)
    steps_per_epoch = max(1, math.ceil(num_train / batch_size))
    epochs = float(ft.epochs)
    num_steps = int(ft.num_steps) or max(1, int(round(epochs * steps_per_epoch)))
    warmup = int(round(num_steps * float(ft.warmup_epochs) / epochs)) if epochs > 0 else 0
    lr = float(ft.base_learning_rate) * batch_size / 256.0
    return trainer_lib.Recipe(
        learning_rate=lr, end_lr_ratio=min(float(ft.min_learning_rate) / lr, 1.0) if lr > 0 else 0.0,
        warmup_steps=min(warmup, num_steps - 1) if num_steps > 1 else 0, num_steps=num_steps,
        weight_decay=float(ft.weight_decay), b1=float(ft.b1), b2=float(ft.b2),
        clip_grad_norm=float(ft.clip_grad_norm), layer_decay=float(ft.layer_decay),
        label_smoothing=float(ft.label_smoothing))


def _protocol_description(config: Any, task: str) -> dict:
    ft = config.finetune
    return {PROTOCOL: {
        "recipe": "MAE fine-tuning (He et al. 2022, main_finetune.py): encoder + fc_norm + linear head, AdamW, "
                  "layer-wise lr decay, drop path, linear warmup + cosine; test scored once, at the end",
        "pool": ft.pool, "epochs": ft.epochs, "num_steps": ft.num_steps, "warmup_epochs": ft.warmup_epochs,
        "batch_size": ft.batch_size, "base_learning_rate": ft.base_learning_rate,
        "learning_rate": float(ft.base_learning_rate) * int(ft.batch_size) / 256.0,
        "min_learning_rate": ft.min_learning_rate, "layer_decay": ft.layer_decay, "weight_decay": ft.weight_decay,
        "betas": [ft.b1, ft.b2], "clip_grad_norm": ft.clip_grad_norm, "drop_path": ft.drop_path,
        "loss": (f"softmax cross-entropy, label smoothing {ft.label_smoothing}" if task == "single_label"
                 else "sigmoid binary cross-entropy"),
        "augment": "random flip / rot90 per sample" if ft.augment else "none",
        "selection": (f"params of the best val {head_lib.PRIMARY_METRIC[task]} (val: stratified "
                      f"{ft.val_fraction:g} of the labelled subset, every {ft.eval_every or 'epoch'})"
                      if float(ft.val_fraction) > 0 else "final params (no selection)")}}


def run_finetune(config: Any, checkpoint_dir: str | None = None, out_dir: str | None = None, *,
                 sources: Mapping[str, Any] | None = None, num_classes: int | None = None,
                 on_step: Callable[[dict, int], None] | None = None) -> dict:
    """Fine-tunes as `config.finetune` says; writes finetune_results.{json,md} into `out_dir`.

    Args:
      config: experiment config (finetune, probe (data), mesh, sharding_rules, train (checkpoint I/O);
        data / model only for random_init without a checkpoint).
      checkpoint_dir: pretraining workdir or checkpoints/ dir; None only with finetune.encoders = ("random_init",).
      out_dir: default finetune.out_dir, else probe.out_dir, else <checkpoint>/probe (beside the probe's results).
      sources / num_classes: split -> record source, bypassing data_pipelines.registry (tests).
      on_step: (run info dict, step) -> None after every step (tests interrupt runs with it).
    Returns:
      the results dict written to finetune_results.json ("preempted": True and no files when a preemption
      signal stopped the sweep; rerun to resume).
    """
    ft = config.finetune
    wanted = tuple(ft.encoders)
    unknown = [e for e in wanted if e not in ENCODERS]
    if unknown or not wanted:
        raise ValueError(f"unknown finetune encoders {unknown or wanted}; known: {ENCODERS}")
    if "pretrained" in wanted and not checkpoint_dir:
        raise ValueError("fine-tuning the pretrained encoder needs a checkpoint (--checkpoint DIR); without one "
                         "only finetune.encoders=('random_init',) runs")
    if ft.pool not in ("mean", "cls"):
        raise ValueError(f"unknown finetune.pool {ft.pool!r}; use 'mean' or 'cls'")
    source, ft_config = encoder_source(config, checkpoint_dir)
    out_dir = user_path(out_dir or ft.out_dir or config.probe.out_dir or
                        (user_path(checkpoint_dir) / "probe" if checkpoint_dir else "probe"))
    sets = input_sets(config)
    _check_input_sets(sets, source)
    fractions, seeds = sweep_axes(config)
    data = probe_data.load_for_input_sets(config, sets, source, sources=sources, num_classes=num_classes)
    pooled = probe_data.concat(data.train, data.test)
    target_key = "label" if data.task == "single_label" else "labels"
    targets = pooled[target_key]
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.logical_rules(config.sharding_rules, mesh)
    batch_size = int(ft.batch_size)
    shards = parallel.data_parallel_size(mesh, parallel.batch_mesh_axes(rules))
    if batch_size % shards:
        raise ValueError(f"finetune.batch_size={batch_size} must be divisible by the {shards} data shards of "
                         f"mesh {dict(mesh.shape)}")
    model = models.build_model_from_config(ft_config, source.sensor_specs, mesh=mesh)  # drop path, backend
    head = head_lib.ClassifierHead(int(data.num_classes))
    split_dir = out_dir / "splits"
    resplit = float(config.probe.resplit_test_fraction)
    val_fraction = float(ft.val_fraction)
    encoder_cache: dict[str, Any] = {}
    metric_names = [METRIC_PREFIX + ("top1" if data.task == "single_label" else "micro_map")]
    if data.task == "multi_label":
        metric_names.append(METRIC_PREFIX + "macro_map")

    def pretrained_encoder(trainer: trainer_lib.Trainer) -> Any:
        # Restored once per sweep, on first need (resumed and finished runs never read it).
        if "pretrained" not in encoder_cache:
            encoder_cache["pretrained"] = trainer.restore_encoder(source.checkpoint_dir, source.step)
        return encoder_cache["pretrained"]

    rows, per_run = [], []
    for input_set in sets:
        for encoder_name in [e for e in ENCODERS if e in wanted]:
            per_metric: dict[tuple[str, float], list] = {}
            for seed in seeds:
                train_idx, test_idx = probe_data.split_indices(data, targets, seed, split_dir, resplit)
                for fraction in fractions:
                    subset = train_idx[splits.load_or_create_subset(split_dir, targets[train_idx], fraction, seed)]
                    train_rows, val_rows = subset, np.zeros((0,), np.int64)
                    if val_fraction > 0:
                        val_dir = split_dir / "finetune_val" / f"fraction_{fraction:g}"
                        keep, held = splits.load_or_create_holdout(val_dir, targets[subset], val_fraction, seed)
                        train_rows, val_rows = subset[keep], subset[held]
                    recipe = _recipe(config, len(train_rows))
                    run_name = f"{input_set['name']} / {encoder_name} / {fraction:g} / seed {seed}"
                    run_dir = (out_dir / "runs" / _slug(input_set["name"]) / encoder_name / f"fraction_{fraction:g}"
                               / f"seed_{seed}")
                    settings = {
                        "input": input_set["name"], "modalities": list(input_set["modalities"]),
                        "seasons": list(input_set["seasons"]), "encoder": encoder_name, "label_fraction": fraction,
                        "seed": seed, "checkpoint": source.checkpoint_dir, "checkpoint_step": source.step,
                        "init_seed": int(ft.init_seed) + seed if encoder_name == "random_init" else None,
                        "train_rows": _digest(train_rows), "val_rows": _digest(val_rows),
                        "test_rows": _digest(test_idx), "num_train": int(len(train_rows)),
                        "num_val": int(len(val_rows)), "num_test": int(len(test_idx)),
                        "recipe": dataclasses.asdict(recipe), "pool": ft.pool,
                        "augment": bool(ft.augment), "drop_path": float(ft.drop_path),
                        "eval_every": int(ft.eval_every), "dtype": str(ft_config.model.dtype),
                        "batch_size": batch_size, "mesh": {k: int(v) for k, v in mesh.shape.items()}}
                    previous = _json_read(run_dir / "run.json")
                    if previous is not None and previous != json.loads(json.dumps(settings, default=str)):
                        changed = sorted(k for k in set(previous) | set(settings)
                                         if previous.get(k) != json.loads(json.dumps(settings.get(k), default=str)))
                        raise ValueError(f"{run_dir} was started with other settings ({', '.join(changed)} differ); "
                                         f"delete it or write to another --out")
                    result = _json_read(run_dir / "result.json")
                    if result is None:
                        _write_json(run_dir / "run.json", settings)
                        trainer = trainer_lib.get_trainer(
                            model, head, input_set["modalities"], input_set["seasons"], ft.pool, data.task, recipe,
                            mesh, rules, bool(config.train.activation_constraints))
                        init_seed = int(ft.init_seed) + seed
                        if encoder_name == "pretrained":
                            init = lambda trainer=trainer: pretrained_encoder(trainer)  # noqa: E731
                        else:
                            init = lambda trainer=trainer, s=init_seed: trainer.random_encoder(s)  # noqa: E731
                        info = dict(settings, run_dir=str(run_dir))
                        outcome = train_and_score(
                            trainer, arrays=pooled, task=data.task, target_key=target_key, train_rows=train_rows,
                            val_rows=val_rows, test_rows=test_idx, seed=seed, init_encoder=init, run_dir=run_dir,
                            run_name=run_name, config=config,
                            on_step=None if on_step is None else (lambda step, info=info: on_step(info, step)))
                        result = {"test": outcome["test"], "val": outcome["val"],
                                  "selected_step": outcome["selected_step"], "final_step": outcome["final_step"],
                                  **{k: settings[k] for k in ("num_train", "num_val", "num_test")},
                                  "num_steps": recipe.num_steps, "warmup_steps": recipe.warmup_steps,
                                  "learning_rate": recipe.learning_rate}
                        _write_json(run_dir / "result.json", result)
                        if ft.delete_checkpoints and jax.process_index() == 0:
                            (run_dir / "checkpoints").rmtree(missing_ok=True)
                    per_run.append({"run_dir": str(run_dir), **{k: settings[k] for k in (
                        "input", "encoder", "label_fraction", "seed")}, **result})
                    for name, value in result["test"].items():
                        per_metric.setdefault((METRIC_PREFIX + name, fraction), []).append(
                            {"seed": seed, "value": value, "num_train": result["num_train"],
                             "num_val": result["num_val"], "steps": result["num_steps"],
                             "selected_step": result["selected_step"], "run_dir": str(run_dir)})
            for (metric, fraction), per_seed in per_metric.items():
                rows.append({"input": input_set["name"], "modalities": list(input_set["modalities"]),
                             "seasons": list(input_set["seasons"]), "encoder": encoder_name, "metric": metric,
                             "label_fraction": fraction, "protocol": PROTOCOL,
                             **stats.summarize([r["value"] for r in per_seed]), "per_seed": per_seed})
    results = {
        "checkpoint": source.checkpoint_dir, "step": source.step, "task": data.task, "num_classes": data.num_classes,
        "data": data.description, "seeds": list(seeds), "label_fractions": list(fractions),
        "resplit_test_fraction": resplit, "metrics": metric_names, "protocol": _protocol_description(config, data.task),
        "results": rows,
    }
    write_report(out_dir, results)
    return results


def write_report(out_dir: PathLike, results: Mapping[str, Any]) -> tuple[epath.Path, epath.Path]:
    """finetune_results.json (sorted keys, no timestamps: reruns are byte-identical) + .md (the probe's table)."""
    out_dir = user_path(out_dir)
    json_path, md_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
        table = report.markdown_table(results).replace("# Probe results", "# Fine-tuning results (finetune_mae)", 1)
        md_path.write_text(table.replace("none (random init and band statistics only)", "none (random init only)"))
    return json_path, md_path


__all__ = ["ENCODERS", "PROTOCOL", "Preempted", "input_sets", "run_finetune", "sweep_axes", "train_and_score",
           "write_report"]
