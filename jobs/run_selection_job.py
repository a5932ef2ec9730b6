"""Featurize a pool of images and pick the ones to label, as one Ray job: featurize -> select.

Locally, on an embedded Ray started in this process (no cluster needed):

    raysel sample-pool /tmp/raysel-example/pool --images 48
    python jobs/run_selection_job.py --config jobs/configs/example.yaml

On a running Ray cluster (`ray start --head` on this machine, `ray up cluster.yaml`, or KubeRay), as a
job; `ray job submit` sets RAY_ADDRESS for the job, and the job then joins the cluster (address "auto"):

    ray job submit --address http://127.0.0.1:8265 --working-dir . \\
        --runtime-env-json '{"excludes": [".venv", "out", ".git", "*.egg-info"]}' \\
        -- python jobs/run_selection_job.py --config jobs/configs/example.yaml

ImageNet (1.28M images from S3) on the AWS cluster of cluster.yaml (8 GPU nodes):

    ray up cluster.yaml && ray dashboard cluster.yaml &
    ray job submit --address http://127.0.0.1:8265 --working-dir . \\
        --runtime-env-json '{"excludes": [".venv", "out", ".git", "*.egg-info"]}' \\
        -- python jobs/run_selection_job.py --config jobs/configs/imagenet.yaml

PT4AL first (a `pretext:` section: train the rotation model with Ray Train, then featurize with its
losses in the store, then `select` with `method: pt4al`):

    raysel sample-pool /tmp/raysel-pt4al/pool --images 48
    python jobs/run_selection_job.py --config jobs/configs/pt4al.yaml

Every option of the featurize/select/ray sections can be overridden by a flag named after its section:
`--select.budget 500`, `--featurize.batch-size 64`, `--ray.address auto`. Rerun the same command
after a crash: finished feature-store shards are kept and the selection resumes from its checkpoint.

Credentials never go in the YAML file: S3 access comes from the standard AWS chain on every node
(an IAM instance profile, IRSA on Kubernetes, or env vars passed in the job's runtime_env). Next to
the selection manifest the job writes `<name>.config.yaml` (the resolved config, reusable as
--config, secrets scrubbed) and `<name>.summary.json` (counts, per-stage timings, versions, cluster
resources).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

if importlib.util.find_spec("raysel") is None:  # run from a checkout that is not pip-installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import yaml

from raysel import __version__, _dataclass_cli, storage
from raysel.config import FeaturizeConfig, PretextConfig, RayConfig, SelectConfig
from raysel.redact import REDACTED, SECRET_NAME, URL_USERINFO, secret_values  # one definition of what a secret is

log = logging.getLogger("raysel.job")

SECTIONS: dict[str, type] = {"featurize": FeaturizeConfig, "select": SelectConfig, "ray": RayConfig}
# Optional first stage (PT4AL): train the rotation pretext model, then featurize with --pretext.
PRETEXT_SECTION = "pretext"

# Environment variables whose values must never reach a file or a log line we write.


@dataclass
class JobConfig:
    """The job's three sections; the same dataclasses `raysel featurize` / `raysel select` build."""

    featurize: FeaturizeConfig
    select: SelectConfig
    ray: RayConfig
    pretext: PretextConfig | None = None  # present: train the rotation model first (PT4AL)

    def resolved(self) -> dict[str, Any]:
        sections = {"featurize": asdict(self.featurize), "select": asdict(self.select), "ray": asdict(self.ray)}
        if self.pretext is not None:
            sections[PRETEXT_SECTION] = asdict(self.pretext)
        return scrub(sections)


# ----------------------------------------------------------------------------- configuration


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="featurize -> select as one Ray job",
        epilog="Flags override the YAML file's sections: --select.budget 500 --featurize.model-actors 8",
    )
    parser.add_argument("--config", help="YAML file with sections featurize:, select:, ray:")
    parser.add_argument("--verbose", "-v", action="store_true", help="Log more")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} ({cls.__name__})")
        _dataclass_cli.add_arguments(group, cls, prefix=section + ".")
    return parser


