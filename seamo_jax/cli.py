"""The `seamo` command: data, pretrain, probe, finetune, export, demo.

    seamo data build --builder synthetic_seasons --data-dir DIR
    seamo pretrain --config demo_cpu --workdir DIR [--config.key=value ...]
    seamo probe --config probe_synthetic --checkpoint DIR [--out DIR]
    seamo finetune --config finetune_eurosat --checkpoint DIR [--out DIR]
    seamo export --checkpoint DIR --out DIR
    seamo demo [--workdir runs/demo]

Stages are imported lazily so `seamo --help` is instant and a missing optional
dependency only affects the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

# `seamo pretrain` exit status when the loss went NaN/Inf (1: other errors, 2: usage).
EXIT_NON_FINITE_LOSS = 3


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.x=y` overrides (any number) from ordinary arguments."""
    overrides, rest = [], []
    for arg in argv:
        (overrides if arg.startswith("--config.") else rest).append(arg)
    return overrides, rest


def _cmd_data(args: argparse.Namespace, overrides: list[str]) -> int:
    """`seamo data build`: --builder with --builder-arg, or --config: the dataset that config trains on."""
    from data_pipelines import registry
    from seamo_jax.configs import _parse_value
    from seamo_jax.paths import is_url

    if bool(args.builder) == bool(args.config):
        raise UsageError("give exactly one of --builder NAME or --config FILE")
    if args.config:
        from seamo_jax.train.loop import builder_kwargs

        config = _load_config(args.config, overrides)
        name, kwargs = config.data.builder, builder_kwargs(config.data)
        data_dir = args.data_dir or config.data.data_dir
        manual_dir = args.manual_dir or config.data.manual_dir or None
        if not data_dir:
            raise UsageError("the config has no data.data_dir; pass --data-dir DIR "
                             "(and train with --config.data.data_dir=DIR)")
    else:
        name, data_dir, manual_dir = args.builder, args.data_dir, args.manual_dir
        kwargs = {key: _parse_value(value) for key, _, value in (a.partition("=") for a in args.builder_arg or [])}
        if not data_dir:
            raise UsageError("--data-dir is required with --builder")
    if name not in registry.BUILDERS:  # before any folder check
        raise UsageError(f"unknown dataset {name!r}; registered: {', '.join(sorted(registry.BUILDERS))}")
    if registry.needs_manual_dir(name) and not (manual_dir and os.path.isdir(manual_dir) and os.listdir(manual_dir)):
        state = "none" if not manual_dir else (f"{manual_dir}, which is empty" if os.path.isdir(manual_dir)
                                               else f"{manual_dir}, which is not a folder")
        raise UsageError(f"{name} is built from the downloaded release: pass --manual-dir FOLDER holding it "
                         f"(got {state}; the builder's docstring lists the expected layout)")
    if is_url(data_dir) and args.beam_pipeline_options is None:
        raise UsageError(f"ArrayRecord shards cannot be written to {data_dir}; build into a "
                         f"local --data-dir, then copy it up (gcloud storage cp -r DIR {data_dir}) and train with "
                         f"--config.data.data_dir={data_dir}, or build with --beam-pipeline-options "
                         "(the Beam path writes to buckets)")
    if args.beam_pipeline_options is not None:
        try:
            import apache_beam  # noqa: F401
        except ImportError:
            raise UsageError("--beam-pipeline-options needs Apache Beam: pip install 'seamo_jax[beam]'") from None
    registry.prepare(name, data_dir, manual_dir=manual_dir, num_workers=args.workers,
                     beam_pipeline_options=args.beam_pipeline_options, **kwargs)
    # Real builders report what they wrote, skipped (by id) and noted; before the JSON, which ends the output.
    for line in getattr(registry.get_builder(name, data_dir, **kwargs), "build_summary", lambda: [])():
        print(line)
    info = registry.builder_info(name, data_dir, **kwargs)
    print(json.dumps(info, indent=2, default=str))
    return 0


def _init_distributed(args: argparse.Namespace) -> None:
    """Multi-controller JAX: one `seamo pretrain` per host, joined before any device use.

    `--distributed` alone lets JAX detect the cluster (TPU pod slices, SLURM);
    `--coordinator-address/--num-processes/--process-id` set it explicitly
    (GPU nodes, or several CPU processes on one machine).
    """
    if not (args.distributed or args.coordinator_address):
        return
    import jax

    kwargs = {}
    if args.coordinator_address:
        kwargs = dict(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                      process_id=args.process_id)
    jax.distributed.initialize(**kwargs)


