"""`raysel simulate` end to end on a tiny separable pool: real stores, real Ray, real selection."""
from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from blob_pool import CLASSES, write_blob_splits
from raysel.config import SimulateConfig, to_dict
from raysel.select import list_methods
from raysel.simulate import ResultsMismatchError, run_simulation

pytestmark = pytest.mark.ray

BUDGETS = [2, 4, 12]
METHODS = ["random", "uncertainty", "pt4al"]  # every registered method: test_every_registered_method_runs
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_blob_splits(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def simulation(ray_session, splits, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sim"))
    config = SimulateConfig(**splits, out=out, methods=",".join(METHODS), budgets="2,4,12", seeds="0,1")
    return config, run_simulation(config).to_pylist()


def labeled_after(out: str, method: str, seed: int, round_index: int) -> list[str]:
    path = os.path.join(out, "runs", method, f"seed-{seed}", f"labeled-{round_index}.parquet")
    return pq.read_table(path).column("uri").to_pylist()


def test_one_row_per_method_seed_round(simulation):
    config, rows = simulation
    assert [(r["method"], r["seed"], r["round"]) for r in rows] == [
        (m, s, r) for m in sorted(METHODS) for s in SEEDS for r in range(len(BUDGETS))
    ]
    assert all(r["labeled"] == BUDGETS[r["round"]] for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    csv_rows = pacsv.read_csv(os.path.join(config.out, "results.csv")).to_pylist()
    assert [(r["method"], r["seed"], r["round"], r["labeled"]) for r in csv_rows] == [
        (r["method"], r["seed"], r["round"], r["labeled"]) for r in rows
    ]
    assert [round(r["accuracy"], 9) for r in csv_rows] == [round(r["accuracy"], 9) for r in rows]


def test_labeled_sets_are_nested_and_never_repeat(simulation):
    config, _ = simulation
    for method in METHODS:
        for seed in SEEDS:
            previous: list[str] = []
            for round_index, budget in enumerate(BUDGETS):
                labeled = labeled_after(config.out, method, seed, round_index)
                assert len(labeled) == len(set(labeled)) == budget
                assert labeled[: len(previous)] == previous  # earlier labels kept, in order
                run_dir = os.path.join(config.out, "runs", method, f"seed-{seed}")
                selection = os.path.join(run_dir, f"round-{round_index}-random.parquet")  # a cold-start round
                if not os.path.exists(selection):
                    selection = os.path.join(run_dir, f"round-{round_index}.parquet")
                picks = pq.read_table(selection).column("uri").to_pylist()
                assert labeled[len(previous):] == picks
                previous = labeled


def test_accuracy_rises_on_separable_blobs(simulation):
    _, rows = simulation
    first = [r["accuracy"] for r in rows if r["round"] == 0]
    last = [r["accuracy"] for r in rows if r["round"] == len(BUDGETS) - 1]
    # two labels can name at most two of the three classes: at most 2/3 of a balanced test split
    assert max(first) <= (CLASSES - 1) / CLASSES + 1e-9
    assert sum(last) / len(last) > 0.85
    assert sum(last) / len(last) > sum(first) / len(first) + 0.3


def test_cold_start_is_randoms_first_round(simulation):
    config, rows = simulation
    by_key = {(r["method"], r["seed"], r["round"]): r for r in rows}
    for seed in SEEDS:
        assert by_key[("uncertainty", seed, 0)]["picked_by"] == "random"
        assert labeled_after(config.out, "uncertainty", seed, 0) == labeled_after(config.out, "random", seed, 0)
        assert by_key[("uncertainty", seed, 0)]["accuracy"] == by_key[("random", seed, 0)]["accuracy"]
        assert by_key[("pt4al", seed, 0)]["picked_by"] == "pt4al"  # cycle 0 needs no labels
    assert any(r["picked_by"] == "uncertainty" for r in rows if r["method"] == "uncertainty")


def test_png_and_config_written(simulation):
    config, _ = simulation
    with open(os.path.join(config.out, "accuracy.png"), "rb") as handle:
        png = handle.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    with open(os.path.join(config.out, "config.yaml")) as handle:
        assert yaml.safe_load(handle) == to_dict(config)


def test_seeds_reproduce_exactly(simulation, splits, tmp_path):
    config, rows = simulation
    again = run_simulation(SimulateConfig(**splits, out=str(tmp_path), methods="uncertainty", budgets="2,4,12", seeds="1"))
    assert again.to_pylist() == [r for r in rows if r["method"] == "uncertainty" and r["seed"] == 1]
    for round_index in range(len(BUDGETS)):
        assert labeled_after(str(tmp_path), "uncertainty", 1, round_index) == labeled_after(config.out, "uncertainty", 1, round_index)
    assert labeled_after(config.out, "random", 0, 2) != labeled_after(config.out, "random", 1, 2)  # seeds matter


def test_rerun_skips_finished_curves_and_rejects_other_inputs(simulation, splits, tmp_path):
    config, rows = simulation
    out = str(tmp_path / "sim")
    shutil.copytree(config.out, out)
    shutil.rmtree(os.path.join(out, "runs"))  # a rerun that recomputed anything would write here again
    fewer = SimulateConfig(**splits, out=out, methods="random", budgets="2,4,12", seeds="0,1")
    assert run_simulation(fewer).to_pylist() == [r for r in rows if r["method"] == "random"]
    assert not os.path.exists(os.path.join(out, "runs"))
    with pytest.raises(ResultsMismatchError, match="other inputs, budgets"):
        run_simulation(SimulateConfig(**splits, out=out, methods="random", budgets="2,4,10", seeds="0"))


def test_every_registered_method_runs(ray_session, splits, tmp_path):
    methods = list_methods()
    table = run_simulation(SimulateConfig(**splits, out=str(tmp_path), methods=",".join(methods), budgets="3,9", seeds="0"))
    assert sorted(set(table.column("method").to_pylist())) == methods
    assert table.num_rows == 2 * len(methods)
    assert all(0.0 <= a <= 1.0 for a in table.column("accuracy").to_pylist())


def test_rebuilt_store_at_the_same_path_recomputes_the_curves(simulation, splits, tmp_path):
    """Same paths, same options, other vectors: the cached curves are of other data and are recomputed."""
    import numpy as np

    from raysel.store import FeatureStore, write_store

    config, rows = simulation
    out, pool = str(tmp_path / "sim"), str(tmp_path / "pool-store")
    shutil.copytree(splits["store"], pool)
    inputs = {**splits, "store": pool}
    first = run_simulation(SimulateConfig(**inputs, out=out, methods="random", budgets="2,4,12", seeds="0")).to_pylist()
    assert first == [r for r in rows if r["method"] == "random" and r["seed"] == 0]

    table = pa.concat_tables(FeatureStore(pool).iter_tables())
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((table.num_rows, len(table.column("embedding")[0]))).astype(np.float32)
    table = table.set_column(table.column_names.index("embedding"), "embedding",
                             pa.array(list(noise), pa.list_(pa.float32())))
    shutil.rmtree(pool)
    write_store(pool, table)  # the same uris and labels; embeddings that carry no class signal
    again = run_simulation(SimulateConfig(**inputs, out=out, methods="random", budgets="2,4,12", seeds="0")).to_pylist()
    assert [r["accuracy"] for r in again] != [r["accuracy"] for r in first]