def pretext_config(section: dict[str, Any], featurize: FeaturizeConfig) -> PretextConfig:
    """The `pretext:` section: trains on featurize's pool, with featurize's endpoint and seed unless set."""
    values = {"source": featurize.source, "s3_endpoint": featurize.s3_endpoint, "seed": featurize.seed, **section}
    if not values.get("out"):
        raise ValueError("section 'pretext' needs 'out': where the trained rotation model goes (path or s3://)")
    config = PretextConfig(**values)
    config.validate()
    return config


def load_sections(path: str) -> dict[str, dict[str, Any]]:
    """The YAML file's sections, with every key checked against its dataclass."""
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected sections {sorted(SECTIONS)} at the top level")
    valid = sorted([*SECTIONS, PRETEXT_SECTION])
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; valid sections: {valid}")
    sections: dict[str, dict[str, Any]] = {}
    for name, section in values.items():
        section = section or {}
        if not isinstance(section, dict):
            raise ValueError(f"{path}: section {name!r} must be a mapping of option names to values")
        section = {key.replace("-", "_"): value for key, value in section.items()}
        cls = PretextConfig if name == PRETEXT_SECTION else SECTIONS[name]
        known = {f.name for f in fields(cls)}
        bad = sorted(set(section) - known)
        if bad:
            raise ValueError(f"{path}: unknown keys {bad} in section {name!r}; valid keys: {sorted(known)}")
        sections[name] = section
    return sections


def parse_job_config(argv: list[str] | None = None) -> tuple[JobConfig, argparse.Namespace]:
    """Dataclass defaults < the YAML file's sections < flags."""
    job_parser = parser()
    first, _ = job_parser.parse_known_args(argv)
    sections: dict[str, dict[str, Any]] = {}
    if first.config:
        sections = load_sections(first.config)
        job_parser.set_defaults(
            **{f"{name}.{key}": value for name, section in sections.items() if name in SECTIONS for key, value in section.items()}
        )
    args = job_parser.parse_args(argv)
    featurize = _dataclass_cli.build(FeaturizeConfig, args, prefix="featurize.")
    # The selection reads the store this job writes, unless told otherwise.
    if not getattr(args, "select.store"):
        setattr(args, "select.store", featurize.out)
    select = _dataclass_cli.build(SelectConfig, args, prefix="select.")
    ray_config = _dataclass_cli.build(RayConfig, args, prefix="ray.")
    if select.s3_endpoint is None:
        select.s3_endpoint = featurize.s3_endpoint
    pretext = None
    if PRETEXT_SECTION in sections:
        pretext = pretext_config(sections[PRETEXT_SECTION], featurize)
        if featurize.pretext is None:
            featurize.pretext = pretext.out  # featurize scores every image with the model trained first
    return JobConfig(featurize, select, ray_config, pretext), args


def ray_config_for_this_process(config: RayConfig) -> RayConfig:
    """Under `ray job submit` the job system sets RAY_ADDRESS: join that cluster instead of starting one."""
    if config.address is None and os.environ.get("RAY_ADDRESS"):
        return RayConfig(address="auto")
    return config


# ----------------------------------------------------------------------------- secrets


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of `value` fit for a file or a log: no URL passwords, no credential env values, no secret keys."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {key: REDACTED if SECRET_NAME.search(str(key)) else scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(item, secrets) for item in value]
    if isinstance(value, str):
        value = URL_USERINFO.sub(r"\g<scheme>", value)
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


# ----------------------------------------------------------------------------- stages