def _cmd_pretrain(args: argparse.Namespace, overrides: list[str]) -> int:
    from seamo_jax.train.loop import NonFiniteLossError, run_pretraining

    _init_distributed(args)
    from data_pipelines.registry import DatasetNotPreparedError

    config = _load_config(args.config, overrides)
    try:
        summary = run_pretraining(config, args.workdir)
    except DatasetNotPreparedError as error:
        print(f"seamo pretrain: error: {error}", file=sys.stderr)
        return 1
    except NonFiniteLossError as error:
        # A diverged run is an expected outcome whose message already names the
        # last good checkpoint and what to change: report it, no traceback.
        print(f"seamo pretrain: {error}", file=sys.stderr)
        return EXIT_NON_FINITE_LOSS
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_probe(args: argparse.Namespace, overrides: list[str]) -> int:
    from seamo_jax.evaluate.probe import run_probe

    from data_pipelines.registry import DatasetNotPreparedError

    config = _load_config(args.config, overrides)
    out_dir = args.out or os.path.join(args.checkpoint or "runs/probe_random_init", "probe")
    try:
        results = run_probe(config, args.checkpoint, out_dir)
    except DatasetNotPreparedError as error:
        print(f"seamo probe: error: {error}", file=sys.stderr)
        return 1
    print(f"probe results written to {out_dir}/probe_results.json and probe_results.md")
    return 0 if results else 1


def _cmd_finetune(args: argparse.Namespace, overrides: list[str]) -> int:
    from seamo_jax.finetune import Preempted, run_finetune
    from seamo_jax.train.loop import NonFiniteLossError

    _init_distributed(args)
    from data_pipelines.registry import DatasetNotPreparedError

    config = _load_config(args.config, overrides)
    if not args.checkpoint and tuple(config.finetune.encoders) != ("random_init",):
        raise UsageError("--checkpoint DIR is required (a pretraining workdir or its checkpoints/ dir); without one "
                         "only --config.finetune.encoders=random_init runs")
    out_dir = args.out or config.finetune.out_dir or config.probe.out_dir or os.path.join(
        args.checkpoint or "runs/finetune_random_init", "probe")
    try:
        results = run_finetune(config, args.checkpoint, out_dir)
    except DatasetNotPreparedError as error:
        print(f"seamo finetune: error: {error}", file=sys.stderr)
        return 1
    except NonFiniteLossError as error:
        print(f"seamo finetune: {error}", file=sys.stderr)
        return EXIT_NON_FINITE_LOSS
    except Preempted as error:  # saved; the same command resumes
        print(f"seamo finetune: {error}; rerun the same command to resume")
        return 0
    print(f"finetune results written to {out_dir}/finetune_results.json and finetune_results.md")
    return 0 if results else 1


def _cmd_export(args: argparse.Namespace, overrides: list[str]) -> int:
    from seamo_jax.export import export

    card = export(args.checkpoint, args.out)
    out = args.out.rstrip("/")
    for name in [*card["files"].values(), "model_card.json"]:
        print(f"{out}/{name}")
    return 0


