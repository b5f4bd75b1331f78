"""Child process of test_bucket_paths.py: a user's journey with every path in a GCS bucket.

Run with the emulator environment (tests/gcs_emulator.py) set before Python
starts, since gcsfs/tensorstore/array_record read it at import:

    python tests/bucket_journey.py LOCAL_TMP gs://BUCKET

1. `seamo data build` locally (array_record cannot write to gs://), copy up.
2. pretrain 4 steps with data_dir and workdir in the bucket; rerun to 6 (resume).
3. export from the bucket checkpoint into the bucket; probe with data, checkpoint
   and output in the bucket.
Prints `RESULT <json>` for the test to check.
"""

from __future__ import annotations

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def copy_tree(src, dst) -> int:
    """Copies every file under local `src` to `dst` (a URL); returns the number of files."""
    count = 0
    for path in sorted(pathlib.Path(src).rglob("*")):
        if path.is_file():
            target = dst / str(path.relative_to(src))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
            count += 1
    return count


def main(local_tmp: str, bucket: str) -> None:
    from etils import epath

    from data_pipelines import registry
    from seamo_jax import configs
    from seamo_jax.evaluate.probe import run_probe
    from seamo_jax.export import export
    from seamo_jax.train.loop import builder_kwargs, run_pretraining

    root = epath.Path(bucket)
    config = configs.load_config("demo_cpu:fast",
                                 ["--config.train.num_steps=4", "--config.train.checkpoint_every=2",
                                  "--config.train.recon_every=2", "--config.train.progress_bar=False",
                                  f"--config.data.data_dir={bucket}/tfds"])
    local_tfds = pathlib.Path(local_tmp) / "tfds"
    registry.prepare(config.data.builder, str(local_tfds), **builder_kwargs(config.data))
    copied = copy_tree(local_tfds, root / "tfds")

    first = run_pretraining(config, f"{bucket}/run")
    config.train.num_steps = 6
    resumed = run_pretraining(config, f"{bucket}/run")
    card = export(f"{bucket}/run", f"{bucket}/export")

    probe_config = configs.load_config("probe_synthetic:fast")
    probe_config.probe.data_dir = f"{bucket}/tfds"
    probe_config.probe.builder_kwargs = dict(builder_kwargs(config.data))
    probe_config.probe.encoders = ("pretrained", "band_stats")
    probe_config.probe.label_fractions = (1.0,)
    probe_config.probe.seeds = (0,)
    probe_config.probe.input_sets = ({"name": "S2+S1", "modalities": ("s2", "s1"), "seasons": (0, 1, 2, 3)},)
    probe = run_probe(probe_config, f"{bucket}/run", f"{bucket}/probe")

    listing = sorted(str(p) for p in (root / "run").iterdir())
    result = {
        "copied_files": copied,
        "first": {k: first[k] for k in ("start_step", "final_step", "checkpoint_dir", "metrics_file")},
        "resumed": {k: resumed[k] for k in ("start_step", "final_step")},
        "run_listing": listing,
        "checkpoint_steps": sorted(int(p.name) for p in (root / "run" / "checkpoints").iterdir() if p.name.isdigit()),
        "metrics_lines": len((root / "run" / "metrics.jsonl").read_text().splitlines()),
        "tensorboard_files": len(list((root / "run" / "tensorboard").iterdir())),
        "recon_files": sorted(p.name for p in (root / "run" / "recon").iterdir()),
        "export_files": sorted(p.name for p in (root / "export").iterdir()),
        "card_step": card["step"],
        "probe_files": sorted(p.name for p in (root / "probe").iterdir()),
        "probe_encoders": sorted({r["encoder"] for r in probe["results"]}),
        "probe_checkpoint": [probe["checkpoint"], probe["step"]],
        "local_gs_folder": (pathlib.Path.cwd() / "gs:").exists(),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