def pretext_stage(job: JobConfig, ray_config: RayConfig) -> dict[str, Any]:
    """PT4AL: train the rotation model on the pool (Ray Train), so featurize stores each image's pretext loss.

    A rerun with the same settings finds the finished model (or its last epoch checkpoint) and
    does not train again. Returns the training figures for the run summary.
    """
    from raysel.api import train_pretext

    assert job.pretext is not None
    trained = train_pretext(job.pretext, ray_config)
    print(trained.lines(), flush=True)
    return {"images": trained.images, "epochs": trained.epochs, "resumed_from_epoch": trained.resumed_from_epoch,
            "final_loss": trained.final_loss, "model": job.pretext.out}


def sidecar(selection_uri: str, suffix: str) -> str:
    """`.../selection.parquet` -> `.../selection<suffix>`: files that travel with the manifest."""
    stem = selection_uri[: -len(".parquet")] if selection_uri.endswith(".parquet") else selection_uri
    return stem + suffix


def cluster_description() -> dict[str, Any]:
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return {
        "resources": ray.cluster_resources(),
        "alive_nodes": len(nodes),
        "nodes": [{"node_id": n["NodeID"][:12], "address": n.get("NodeManagerAddress"), "resources": n.get("Resources", {})} for n in nodes],
    }


def versions() -> dict[str, str]:
    import ray
    import timm
    import torch

    return {
        "raysel": __version__,
        "ray": ray.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def run(job: JobConfig, progress: bool = False) -> dict[str, Any]:
    """featurize -> select on the Ray this process joins; returns the run summary (also written to storage)."""
    from raysel.api import featurize, select
    from raysel.runtime import ensure_ray

    job.featurize.validate()
    ray_config = ray_config_for_this_process(job.ray)
    timings: dict[str, float] = {}
    started = time.time()

    clock = time.perf_counter()
    ensure_ray(ray_config)
    timings["ray_init_s"] = time.perf_counter() - clock
    cluster = cluster_description()
    log.info("Ray: %d nodes, resources %s", cluster["alive_nodes"], cluster["resources"])

    pretext = None
    if job.pretext is not None:
        clock = time.perf_counter()
        pretext = pretext_stage(job, ray_config)
        timings["pretext_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    featurized = featurize(job.featurize, ray_config, progress=progress)
    timings["featurize_s"] = time.perf_counter() - clock
    print(featurized.lines(), flush=True)

    clock = time.perf_counter()
    selection = select(job.select, ray_config)
    timings["select_s"] = time.perf_counter() - clock
    timings["total_s"] = time.time() - started
    print(f"selection: {selection.num_rows} images -> {job.select.out}", flush=True)

    summary = {
        "status": "succeeded",
        "started": started,
        "finished": time.time(),
        "mode": "cluster" if ray_config.address else "embedded",
        "counts": {
            "images": featurized.images,
            "featurized": featurized.featurized,
            "failed": featurized.failed,
            "featurized_this_run": featurized.processed_this_run,
            "budget": job.select.budget,
            "selected": selection.num_rows,
        },
        "pretext": pretext,
        "timings": timings,
        "featurize_images_per_second": featurized.processed_this_run / timings["featurize_s"] if timings["featurize_s"] > 0 else 0.0,
        "versions": versions(),
        "cluster": cluster,
        "outputs": {
            "store": job.featurize.out,
            "selection": job.select.out,
            "config": sidecar(job.select.out, ".config.yaml"),
            "summary": sidecar(job.select.out, ".summary.json"),
        },
    }
    summary = scrub(summary)
    options = job.select.storage()
    storage.write_bytes_atomic(
        summary["outputs"]["config"], yaml.safe_dump(job.resolved(), sort_keys=False).encode(), options
    )
    storage.write_json_atomic(summary["outputs"]["summary"], summary, options)
    print(f"resolved config -> {summary['outputs']['config']}\nrun summary -> {summary['outputs']['summary']}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        job, args = parse_job_config(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"run_selection_job: error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    try:
        run(job, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        print("run_selection_job: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, FileNotFoundError, PermissionError) as exc:
        print(f"run_selection_job: error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
