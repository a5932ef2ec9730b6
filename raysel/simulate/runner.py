"""`run_simulation(config)`: what `raysel simulate` and `raysel.api.simulate` call.

1. Check the config and read both splits: embeddings, the oracle's labels, budgets against the pool.
2. Write DIR/config.yaml (the resolved config; `raysel simulate --config DIR/config.yaml` reruns it).
3. For each method and seed, run the rounds (rounds.py) unless DIR/results.parquet already holds
   that curve from the same inputs (same paths and options in config.yaml, same contents in
   DIR/inputs.json: the stores' fingerprints and the labels files' sha256, raysel/fingerprints.py);
   rewrite the results table after each curve.
4. Draw DIR/accuracy.png.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import fields
from typing import Any

import pyarrow as pa
import yaml

from raysel import __version__, storage
from raysel.config import SelectConfig, SimulateConfig, to_dict
from raysel.fingerprints import file_digest, store_state
from raysel.select.pool.store_rows import file_row_counts
from raysel.select.registry import get_method
from raysel.simulate.classifier import read_embeddings, scan_embeddings, single_threaded_torch
from raysel.simulate.errors import OracleLabelsError, ResultsMismatchError, SelectOptionsError, SimulationBudgetError
from raysel.simulate.oracle import Oracle, read_oracle_labels
from raysel.simulate.plot import PLOT_FILE, write_plot
from raysel.simulate.results import read_results, write_results
from raysel.simulate.rounds import SimulationData, run_curve
from raysel.store import FeatureStore

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
INPUTS_FILE = "inputs.json"  # what the inputs held when the curves were computed
# Set by the simulation in every round; --select-options cannot override them.
ROUND_OPTIONS = ("store", "out", "budget", "method", "labeled", "seed", "cycle", "cycles", "s3_endpoint")
# Inputs a finished curve depends on: a rerun reuses curves only when these match.
CURVE_INPUTS = ("store", "labels", "test_store", "test_labels", "budgets", "select_options")


def parse_select_options(text: str | dict | None) -> dict[str, Any]:
    """--select-options (YAML/JSON mapping, or a dict from the API) -> SelectConfig keyword arguments."""
    if text in (None, ""):
        return {}
    try:
        values = yaml.safe_load(text) if isinstance(text, str) else text
    except yaml.YAMLError as exc:
        raise SelectOptionsError(f"--select-options is not YAML/JSON: {exc}") from None
    if not isinstance(values, dict):
        raise SelectOptionsError(f"--select-options must be a mapping like '{{distance: euclidean}}', got {text!r}")
    values = {str(key).replace("-", "_"): value for key, value in values.items()}
    reserved = sorted(set(values) & set(ROUND_OPTIONS))
    if reserved:
        raise SelectOptionsError(f"--select-options cannot set {reserved}: the simulation sets them in every round")
    known = {f.name for f in fields(SelectConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SelectOptionsError(f"--select-options has unknown `raysel select` options {unknown}; valid: {sorted(known - set(ROUND_OPTIONS))}")
    return values


def _curve_inputs(config: dict[str, Any]) -> dict[str, Any]:
    values = {key: config.get(key) for key in CURVE_INPUTS}
    values["budgets"] = SimulateConfig(budgets=values["budgets"] or "").budget_list()
    values["select_options"] = parse_select_options(values["select_options"])
    return values


def input_fingerprints(config: SimulateConfig) -> dict[str, Any]:
    """What the stores and labels files hold now: a store rebuilt at the same path gives other values."""
    options = config.storage()
    pool, test = FeatureStore(config.store, options), FeatureStore(config.test_store, options)
    return {
        "store": store_state(pool, file_row_counts(pool)),
        "test_store": store_state(test, file_row_counts(test)),
        "labels": file_digest(config.labels, options),
        "test_labels": file_digest(config.test_labels, options),
    }


def load_data(config: SimulateConfig) -> SimulationData:
    """Embeddings and labels of pool and test split, checked against each other."""
    options = config.storage()
    pool_uris, pool_dims = scan_embeddings(FeatureStore(config.store, options), "pool")  # no [N, D] in memory
    test_uris, test_features = read_embeddings(FeatureStore(config.test_store, options), "test split")
    if pool_dims != test_features.shape[1]:
        raise OracleLabelsError(
            f"the pool's embeddings have {pool_dims} dimensions and the test split's {test_features.shape[1]}: "
            "featurize both splits with the same model"
        )
    oracle = Oracle(
        pool_labels=read_oracle_labels(config.labels, pool_uris, "pool", options),
        test_labels=read_oracle_labels(config.test_labels, test_uris, "test split", options),
    )
    test_targets = oracle.class_indices([oracle.test_labels[uri] for uri in test_uris])
    return SimulationData(config.store, pool_uris, None, test_features, test_targets, oracle, pool_options=options)


def run_simulation(config: SimulateConfig) -> pa.Table:
    """Simulated labeling rounds for every method and seed; writes results, plot and config under `config.out`.

    Returns:
        The results table (results.py: method, seed, round, labeled, accuracy, picked_by),
        one row per requested (method, seed, round), sorted.
    """
    started = time.time()
    config.validate()
    for method in config.method_list():
        get_method(method)  # raises UnknownMethodError listing the valid names
    select_options = parse_select_options(config.select_options)
    budgets, methods, seeds = config.budget_list(), config.method_list(), config.seed_list()
    options = config.storage()
    data = load_data(config)
    if budgets[-1] > len(data.pool_uris):
        raise SimulationBudgetError(f"--budgets end at {budgets[-1]} labeled images but the pool holds {len(data.pool_uris)}")

    config_uri = storage.join(config.out, CONFIG_FILE)
    finished: list[dict] = []
    if storage.exists(config_uri, options):
        earlier = yaml.safe_load(storage.read_bytes(config_uri, options)) or {}
        if _curve_inputs(earlier) != _curve_inputs(to_dict(config)):
            raise ResultsMismatchError(
                f"{config.out} holds a simulation of other inputs, budgets or select options ({config_uri}); "
                "use another --out, or delete it to start over"
            )
        finished = read_results(config.out, options)
    inputs_uri = storage.join(config.out, INPUTS_FILE)
    inputs = input_fingerprints(config)
    if finished:
        earlier_inputs = storage.read_json(inputs_uri, options) if storage.exists(inputs_uri, options) else None
        if json.loads(json.dumps(inputs)) != earlier_inputs:
            log.warning("%s: the stores or labels changed since its curves were computed; recomputing them", config.out)
            finished = []
    storage.write_bytes_atomic(config_uri, yaml.safe_dump(to_dict(config), sort_keys=False).encode(), options)
    storage.write_json_atomic(inputs_uri, inputs, options)

    wanted = {(method, seed) for method in methods for seed in seeds}
    rows = [row for row in finished if (row["method"], row["seed"]) in wanted]
    done = {key for key in wanted if sum((r["method"], r["seed"]) == key for r in rows) == len(budgets)}
    rows = [row for row in rows if (row["method"], row["seed"]) in done]
    with single_threaded_torch():
        for method in methods:
            for seed in seeds:
                if (method, seed) in done:
                    log.info("%s seed %d: already in %s", method, seed, config.out)
                    continue
                curve_started = time.time()
                rows += run_curve(method, seed, budgets, data, config.out, select_options, config.s3_endpoint)
                write_results(rows, config.out, options)
                log.info("%s seed %d: %d rounds in %.1f s", method, seed, len(budgets), time.time() - curve_started)
    table = write_results(rows, config.out, options)
    write_plot(rows, storage.join(config.out, PLOT_FILE), options)
    log.info("simulate (raysel %s): %d curves in %.1f s", __version__, len(wanted), time.time() - started)
    return table
