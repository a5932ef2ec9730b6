"""Turn config dataclasses into argparse flags, so the CLI and YAML job files build the same objects."""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

import yaml


def _base_type(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _or_auto(kind: Any) -> Any:
    """`kind`, also accepting 'auto' (= None: the value is chosen at run time, e.g. from the cluster)."""

    def parse(text: str) -> Any:
        return None if text == "auto" else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse's "invalid int value: ..."
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), prefix: str = "") -> None:
    """One flag per dataclass field (`model_actors` -> `--model-actors`); help from field metadata.

    With a `prefix` such as "select." every field becomes a flag (`--select.model-actors`, positional
    ones too) stored under `select.model_actors`, so several dataclasses sharing field names (seed,
    s3_endpoint) fit in one parser, as in `jobs/run_selection_job.py`.
    """
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        help_text = f.metadata.get("help", "")
        kind = _base_type(hints[f.name])
        default = None if f.default is MISSING else f.default
        if f.metadata.get("required"):
            default = None  # not given: None, so a given 0 or "" reaches the config's own check
        flag, dest = "--" + prefix + f.name.replace("_", "-"), prefix + f.name
        if f.metadata.get("positional") and not prefix:
            parser.add_argument(f.name, nargs="?", default=default, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, dest=dest, action="store_true", default=default, help=help_text)
        else:
            shown = "" if default in (None, "", 0) else f" (default: {default})"
            kind = _or_auto(kind) if f.metadata.get("auto") else kind
            parser.add_argument(flag, dest=dest, type=kind, default=default, help=help_text + shown)


def build(cls: type, namespace: argparse.Namespace, prefix: str = "") -> Any:
    """The dataclass from parsed arguments; fields marked `required` must be set."""
    values = {f.name: getattr(namespace, prefix + f.name) for f in fields(cls) if hasattr(namespace, prefix + f.name)}
    missing = [f.name for f in fields(cls) if f.metadata.get("required") and values.get(f.name) in (None, "")]
    if missing:
        raise ValueError("missing required option(s): " + ", ".join("--" + prefix + m.replace("_", "-") for m in missing))
    return cls(**values)


def load_yaml_defaults(parser: argparse.ArgumentParser, path: str, classes: tuple[type, ...]) -> None:
    """Use a YAML file's keys as defaults; flags given on the command line still win."""
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    known = {f.name for cls in classes for f in fields(cls)}
    unknown = sorted(k for k in values if k.replace("-", "_") not in known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; valid keys: {sorted(known)}")
    parser.set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})
