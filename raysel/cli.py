"""`raysel` command line: thin wrappers over the Python API (raysel.api)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from raysel import _dataclass_cli
from raysel.config import FeaturizeConfig, PretextConfig, RayConfig, ReportConfig, SelectConfig, SimulateConfig
from raysel.config import DedupConfig, ExportConfig, ImportLabelsConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysel", description="Distributed data selection for active learning on images")
    parser.add_argument("--verbose", "-v", action="store_true", help="Log more")
    commands = parser.add_subparsers(dest="command", required=True)

    featurize = commands.add_parser("featurize", help="Images -> ViT embeddings + knowledge clusters (feature store)")
    _dataclass_cli.add_arguments(featurize, FeaturizeConfig)
    _dataclass_cli.add_arguments(featurize, RayConfig)
    featurize.add_argument("--config", help="YAML file of options (flags win)")
    featurize.add_argument("--no-progress", action="store_true", help="Hide progress bars")
    _add_preset(featurize)

    select = commands.add_parser("select", help="Pick the images to label from a feature store")
    _dataclass_cli.add_arguments(select, SelectConfig)
    _dataclass_cli.add_arguments(select, RayConfig)
    select.add_argument("--config", help="YAML file of options (flags win)")
    select.add_argument("--no-progress", action="store_true", help="Hide progress bars")
    _add_preset(select)

    pretext = commands.add_parser("pretext", help="PT4AL: the rotation model whose losses `featurize --pretext` stores")
    pretext_commands = pretext.add_subparsers(dest="pretext_command", required=True)
    pretext_train = pretext_commands.add_parser("train", help="Train a rotation-prediction model on an image pool (Ray Train)")
    _dataclass_cli.add_arguments(pretext_train, PretextConfig)
    _dataclass_cli.add_arguments(pretext_train, RayConfig)
    pretext_train.add_argument("--config", help="YAML file of options (flags win)")
    _add_preset(pretext_train)

    simulate = commands.add_parser("simulate", help="Evaluate methods by simulated labeling rounds (accuracy vs budget)")
    _dataclass_cli.add_arguments(simulate, SimulateConfig)
    _dataclass_cli.add_arguments(simulate, RayConfig)
    simulate.add_argument("--config", help="YAML file of options (flags win), e.g. an earlier run's DIR/config.yaml")

    commands.add_parser("methods", help="List the registered selection methods")

    report = commands.add_parser("report", help="One self-contained HTML page about a selection (contact sheet, coverage, ...)")
    _dataclass_cli.add_arguments(report, ReportConfig)
    report.add_argument("--config", help="YAML file of options (flags win)")

    demo = commands.add_parser("demo", help="Make a sample pool, featurize it and select from it, all locally")
    demo.add_argument("--out", default="out/demo", help="Folder for the pool, the store and the selection")
    demo.add_argument("--images", type=int, default=48, help="Images in the sample pool")
    demo.add_argument("--budget", type=int, default=8, help="Images to select")
    demo.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray")

    export = commands.add_parser("export", help="A selection in a labeling tool's format (label-studio, coco, cvat, fiftyone, csv)")
    _dataclass_cli.add_arguments(export, ExportConfig)
    export.add_argument("--config", help="YAML file of options (flags win)")

    import_labels = commands.add_parser("import-labels", help="Label Studio JSON / COCO export -> uri,label for `select --labeled`")
    _dataclass_cli.add_arguments(import_labels, ImportLabelsConfig)
    import_labels.add_argument("--config", help="YAML file of options (flags win)")

    dedup = commands.add_parser("dedup", help="Near-duplicates of a feature store (SemDeDup on Ray) -> DUPLICATES.parquet")
    _dataclass_cli.add_arguments(dedup, DedupConfig)
    _dataclass_cli.add_arguments(dedup, RayConfig)
    dedup.add_argument("--config", help="YAML file of options (flags win)")

    pool = commands.add_parser("sample-pool", help="Write a small synthetic image pool to a folder")
    pool.add_argument("out")
    pool.add_argument("--images", type=int, default=48)
    pool.add_argument("--seed", type=int, default=0)
    return parser


def _add_preset(parser: argparse.ArgumentParser) -> None:
    from raysel.presets import preset_names

    parser.add_argument(
        "--preset", choices=preset_names(),
        help="Options of the released code (docs/fidelity.md): freesel-release (GEAL: kmeans_pytorch rule, float32, "
        "prob sampling) or pt4al-release (CIFAR ResNet-18, full shuffle, best epoch, string sort); "
        "--config and flags win over it",
    )


def _apply_preset(parser: argparse.ArgumentParser, argv: list[str], stage: str) -> None:
    """Preset values as defaults, before --config and the flags (which therefore win)."""
    from raysel.presets import preset_values

    names = [a.split("=", 1)[1] for a in argv if a.startswith("--preset=")]
    names += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--preset"]
    if names:
        parser.set_defaults(**preset_values(names[-1], stage))


def _apply_yaml(parser: argparse.ArgumentParser, argv: list[str], classes: tuple[type, ...]) -> None:
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 < len(argv):
            _dataclass_cli.load_yaml_defaults(parser, argv[position + 1], classes)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, _ = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from raysel.redact import RedactingFilter, redact

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())  # no `user:pass@` of an endpoint in a log line
    try:
        if args.command in ("featurize", "select"):
            subparser = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001
            config_cls = FeaturizeConfig if args.command == "featurize" else SelectConfig
            _apply_preset(subparser, argv, args.command)
            _apply_yaml(subparser, argv, (config_cls, RayConfig))
            args = parser.parse_args(argv)
            ray_config = _dataclass_cli.build(RayConfig, args)
            config = _dataclass_cli.build(config_cls, args)
            return _featurize(config, ray_config, args) if args.command == "featurize" else _select(config, ray_config, args)
        if args.command == "pretext":
            pretext = parser._subparsers._group_actions[0].choices["pretext"]  # noqa: SLF001
            pretext_train = pretext._subparsers._group_actions[0].choices["train"]  # noqa: SLF001
            _apply_preset(pretext_train, argv, "pretext")
            _apply_yaml(pretext_train, argv, (PretextConfig, RayConfig))
            args = parser.parse_args(argv)
            return _pretext_train(_dataclass_cli.build(PretextConfig, args), _dataclass_cli.build(RayConfig, args))
        if args.command == "simulate":
            _apply_yaml(parser._subparsers._group_actions[0].choices["simulate"], argv, (SimulateConfig, RayConfig))  # noqa: SLF001
            args = parser.parse_args(argv)
            return _simulate(_dataclass_cli.build(SimulateConfig, args), _dataclass_cli.build(RayConfig, args))
        if args.command in ("export", "import-labels", "dedup"):
            return _labeling_command(parser, argv, args.command)
        args = parser.parse_args(argv)
        if args.command == "report":
            from raysel.api import report as _report

            _apply_yaml(parser._subparsers._group_actions[0].choices["report"], argv, (ReportConfig,))  # noqa: SLF001
            print(_report(_dataclass_cli.build(ReportConfig, parser.parse_args(argv))).lines())
            return 0
        if args.command == "methods":
            from raysel.select import list_methods

            print("\n".join(list_methods()))
            return 0
        if args.command == "sample-pool":
            from raysel.sample_pool import make_sample_pool

            paths = make_sample_pool(args.out, count=args.images, seed=args.seed)
            print(f"wrote {len(paths)} images under {args.out}")
            return 0
        if args.command == "demo":
            from raysel.api import demo

            demo(args.out, images=args.images, budget=args.budget, num_cpus=args.num_cpus)
            return 0
    except KeyboardInterrupt:
        print("raysel: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, FileNotFoundError, PermissionError) as exc:
        print(f"raysel: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # an S3 endpoint that stays down or refuses, after every retry
        if not _is_storage_failure(exc):
            raise
        print(f"raysel: error: object storage failed after retries: {redact(str(exc))}; finished work is kept, "
              "rerun the same command once the endpoint answers", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _is_storage_failure(exc: BaseException) -> bool:
    """botocore / aiohttp errors (endpoint unreachable, throttled past every retry) and OSErrors."""
    module = type(exc).__module__ or ""
    return isinstance(exc, OSError) or module.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs"))


def _featurize(config: FeaturizeConfig, ray_config: RayConfig, args: argparse.Namespace) -> int:
    from raysel.pipeline import featurize

    summary = featurize(config, ray_config, progress=not args.no_progress)
    print(summary.lines())
    return 0


def _pretext_train(config: PretextConfig, ray_config: RayConfig) -> int:
    from raysel.pretext.training import train_pretext

    summary = train_pretext(config, ray_config)
    print(summary.lines())
    return 0


def _simulate(config: SimulateConfig, ray_config: RayConfig) -> int:
    from raysel.api import simulate

    table = simulate(config, ray_config)
    print(f"{table.num_rows} rounds -> {config.out}/results.parquet, results.csv, accuracy.png, config.yaml")
    return 0


def _labeling_command(parser: argparse.ArgumentParser, argv: list[str], command: str) -> int:
    """`raysel export`, `raysel import-labels`, `raysel dedup`."""
    subparser = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    config_cls = {"export": ExportConfig, "import-labels": ImportLabelsConfig, "dedup": DedupConfig}[command]
    _apply_yaml(subparser, argv, (config_cls, RayConfig) if command == "dedup" else (config_cls,))
    args = parser.parse_args(argv)
    config = _dataclass_cli.build(config_cls, args)
    if command == "export":  # straight to the package: raysel.api would import torch and Ray first
        from raysel.export import export_selection

        print(export_selection(config).lines())
    elif command == "import-labels":
        from raysel.export import import_labels

        print(import_labels(config).lines())
    else:
        from raysel.api import dedup

        table = dedup(config, _dataclass_cli.build(RayConfig, args))
        print(f"{table.num_rows} near-duplicates -> {config.out} (and {config.out}.config.json)")
    return 0


def _select(config: SelectConfig, ray_config: RayConfig, args: argparse.Namespace) -> int:
    from raysel.runtime import ensure_ray
    from raysel.select import run_selection
    from raysel.select.runner import resolve_config

    resolve_config(config)  # bad options fail here, before Ray starts
    ensure_ray(ray_config)
    table = run_selection(config)
    print(f"selected {table.num_rows} images -> {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
