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
from etils import epath

from seamo_jax import parallel
from seamo_jax.paths import user_path
from seamo_jax.evaluate import band_stats, encoders, features, knn, linear_probe, multilabel, probe_data, report, splits, stats
from seamo_jax.evaluate import texture

ENCODERS = ("pretrained", "random_init", "band_stats", "texture")  # every encoder config.probe.encoders may name
DEFAULT_ENCODERS = ("pretrained", "random_init", "band_stats")     # when config.probe.encoders is not given
# No-network baselines computed from the raw views: name -> fn(raw_views, modalities, seasons) -> [N, D].
FIXED_FEATURES = {"band_stats": band_stats.band_statistics, "texture": texture.texture_features}


def _get(config: Any, key: str, default: Any) -> Any:
    return config.probe.get(key, default)


def input_sets(config: Any) -> list[dict]:
    """The probe's input subsets: config.probe.input_sets, or one set from probe.modalities / probe.seasons.

    Each set: {"name", "modalities": tuple, "seasons": tuple of season indices}.
    """
    sets = _get(config, "input_sets", None)
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
    grid = tuple(float(v) for v in _get(config, "l2_grid", linear_probe.DEFAULT_L2_GRID))
    common = dict(l2_grid=grid, val_fraction=float(_get(config, "val_fraction", 0.2)), seed=seed,
                  max_iter=int(_get(config, "max_iter", 500)), tol=float(_get(config, "tol", 1e-5)))
    if task == "multi_label":
        result = multilabel.multilabel_probe(train_x, train_y, test_x, test_y, **common)
        return {"macro_map": (result["macro_map"], result), "micro_map": (result["micro_map"], {})}
    result = linear_probe.linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, **common)
    knn_top1 = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=num_classes,
                                k=int(_get(config, "knn_k", knn.DEFAULT_K)),
                                temperature=float(_get(config, "knn_temperature", knn.DEFAULT_TEMPERATURE)))
    return {"linear_top1": (result["accuracy"], result), "knn_top1": (knn_top1, {})}


