"""`seamo finetune` (seamo_jax/finetune): MAE-recipe fine-tuning of the SeaMo encoder, tiny sizes.

One tiny "pretrained" checkpoint (a seeded random init written as a
pretraining checkpoint) and label-dependent synthetic tiles (S2 brightness
encodes the class) feed every test; runs share compilations through
finetune.trainer.get_trainer where their settings agree.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from seamo_jax import cli, configs, models, sensors
from seamo_jax.data import testing as data_testing
from seamo_jax.evaluate import encoders, splits
from seamo_jax.finetune import data as ft_data
from seamo_jax.finetune import run as ft_run
from seamo_jax.finetune import run_finetune
from seamo_jax.models import layer_layout
from seamo_jax.train import checkpoint as checkpoint_lib

EUROSAT_SAMPLE = str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "eurosat_ms_sample")
NUM_CLASSES = 3
S2_SEASON0 = {"name": "S2, season 0", "modalities": ("s2",), "seasons": (0,)}


def _records(num: int, seed: int, multi_label: bool = False) -> list[dict]:
    """Tiles whose S2 brightness encodes the label (separable), S1 noise; multi-label: labels = one-hot + class 3."""
    records = data_testing.make_records(num, seed=seed, num_classes=NUM_CLASSES, num_seasons=4, tile_size=16)
    for r in records:
        r["s2"] = (r["s2"] // 4 + 2000 * int(r["label"])).astype(np.uint16)
        if multi_label:
            labels = np.zeros(4, np.int64)
            labels[int(r.pop("label"))] = 1
            labels[3] = int(r["location_id"].decode()[3:]) % 2  # a second, unpredictable label
            r["labels"] = labels
    return records


def _sources(multi_label: bool = False) -> dict:
    return {"train": _records(48, 0, multi_label), "test": _records(24, 1, multi_label)}


def _config(**finetune):
    config = configs.load_config("finetune_synthetic:fast")
    config.data.crop_size = 16
    config.model.scan_layers = True  # compile cost independent of depth (fine-tuning inherits the checkpoint's)
    config.model.decoder_dim = 16
    config.model.decoder_heads = 2
    config.probe.crop_size = 16
    config.probe.num_train = 48
    config.probe.num_test = 24
    ft = config.finetune
    ft.input_sets = (S2_SEASON0,)
    ft.label_fractions = (1.0,)
    ft.seeds = (0,)
    ft.num_steps = 8
    ft.batch_size = 16
    ft.base_learning_rate = 3e-2      # peak lr 1.9e-3: a few steps must move a tiny ViT
    ft.layer_decay = 0.5
    ft.drop_path = 0.1
    ft.checkpoint_every = 100         # final save only (Orbax saves cost seconds on 8 fake devices)
    for key, value in finetune.items():
        ft[key] = value
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> pathlib.Path:
    """A pretraining checkpoint (encoder params of random init seed 42, S2 L1C + S1 GRD, 4 seasons, TM fusion)."""
    workdir = tmp_path_factory.mktemp("pretrained")
    config = configs.config_from_json(configs.config_to_json(_config()))
    source = encoders.load_encoder_source(config, None)
    params = encoders.random_init(source, seed=42)["params"]
    checkpoint_lib.write_run_metadata(workdir, config, {"s2": sensors.S2_L1C, "s1": sensors.S1_GRD})
    ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", save_every=1, async_save=False)
    ckpt.save(5, {"params": params, "step": np.int32(5)}, force=True)
    ckpt.close()
    return workdir


def _final_params(run_dir: pathlib.Path) -> dict:
    """The params of the newest checkpoint of a run, as numpy (scanned block layout)."""
    directory = run_dir / "checkpoints"
    step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    return ocp.PyTreeCheckpointer().restore(directory / str(step) / "state")["params"]


def _run_dir(out: pathlib.Path, input_name="S2, season 0", encoder="pretrained", fraction=1.0, seed=0):
    return out / "runs" / ft_run._slug(input_name) / encoder / f"fraction_{fraction:g}" / f"seed_{seed}"


def _mean_abs_change(new: dict, old: dict) -> float:
    leaves = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).mean(), new, old))
    return float(np.mean(leaves))


# ------------------------------------------------------------------ end to end

def test_finetune_learns_moves_the_encoder_and_layer_decay_orders_the_moves(pretrained, tmp_path):
    config = _config()
    results = run_finetune(config, str(pretrained), str(tmp_path), sources=_sources(), num_classes=NUM_CLASSES)
    (row,) = results["results"]
    assert (row["metric"], row["encoder"], row["protocol"]) == ("finetune_top1", "pretrained", "finetune_mae")
    assert row["mean"] > 0.6, row  # brightness encodes the class: well above chance (1/3)
    start = checkpoint_lib.load_params(pretrained)[0]["encoder"]
    start = jax.tree.map(np.asarray, layer_layout.stack_layers(start))
    final = _final_params(_run_dir(tmp_path))
    assert set(final) == {"encoder", "classifier"}
    enc = final["encoder"]
    moves = {name: _mean_abs_change(enc["blocks"][name], start["blocks"][name]) for name in enc["blocks"]}
    assert all(v > 0 for v in moves.values()), moves  # the encoder was fine-tuned, not frozen
    # Layer-wise lr decay 0.5: block i's updates are scaled 0.5^(4 - i) (Adam: |update| ~ lr), embeddings 0.5^5.
    per_block = [float(np.mean([np.abs(np.asarray(a)[i] - np.asarray(b)[i]).mean() for a, b in zip(
        jax.tree.leaves(enc["blocks"]), jax.tree.leaves(start["blocks"]))])) for i in range(4)]
    assert per_block[0] < per_block[1] < per_block[2] < per_block[3], per_block
    assert per_block[3] / per_block[0] > 3.0, per_block  # 8x in rate
    patch = _mean_abs_change(enc["patch_embed_s2"], start["patch_embed_s2"])
    assert patch < per_block[0], (patch, per_block)
    # Telemetry like pretraining: metrics.jsonl, TensorBoard; the settings and the result beside them.
    run_dir = _run_dir(tmp_path)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 8 and {"loss", "lr", "grad_norm", "train_batch_accuracy"} <= set(lines[-1])
    assert any((run_dir / "tensorboard").iterdir())
    assert json.loads((run_dir / "result.json").read_text())["test"]["top1"] == row["mean"]


def test_rows_ci_and_the_probes_label_subsets(pretrained, tmp_path):
    config = _config(seeds=(0, 1, 2), label_fractions=(0.5, 1.0), delete_checkpoints=True)  # test 1's compiled step
    results = run_finetune(config, str(pretrained), str(tmp_path), sources=_sources(), num_classes=NUM_CLASSES)
    rows = {(r["input"], r["label_fraction"]): r for r in results["results"]}
    assert sorted(rows) == [("S2, season 0", 0.5), ("S2, season 0", 1.0)]
    for row in rows.values():  # the probe's row schema, plus the protocol name
        assert {"input", "modalities", "seasons", "encoder", "metric", "label_fraction", "mean", "std",
                "ci_half_width", "n", "per_seed", "protocol"} <= set(row)
        assert row["n"] == 3 and row["ci_half_width"] is not None and len(row["per_seed"]) == 3
        assert row["metric"] == "finetune_top1" and row["protocol"] == "finetune_mae"
        assert all(0.0 <= s["value"] <= 1.0 for s in row["per_seed"])
    # The label subsets are the probe's: the same files, names and indices evaluate/splits.py gives it.
    train_labels = np.asarray([r["label"] for r in _sources()["train"]])
    for seed in (0, 1, 2):
        saved = json.loads((tmp_path / "splits" / splits.split_file_name(0.5, seed)).read_text())
        assert saved["indices"] == splits.stratified_subset(train_labels, 0.5, seed).tolist()
        assert rows[("S2, season 0", 0.5)]["per_seed"][seed]["num_train"] == len(saved["indices"])
    assert not (_run_dir(tmp_path) / "checkpoints").exists()  # delete_checkpoints: gone once result.json is written
    md = (tmp_path / "finetune_results.md").read_text()
    assert md.startswith("# Fine-tuning results") and "finetune_top1 @50%" in md
    assert "| S2, season 0 | pretrained |" in md
    # A rerun reuses every finished run (result.json) and writes byte-identical results.
    text = (tmp_path / "finetune_results.json").read_text()
    again = run_finetune(config, str(pretrained), str(tmp_path), sources=_sources(), num_classes=NUM_CLASSES,
                         on_step=lambda info, step: pytest.fail("a finished run was trained again"))
    assert (tmp_path / "finetune_results.json").read_text() == text
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(results, sort_keys=True, default=str)
    # Other settings in the same run dirs are refused, not silently mixed.
    config.finetune.num_steps = 9
    with pytest.raises(ValueError, match="was started with other settings.*recipe"):
        run_finetune(config, str(pretrained), str(tmp_path), sources=_sources(), num_classes=NUM_CLASSES)


class _Kill(Exception):
    pass


def test_kill_and_resume_is_bitwise_equal_on_a_sharded_mesh(pretrained, tmp_path):
    """FSDP + tensor-parallel mesh, S2 + S1 x 4 seasons, val selection on: a run killed after its step-3 save
    and rerun ends with bitwise the params (and best-val params, and numbers) of a straight run."""
    config = _config(val_fraction=0.25, eval_every=2, checkpoint_every=3, num_steps=6,
                     input_sets=({"name": "S2+S1, 4 seasons", "modalities": ("s2", "s1"), "seasons": (0, 1, 2, 3)},))
    config.mesh.shape = (2, 2, 2)
    straight = run_finetune(config, str(pretrained), str(tmp_path / "a"), sources=_sources(), num_classes=NUM_CLASSES)

    def kill(info, step):
        if step == 4:
            raise _Kill()

    with pytest.raises(_Kill):
        run_finetune(config, str(pretrained), str(tmp_path / "b"), sources=_sources(), num_classes=NUM_CLASSES,
                     on_step=kill)
    run_b = _run_dir(tmp_path / "b", "S2+S1, 4 seasons")
    assert sorted(p.name for p in (run_b / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]
    assert not (run_b / "result.json").exists()
    steps = []
    resumed = run_finetune(config, str(pretrained), str(tmp_path / "b"), sources=_sources(), num_classes=NUM_CLASSES,
                           on_step=lambda info, step: steps.append(step))
    assert steps == [4, 5, 6]  # resumed after the step-3 checkpoint
    run_a = _run_dir(tmp_path / "a", "S2+S1, 4 seasons")
    # The checkpoint item with val selection: (TrainState, best {params, metric, step}).
    state_a, best_a = ocp.PyTreeCheckpointer().restore(run_a / "checkpoints" / "6" / "state")
    state_b, best_b = ocp.PyTreeCheckpointer().restore(run_b / "checkpoints" / "6" / "state")
    for name, tree_a, tree_b in (("params", state_a["params"], state_b["params"]),
                                 ("opt_state", state_a["opt_state"], state_b["opt_state"]), ("best", best_a, best_b)):
        leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
        assert len(leaves_a) == len(leaves_b) > 0
        assert all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b)), name
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(state_a["params"]["encoder"]),
                                                       jax.tree.leaves(_final_params(pretrained)["encoder"])))
    result_a = json.loads((run_a / "result.json").read_text())
    assert result_a == json.loads((run_b / "result.json").read_text())
    assert result_a["num_val"] > 0 and result_a["selected_step"] in (0, 2, 4, 6)
    assert [r["mean"] for r in straight["results"]] == [r["mean"] for r in resumed["results"]]


def test_multi_label_bce_and_map_rows_on_s1_of_one_season(pretrained, tmp_path):
    config = _config(num_steps=3, drop_path=0.0, seeds=(0, 1, 2), delete_checkpoints=True,
                     input_sets=({"name": "S1, season 2", "modalities": ("s1",), "seasons": (2,)},))
    results = run_finetune(config, str(pretrained), str(tmp_path), sources=_sources(multi_label=True), num_classes=4)
    assert results["task"] == "multi_label"
    rows = {r["metric"]: r for r in results["results"]}
    assert sorted(rows) == ["finetune_macro_map", "finetune_micro_map"]
    for row in rows.values():
        assert (row["input"], row["modalities"], row["seasons"]) == ("S1, season 2", ["s1"], [2])
        assert row["n"] == 3 and row["ci_half_width"] is not None
        assert all(0.0 < s["value"] <= 1.0 for s in row["per_seed"])
    assert "sigmoid binary cross-entropy" in results["protocol"]["finetune_mae"]["loss"]


# ------------------------------------------------------------------ errors and CLI

def test_checkpoint_of_another_architecture_is_the_params_tree_error(pretrained, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(pretrained, bad)
    written = json.loads((pretrained / "config.json").read_text())
    written["model"]["patch_size"] = written["model"]["patch_size"] // 2  # config.json no longer fits the params
    for path in (bad / "config.json", bad / "checkpoints" / "config.json"):
        path.write_text(json.dumps(written))
    with pytest.raises(ValueError, match=r"encoder params of .*\['patch_embed_s\d'\]\['kernel'\] has shape"):
        run_finetune(_config(), str(bad), str(tmp_path / "out"), sources=_sources(), num_classes=NUM_CLASSES)


def _cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_cli_errors_are_one_line(capsys, tmp_path):
    code, err = _cli(capsys, "finetune", "--config", "finetune_synthetic:fast")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("seamo finetune: error: --checkpoint DIR is required")
    code, err = _cli(capsys, "finetune", "--config", "finetune_synthetic:fast", "--checkpoint", str(tmp_path / "nope"))
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"seamo finetune: error: checkpoint {tmp_path / 'nope'} does not exist")
    code, err = _cli(capsys, "finetune", "--config", "finetune_synthetic:fast", "--checkpoint", str(tmp_path),
                     "--config.finetune.batch_sizee=4")
    assert code == 2 and "did you mean config.finetune.batch_size?" in err


def test_cli_calls_run_finetune_and_reports_preemption(capsys, tmp_path, monkeypatch):
    import seamo_jax.finetune as finetune_pkg

    calls = []
    monkeypatch.setattr(finetune_pkg, "run_finetune", lambda config, ckpt, out: calls.append(
        (config.finetune.seeds, ckpt, out)) or {"results": []})
    code = cli.main(["finetune", "--config", "finetune_synthetic:fast", "--checkpoint", str(tmp_path),
                     "--config.finetune.seeds=(4, 5, 6)"])
    assert code == 0 and calls == [((4, 5, 6), str(tmp_path), str(tmp_path / "probe"))]  # beside the probe's results
    assert f"finetune results written to {tmp_path / 'probe'}/finetune_results.json" in capsys.readouterr().out

    def preempted(*_):
        raise finetune_pkg.Preempted("S2 / pretrained / 1 / seed 0: preemption signal, saved step 3")

    monkeypatch.setattr(finetune_pkg, "run_finetune", preempted)
    code = cli.main(["finetune", "--config", "finetune_synthetic:fast", "--checkpoint", str(tmp_path), "--out", "x"])
    assert code == 0 and "saved step 3; rerun the same command to resume" in capsys.readouterr().out


def test_experiments_are_locked_base_keys_and_build():
    base_keys = set(configs.base_config().finetune.keys())
    for name in ("finetune_synthetic", "finetune_eurosat", "finetune_bigearthnet"):
        module = __import__(f"seamo_jax.experiments.{name}", fromlist=["VARIANTS"])
        for arg in module.VARIANTS:
            config = configs.load_config(f"{name}:{arg}" if arg else name)
            assert config.is_locked and set(config.finetune.keys()) == base_keys
            with pytest.raises(AttributeError):
                config.finetune.epochz = 1
            model = models.build_model_from_config(config)
            assert int(config.probe.crop_size or config.data.crop_size) % model.patch_size == 0
    assert configs.load_config("finetune_bigearthnet").probe.builder == "bigearthnet"


# ------------------------------------------------------------------ pieces

def test_batches_are_a_pure_function_of_seed_and_step():
    n, batch = 10, 4
    stream = np.concatenate([ft_data.batch_rows(3, step, n, batch) for step in range(5)])
    # Each consecutive block of n positions is one permutation: every row once per epoch.
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:20].tolist()) == list(range(10))
    np.testing.assert_array_equal(ft_data.batch_rows(3, 4, n, batch), stream[16:20])  # no state: step 4 alone
    assert not np.array_equal(ft_data.batch_rows(4, 0, n, batch), ft_data.batch_rows(3, 0, n, batch))
    small = ft_data.batch_rows(0, 0, 3, 8)  # a subset smaller than the batch spans several permutations
    assert sorted(small[:3].tolist()) == [0, 1, 2] and len(small) == 8
    # Augmentation: one transform per sample, the same for all its views; seeded by (seed, step).
    x = np.random.default_rng(0).normal(size=(8, 2, 4, 4, 3)).astype(np.float32)
    arrays = {"views": {"s2": x, "s1": x[..., :2].copy()}, "offsets": np.zeros((8, 2, 2), np.int32),
              "label": np.arange(8)}
    out = ft_data.local_batch(arrays, np.arange(8), modalities=("s2", "s1"), target_key="label", seed=0, step=1,
                              augment=True, shard_index=0, shard_count=1)
    np.testing.assert_array_equal(out["views"]["s2"][..., :2], out["views"]["s1"])
    assert not np.array_equal(out["views"]["s2"], x)
    half = ft_data.local_batch(arrays, np.arange(8), modalities=("s2", "s1"), target_key="label", seed=0, step=1,
                               augment=True, shard_index=1, shard_count=2)
    np.testing.assert_array_equal(half["views"]["s2"], out["views"]["s2"][4:])  # a process's rows of the same batch


def test_drop_path_is_off_by_default_and_stochastic_when_training():
    from seamo_jax.models.vit import block_stack

    class Stack(nn.Module):
        scan: bool
        rate: float

        @nn.compact
        def __call__(self, x, deterministic):
            return block_stack(x, depth=2, num_heads=2, mlp_dim=16, scan=self.scan, drop_path=self.rate,
                               deterministic=deterministic)

    x = np.random.default_rng(0).normal(size=(6, 5, 8)).astype(np.float32)
    for scan in (False, True):  # unrolled blocks take per-block float rates, scanned ones a scanned [depth] array
        plain, dropped = Stack(scan, 0.0), Stack(scan, 0.5)
        # Random params drawn with numpy: a jitted flax init is mostly threefry, which XLA:CPU compiles slowly.
        rng = np.random.default_rng(0)
        variables = jax.tree.map(lambda a: (0.3 * rng.normal(size=a.shape)).astype(np.float32),
                                 nn.meta.unbox(jax.eval_shape(lambda: plain.init(jax.random.key(0), x, True))))

        @jax.jit
        def outputs(key):
            def run(module, deterministic, k):
                return module.apply(variables, x, deterministic, rngs={"dropout": k})

            keys = jax.random.split(key, 2)
            return run(plain, True, key), run(plain, False, key), run(dropped, True, key), \
                jax.vmap(lambda k: run(dropped, False, k))(keys)

        reference, rate0_train, dropped_eval, (a, b) = outputs(jax.random.key(1))
        np.testing.assert_array_equal(reference, rate0_train)   # rate 0: training changes nothing
        np.testing.assert_array_equal(reference, dropped_eval)  # evaluation: no drop path
        assert not np.allclose(a, reference) and not np.allclose(a, b)  # training: random per dropout key
    # The SeaMo wiring: encode(train=True) draws dropout bits only when model.drop_path > 0 (default 0).
    model = models.build_model_from_config(configs.load_config("probe_eurosat"))
    assert model.drop_path == 0.0
    batch = models.example_batch(model, 2)
    variables = jax.eval_shape(lambda k: model.init(k, batch["views"], batch["offsets"], method="encode"),
                               jax.random.key(0))

    def jaxpr(m, train):
        return str(jax.make_jaxpr(lambda v: m.apply(v, batch["views"], batch["offsets"], method="encode", train=train,
                                                    rngs={"dropout": jax.random.key(0)}))(variables))

    assert "random_bits" not in jaxpr(model, True) and "random_bits" not in jaxpr(model.clone(drop_path=0.1), False)
    assert "random_bits" in jaxpr(model.clone(drop_path=0.1), True)


@pytest.mark.skipif(not os.path.isdir(EUROSAT_SAMPLE), reason="shared EuroSAT-MS sample not present")
def test_real_eurosat_sample_finetune_from_the_registry(pretrained, tmp_path):
    """finetune_eurosat:sample through data_pipelines.registry on the 200 real tiles (64 x 64, 13 bands)."""
    from data_pipelines import registry

    config = configs.load_config("finetune_eurosat:sample")
    config.probe.data_dir = str(tmp_path / "tfds")
    config.probe.builder_kwargs = {"num_workers": 1}
    config.finetune.seeds = (0, 1, 2)
    config.finetune.num_steps = 2
    config.finetune.batch_size = 16
    config.finetune.checkpoint_every = 100
    config.finetune.delete_checkpoints = True
    config.finetune.progress_bar = False
    with pytest.raises(registry.DatasetNotPreparedError, match="seamo data build --builder eurosat_ms"):
        run_finetune(config, str(pretrained), str(tmp_path / "out"))
    registry.prepare("eurosat_ms", str(tmp_path / "tfds"), manual_dir=EUROSAT_SAMPLE, num_workers=1)
    results = run_finetune(config, str(pretrained), str(tmp_path / "out"))
    (row,) = results["results"]
    assert results["data"]["builder"] == "eurosat_ms" and results["num_classes"] == 10
    assert (row["input"], row["metric"], row["n"]) == ("S2, 1 season", "finetune_top1", 3)
    pooled = results["data"]["num_train"] + results["data"]["num_test"]  # the builder's train + test splits
    for seed in row["per_seed"]:  # the probe's stratified 50/50 resplit of them
        assert seed["num_train"] == pooled // 2
    assert (tmp_path / "out" / "splits" / "holdout_0.5_seed2.json").exists()