def _cmd_demo(args: argparse.Namespace, overrides: list[str]) -> int:
    from seamo_jax.demo import run_demo

    run_demo(args.workdir, config_spec=args.config, overrides=overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seamo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build a dataset (TFDS builder -> ArrayRecord)")
    data.add_argument("action", choices=["build"])
    data.add_argument("--builder", default=None, help="synthetic_seasons | eurosat_ms | ssl4eo_s12 | bigearthnet")
    data.add_argument("--config", default=None,
                      help="NAME[:arg] (shipped experiment) or FILE.py[:arg]: build the dataset this config trains on "
                           "(with --config.* overrides)")
    data.add_argument("--data-dir", default=None, help="TFDS data_dir (local; copy to a bucket afterwards, see README)")
    data.add_argument("--manual-dir", default=None, help="folder holding the downloaded release (real datasets)")
    data.add_argument("--workers", type=int, default=None, help="parallel writer processes")
    data.add_argument("--builder-arg", action="append", help="key=value passed to the builder, repeatable")
    data.add_argument("--beam-pipeline-options", default=None, metavar="OPTIONS",
                      help="build through Apache Beam with these comma-separated options, e.g. "
                           "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing "
                           "(or runner=DataflowRunner,project=...,region=...,temp_location=gs://...); same "
                           "records as the default local writer; needs the `beam` extra")
    data.set_defaults(handler=_cmd_data)

    pretrain = sub.add_parser("pretrain", help="pretrain SeaMo (resumes from the latest checkpoint in --workdir)")
    pretrain.add_argument("--config", required=True,
                          help="shipped experiment NAME[:arg] (demo_cpu, seamo_vitb_ssl4eo:phase1, ...) or FILE.py[:arg]")
    pretrain.add_argument("--workdir", required=True)
    pretrain.add_argument("--distributed", action="store_true",
                          help="jax.distributed.initialize() with cluster auto-detection (TPU pods, SLURM)")
    pretrain.add_argument("--coordinator-address", default=None, help="host:port of process 0 (explicit multi-process)")
    pretrain.add_argument("--num-processes", type=int, default=None)
    pretrain.add_argument("--process-id", type=int, default=None)
    pretrain.set_defaults(handler=_cmd_pretrain)

    probe = sub.add_parser("probe", help="linear probe / kNN on frozen features")
    probe.add_argument("--config", required=True, help="probe_<dataset>[:arg] (shipped) or FILE.py[:arg]")
    probe.add_argument("--checkpoint", default=None, help="pretraining workdir or checkpoint dir; omit for random init")
    probe.add_argument("--out", default=None)
    probe.set_defaults(handler=_cmd_probe)

    finetune = sub.add_parser("finetune", help="fine-tune the pretrained encoder end to end (MAE recipe), "
                                               "over input sets, label fractions and seeds; resumable")
    finetune.add_argument("--config", required=True, help="finetune_<dataset>[:arg] (shipped) or FILE.py[:arg]")
    finetune.add_argument("--checkpoint", default=None, help="pretraining workdir or its checkpoints/ dir")
    finetune.add_argument("--out", default=None, help="default <checkpoint>/probe, beside the probe's results")
    finetune.add_argument("--distributed", action="store_true",
                          help="jax.distributed.initialize() with cluster auto-detection (TPU pods, SLURM)")
    finetune.add_argument("--coordinator-address", default=None, help="host:port of process 0 (explicit multi-process)")
    finetune.add_argument("--num-processes", type=int, default=None)
    finetune.add_argument("--process-id", type=int, default=None)
    finetune.set_defaults(handler=_cmd_finetune)

    export = sub.add_parser("export", help="checkpoint -> safetensors (Flax + timm names) + model card")
    export.add_argument("--checkpoint", required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(handler=_cmd_export)

    demo = sub.add_parser("demo", help="generate synthetic data, pretrain a tiny SeaMo, probe it")
    demo.add_argument("--workdir", default="runs/demo")
    demo.add_argument("--config", default="demo_cpu")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _command_name(args: argparse.Namespace) -> str:
    return f"{args.command} {args.action}" if args.command == "data" else args.command


class UsageError(Exception):
    """The command line or the config it names is wrong (exit status 2)."""


def _load_config(spec: str, overrides: list[str]):
    """load_config, with every failure (missing file, unknown key, wrong type) as a UsageError."""
    from seamo_jax.configs import load_config

    try:
        return load_config(spec, overrides)
    except (FileNotFoundError, KeyError, TypeError, ValueError, AttributeError, SyntaxError) as error:
        raise UsageError(_message(error)) from error


def _message(error: BaseException) -> str:
    """An exception's text for one error line (KeyError's repr quotes dropped, at most 3 lines)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line for line in str(text).splitlines() if line.strip()] or [type(error).__name__]
    return "\n".join(lines[:3])


# Errors of the user's inputs (paths, datasets, checkpoints, sensor specs, mesh
# sizes): one line, no traceback. Anything else is a bug and keeps its traceback.
_USER_ERRORS = (FileNotFoundError, NotADirectoryError, KeyError, ValueError, TypeError)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # run as a command (not called from Python): tune malloc for XLA:CPU first
        from seamo_jax.host_memory import reexec_for_cpu_run

        reexec_for_cpu_run()
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = _split_overrides(argv)
    debug = "--debug" in rest  # anywhere on the line: show tracebacks instead of one-line errors
    args = build_parser().parse_args([a for a in rest if a != "--debug"])
    try:
        return args.handler(args, overrides)
    except UsageError as error:
        if debug:
            raise
        print(f"seamo {_command_name(args)}: error: {error}", file=sys.stderr)
        return 2
    except _USER_ERRORS as error:
        if debug:
            raise
        print(f"seamo {_command_name(args)}: error: {_message(error)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