def _split_indices(data: probe_data.ProbeData, targets: np.ndarray, seed: int, split_dir: epath.Path,
                   resplit_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices into the pooled [train; test] arrays for one seed."""
    num_train = len(data.train["offsets"])
    if resplit_fraction > 0:
        return probe_data.resplit_indices(str(split_dir), targets, resplit_fraction, seed)
    return np.arange(num_train), num_train + np.arange(len(data.test["offsets"]))


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
    out_dir = user_path(out_dir or _get(config, "out_dir", "") or
                        (user_path(checkpoint_dir) / "probe" if checkpoint_dir else "probe"))
    source = encoders.load_encoder_source(config, checkpoint_dir)
    sets = input_sets(config)
    modalities = tuple(dict.fromkeys(m for s in sets for m in s["modalities"]))
    data = probe_data.load_probe_data(
        config, modalities=modalities, seasons=max(max(s["seasons"]) for s in sets) + 1,
        patch_size=int(source.model.patch_size), crop_size=int(_get(config, "crop_size", source.image_size)),
        trained_specs=source.sensor_specs, sources=sources, num_classes=num_classes)
    pooled = probe_data.concat(data.train, data.test)
    targets = pooled["label"] if data.task == "single_label" else pooled["labels"]
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.logical_rules(config.sharding_rules, mesh)
    seeds = tuple(int(s) for s in config.probe.seeds)
    fractions = tuple(float(f) for f in _get(config, "label_fractions", (1.0,)))
    resplit = float(_get(config, "resplit_test_fraction", 0.0))
    wanted = tuple(_get(config, "encoders", DEFAULT_ENCODERS))
    unknown = [e for e in wanted if e not in ENCODERS]
    if unknown:
        raise ValueError(f"unknown probe encoders {unknown}; known: {ENCODERS}")
    encoder_names = [e for e in wanted if e != "pretrained" or source.pretrained is not None]
    cache_dir = _get(config, "cache_dir", "") or out_dir / "feature_cache"
    split_dir = out_dir / "splits"
    pool = _get(config, "pool", "mean")
    batch_size = int(_get(config, "batch_size", 64))

    encode_fns, random_variables = {}, {}

    def encoder_features(variables, input_set) -> np.ndarray:
        variables = encoders.encoder_variables(variables)
        views = {m: pooled["views"][m] for m in input_set["modalities"]}
        description = {"modalities": input_set["modalities"], "seasons": input_set["seasons"], "pool": pool}
        key = features.cache_key(features.tree_digest(variables), views, pooled["offsets"], description)
        # One encode function object per input set, so its jit compilation is reused across encoders/seeds.
        encode_fn = encode_fns.setdefault(input_set["name"], encoders.make_encode_fn(
            source.model, input_set["modalities"], input_set["seasons"], pool))
        return features.cached_features(
            cache_dir, key, lambda: features.extract_features(encode_fn, variables, views, pooled["offsets"], mesh=mesh,
                                                              rules=rules, batch_size=batch_size), description)

    rows = []
    for input_set in sets:
        for encoder_name in encoder_names:
            per_metric: dict[tuple[str, float], list] = {}
            fixed_features = None
            for seed in seeds:
                if encoder_name in FIXED_FEATURES:
                    fixed_features = fixed_features if fixed_features is not None else FIXED_FEATURES[encoder_name](
                        pooled["raw_views"], input_set["modalities"], input_set["seasons"])
                    feats = fixed_features
                elif encoder_name == "pretrained":
                    fixed_features = fixed_features if fixed_features is not None else encoder_features(
                        source.pretrained, input_set)
                    feats = fixed_features
                else:
                    init_seed = int(_get(config, "init_seed", 0)) + seed
                    if init_seed not in random_variables:
                        random_variables[init_seed] = encoders.random_init(source, init_seed)
                    feats = encoder_features(random_variables[init_seed], input_set)
                train_idx, test_idx = _split_indices(data, targets, seed, split_dir, resplit)
                for fraction in fractions:
                    subset = train_idx[splits.load_or_create_subset(split_dir, targets[train_idx], fraction, seed)]
                    scores = _scores(data.task, feats[subset], targets[subset], feats[test_idx], targets[test_idx],
                                     data.num_classes, seed, config)
                    for metric, (value, details) in scores.items():
                        per_metric.setdefault((metric, fraction), []).append(
                            {"seed": seed, "value": value, "num_train": int(len(subset)), **details})
            for (metric, fraction), per_seed in per_metric.items():
                rows.append({"input": input_set["name"], "modalities": list(input_set["modalities"]),
                             "seasons": list(input_set["seasons"]), "encoder": encoder_name, "metric": metric,
                             "label_fraction": fraction, **stats.summarize([r["value"] for r in per_seed]),
                             "per_seed": per_seed})
    results = {
        "checkpoint": source.checkpoint_dir, "step": source.step, "task": data.task, "num_classes": data.num_classes,
        "data": data.description, "seeds": list(seeds), "label_fractions": list(fractions),
        "resplit_test_fraction": resplit,
        "protocol": {"linear": "multinomial logistic regression, L-BFGS full batch, standardised features, "
                               "L2 chosen on a stratified val carve of train (linear_probe.py)",
                     "knn": f"cosine, k={_get(config, 'knn_k', knn.DEFAULT_K)}, "
                            f"T={_get(config, 'knn_temperature', knn.DEFAULT_TEMPERATURE)}, weighted votes (DINO)",
                     "band_stats": "per-band spatial mean and std of the raw views, per season and modality",
                     "texture": "per-band mean, std, gradient, 3x3 local std and GLCM statistics of the raw views "
                                "(texture.py), per season and modality",
                     "pool": pool, "l2_grid": list(_get(config, "l2_grid", linear_probe.DEFAULT_L2_GRID))},
        "results": rows,
    }
    report.write_report(out_dir, results)
    return results
