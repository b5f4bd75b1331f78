"""`run_probe`: pretrained vs random-init encoder vs band statistics, over seeds and label fractions.

For each input set (a subset of modalities and seasons: S2-only, S1-only,
one season, four seasons ...) and each encoder, frozen features are
extracted once (random init: once per seed, init seed = probe.init_seed +
seed) and cached; then for each seed and label fraction:

- single-label: linear probe top-1 (linear_probe.py) and weighted kNN top-1
  (knn.py);
- multi-label: macro / micro mAP of per-class logistic probes (multilabel.py).

The seed fixes the labelled subset (splits.py, saved files), the validation
carve for the L2 choice, the random init, and with `probe.resplit_test_fraction`
> 0 a fresh stratified train/test split of the pooled labelled data (for
small sets). Results are summarised over seeds (mean, std, 95% t-interval)
and written as probe_results.json / .md. No step depends on wall-clock,
thread timing or unseeded randomness, so the same command twice gives the
same numbers to the last digit.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from seamo_jax import parallel
from seamo_jax.data import resize
from seamo_jax.paths import user_path
from seamo_jax.evaluate import band_stats, encoders, features, knn, linear_probe, multilabel, probe_data, report, splits, stats
from seamo_jax.evaluate import protocols as protocol_lib
from seamo_jax.evaluate import texture

ENCODERS = ("pretrained", "random_init", "band_stats", "texture")  # every encoder config.probe.encoders may name
# The probe always feeds an encoder the normalisation it was trained with (published benchmarks do the same for
# every model they compare: each gets its own preprocessing); the protocols' own notes say what theirs do.
NORMALISATION = "z-score per band with the checkpoint's sensor statistics (seamo_jax/sensors.py)"
# Builder -> the dataset kind published protocols choose settings by (copernicus_bench's learning rate).
DATASET_KINDS = {"eurosat_ms": "eurosat", "bigearthnet": "bigearthnet"}
SEAMO_METRIC_VARIANTS = {"linear_top1": protocol_lib.TOP1_OA, "knn_top1": protocol_lib.TOP1_OA,
                         "macro_map": protocol_lib.MACRO_MAP, "micro_map": protocol_lib.MICRO_MAP}
# No-network baselines computed from the raw views: name -> fn(raw_views, modalities, seasons) -> [N, D].
FIXED_FEATURES = {"band_stats": band_stats.band_statistics, "texture": texture.texture_features}


def input_sets(config: Any, sets: Sequence[Mapping] = ()) -> list[dict]:
    """The probe's input subsets: `sets` if given, else config.probe.input_sets, else (when that is ()) one
    set from probe.modalities / probe.seasons.

    Each set: {"name", "modalities": tuple, "seasons": tuple of season indices}.
    """
    sets = sets or config.probe.input_sets
    if not sets:
        sets = [{"modalities": tuple(config.probe.modalities), "seasons": tuple(range(int(config.probe.seasons)))}]
    out = []
    for s in sets:
        modalities, seasons = tuple(s["modalities"]), tuple(int(i) for i in s["seasons"])
        name = s.get("name") or f"{'+'.join(modalities)} seasons {','.join(map(str, seasons))}"
        out.append({"name": name, "modalities": modalities, "seasons": seasons})
    return out


def _scores(task: str, train_x, train_y, test_x, test_y, num_classes: int, seed: int, config: Any) -> dict:
    """metric name -> (value, details) for one (features, split, seed)."""
    probe = config.probe
    grid = tuple(float(v) for v in probe.l2_grid)
    common = dict(l2_grid=grid, val_fraction=float(probe.val_fraction), seed=seed,
                  max_iter=int(probe.max_iter), tol=float(probe.tol))
    if task == "multi_label":
        result = multilabel.multilabel_probe(train_x, train_y, test_x, test_y, **common)
        return {"macro_map": (result["macro_map"], result), "micro_map": (result["micro_map"], {})}
    result = linear_probe.linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, **common)
    knn_top1 = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=num_classes,
                                k=int(probe.knn_k), temperature=float(probe.knn_temperature))
    return {"linear_top1": (result["accuracy"], result), "knn_top1": (knn_top1, {})}


def _protocol_scores(protocol: protocol_lib.Protocol, feats: np.ndarray, views: np.ndarray | None,
                     targets: np.ndarray, subset: np.ndarray, test_idx: np.ndarray, data: Any, seed: int,
                     config: Any, dataset_kind: str | None) -> dict:
    """metric name -> (value, details, metric variant) of every method of a published protocol.

    The labelled subset is split (stratified, seeded) into the protocol's train and validation parts with
    probe.val_fraction; protocols that refit on train + val (torchgeo_bench) do so themselves.
    """
    fit, val = splits.stratified_holdout(targets[subset], float(config.probe.val_fraction), seed)
    fit, val = subset[fit], subset[val]
    train_x = views[:, fit] if views is not None else feats[fit]
    result = protocol_lib.run_protocol(
        protocol.name, train_x=train_x, train_y=targets[fit], val_x=feats[val], val_y=targets[val],
        test_x=feats[test_idx], test_y=targets[test_idx], task=data.task, num_classes=data.num_classes, seed=seed,
        dataset_kind=dataset_kind)
    out = {}
    for method, entry in result["methods"].items():
        details = {"val": entry.get("val"), "hyperparameters": entry.get("hyperparameters"),
                   **({"bootstrap_ci95": [entry["ci_low"], entry["ci_high"]]} if entry.get("ci_low") is not None else {})}
        out[f"{protocol.name}.{method}"] = (float(entry["test"]), details, entry["metric_variant"])
    return out




def protocol_input_size(config: Any, protocol: protocol_lib.Protocol, native: int, patch_size: int) -> int:
    """Side length the encoder sees under `protocol`: probe.input_size, else the protocol's, else `native`.

    Rounded to a multiple of the patch size (the encoder's position table is computed for any such size).
    """
    size = int(config.probe.input_size) or (protocol.input_size or native)
    return max(patch_size, int(round(size / patch_size)) * patch_size)


def resize_views(views: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Bilinear resize of every [N, S, H, W, C] view to [N, S, size, size, C] (half-pixel centres, float32)."""
    out = {}
    for modality, array in views.items():
        n, seasons, h, w, c = array.shape
        if (h, w) == (size, size):
            out[modality] = array
            continue
        flat = array.reshape(n * seasons, h, w, c)
        out[modality] = np.stack([resize.resize_bilinear(x, size) for x in flat]).reshape(n, seasons, size, size, c)
    return out


# Train-time flips of copernicus_bench (random horizontal and vertical flips, p = 0.5 each): the four
# flip combinations as feature views, of which the protocol draws one per sample and epoch.
FLIPS = ((), (3,), (2,), (2, 3))  # axes of [N, S, H, W, C] to reverse


def flip_views(views: Mapping[str, np.ndarray], axes: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {m: np.flip(v, axes) if axes else v for m, v in views.items()}


def _dataset_kind(config: Any) -> str | None:
    return DATASET_KINDS.get(config.probe.builder or config.data.builder)


def run_probe(config: Any, checkpoint_dir: str | None = None, out_dir: str | None = None, *,
              sources: Mapping[str, Any] | None = None, num_classes: int | None = None) -> dict:
    """Runs the probe described by `config.probe`; writes probe_results.{json,md} into `out_dir`.

    Args:
      config: experiment config with `probe`, `mesh`, `sharding_rules` (and
        `data` / `model`, used for the random-init model when no checkpoint).
      checkpoint_dir: training workdir or checkpoint dir; None = no pretrained
        encoder (random init and band statistics only).
      out_dir: where results, split files and the feature cache go (default
        config.probe.out_dir, else `<checkpoint_dir>/probe`, else ./probe).
      sources / num_classes: split -> record source, bypassing data_pipelines.registry (tests).
    Returns:
      the results dict written to probe_results.json.
    """
    out_dir = user_path(out_dir or config.probe.out_dir or
                        (user_path(checkpoint_dir) / "probe" if checkpoint_dir else "probe"))
    source = encoders.load_encoder_source(config, checkpoint_dir)
    sets = input_sets(config)
    data = probe_data.load_for_input_sets(config, sets, source, sources=sources, num_classes=num_classes)
    pooled = probe_data.concat(data.train, data.test)
    targets = pooled["label"] if data.task == "single_label" else pooled["labels"]
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.logical_rules(config.sharding_rules, mesh)
    seeds = tuple(int(s) for s in config.probe.seeds)
    fractions = tuple(float(f) for f in config.probe.label_fractions)
    resplit = float(config.probe.resplit_test_fraction)
    wanted = tuple(config.probe.encoders)
    unknown = [e for e in wanted if e not in ENCODERS]
    if unknown:
        raise ValueError(f"unknown probe encoders {unknown}; known: {ENCODERS}")
    encoder_names = [e for e in wanted if e != "pretrained" or source.pretrained is not None]
    cache_dir = config.probe.cache_dir or out_dir / "feature_cache"
    split_dir = out_dir / "splits"
    pool = config.probe.pool
    batch_size = int(config.probe.batch_size)

    protocol_names = tuple(config.probe.protocols)
    chosen = [protocol_lib.get_protocol(name) for name in protocol_names]  # ValueError naming the known ones
    native = int(next(iter(pooled["views"].values())).shape[2])  # every view has one size
    patch = int(source.model.patch_size)
    dataset_kind = _dataset_kind(config)
    encode_fns, random_variables, resized, fixed_cache = {}, {}, {}, {}

    def encoder_features(variables, input_set, size: int, flip: tuple[int, ...] = ()) -> np.ndarray:
        variables = encoders.encoder_variables(variables)
        if size not in resized:
            resized[size] = resize_views(pooled["views"], size)
        views = flip_views({m: resized[size][m] for m in input_set["modalities"]}, flip)
        offsets = pooled["offsets"] * size // native  # crop offsets in the resized frame (position_frame="tile")
        description = {"modalities": input_set["modalities"], "seasons": input_set["seasons"], "pool": pool}
        if size != native or flip:  # keys of native, unflipped features stay those of earlier runs
            description.update(input_size=size, flip=list(flip))
        key = features.cache_key(features.tree_digest(variables), views, offsets, description)
        # One encode function object per input set and size, so its jit compilation is reused across encoders/seeds.
        encode_fn = encode_fns.setdefault((input_set["name"], size), encoders.make_encode_fn(
            source.model, input_set["modalities"], input_set["seasons"], pool))
        return features.cached_features(
            cache_dir, key, lambda: features.extract_features(encode_fn, variables, views, offsets, mesh=mesh,
                                                              rules=rules, batch_size=batch_size), description)

    def features_for(encoder_name, input_set, seed, size, flip=()) -> np.ndarray:
        """[N_pooled, D] features of one encoder; fixed baselines read the raw views at their native size."""
        if encoder_name in FIXED_FEATURES:
            key = (encoder_name, input_set["name"], flip)
            if key not in fixed_cache:
                fixed_cache[key] = FIXED_FEATURES[encoder_name](
                    flip_views(pooled["raw_views"], flip), input_set["modalities"], input_set["seasons"])
            return fixed_cache[key]
        if encoder_name == "pretrained":
            return encoder_features(source.pretrained, input_set, size, flip)
        init_seed = int(config.probe.init_seed) + seed
        if init_seed not in random_variables:
            random_variables[init_seed] = encoders.random_init(source, init_seed)
        return encoder_features(random_variables[init_seed], input_set, size, flip)

    rows, skipped = [], []
    for input_set in sets:
        for encoder_name in encoder_names:
            per_metric: dict[tuple[str, str, float], list] = {}
            row_info: dict[tuple[str, str, float], dict] = {}
            for seed in seeds:
                train_idx, test_idx = probe_data.split_indices(data, targets, seed, split_dir, resplit)
                for protocol in chosen:
                    size = native if protocol.name == "seamo" else protocol_input_size(config, protocol, native, patch)
                    input_size = native if encoder_name in FIXED_FEATURES else size
                    feats = features_for(encoder_name, input_set, seed, size)
                    views = None
                    if protocol.accepts_views:
                        views = np.stack([feats] + [features_for(encoder_name, input_set, seed, size, f)
                                                    for f in FLIPS[1:]])
                    for fraction in fractions:
                        subset = train_idx[splits.load_or_create_subset(split_dir, targets[train_idx], fraction, seed)]
                        if protocol.name == "seamo":
                            scores = {metric: (value, details, SEAMO_METRIC_VARIANTS[metric]) for metric, (value, details)
                                      in _scores(data.task, feats[subset], targets[subset], feats[test_idx],
                                                 targets[test_idx], data.num_classes, seed, config).items()}
                        else:
                            try:
                                scores = _protocol_scores(protocol, feats, views, targets, subset, test_idx, data,
                                                          seed, config, dataset_kind)
                            except protocol_lib.common.TooFewSamplesError as error:
                                skipped.append({"input": input_set["name"], "encoder": encoder_name,
                                                "protocol": protocol.name, "label_fraction": fraction, "seed": seed,
                                                "reason": str(error)})
                                continue
                        for metric, (value, details, variant) in scores.items():
                            key = (protocol.name, metric, fraction)
                            per_metric.setdefault(key, []).append(
                                {"seed": seed, "value": value, "num_train": int(len(subset)), **details})
                            row_info[key] = {"metric_variant": variant, "input_size": input_size}
            for (protocol_name, metric, fraction), per_seed in per_metric.items():
                rows.append({"input": input_set["name"], "modalities": list(input_set["modalities"]),
                             "seasons": list(input_set["seasons"]), "encoder": encoder_name,
                             "protocol": protocol_name, "metric": metric, "label_fraction": fraction,
                             **row_info[(protocol_name, metric, fraction)], "normalisation": NORMALISATION,
                             **stats.summarize([r["value"] for r in per_seed]), "per_seed": per_seed})
    results = {
        "checkpoint": source.checkpoint_dir, "step": source.step, "task": data.task, "num_classes": data.num_classes,
        "data": data.description, "seeds": list(seeds), "label_fractions": list(fractions),
        "resplit_test_fraction": resplit,
        "protocols": {p.name: {**p.describe(), "normalisation_used": NORMALISATION} for p in chosen},
        "skipped": skipped,
        "protocol": {"linear": "multinomial logistic regression, L-BFGS full batch, standardised features, "
                               "L2 chosen on a stratified val carve of train (linear_probe.py)",
                     "knn": f"cosine, k={config.probe.knn_k}, "
                            f"T={config.probe.knn_temperature}, weighted votes (DINO)",
                     "band_stats": "per-band spatial mean and std of the raw views, per season and modality",
                     "texture": "per-band mean, std, gradient, 3x3 local std and GLCM statistics of the raw views "
                                "(texture.py), per season and modality",
                     "pool": pool, "l2_grid": list(config.probe.l2_grid)},
        "results": rows,
    }
    report.write_report(out_dir, results)
    return results
