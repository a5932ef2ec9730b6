"""`--preset freesel-release` / `--preset pt4al-release`: the released code's options, before --config and flags."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from raysel import _dataclass_cli, cli
from raysel.config import FeaturizeConfig, PretextConfig, SelectConfig
from raysel.presets import PRESETS, preset_config


def parsed(argv: list[str], cls: type):
    """The config `raysel ...argv` would run with (the CLI's own parsing steps)."""
    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    if argv[0] == "pretext":
        sub, stage = commands["pretext"]._subparsers._group_actions[0].choices["train"], "pretext"  # noqa: SLF001
    else:
        sub, stage = commands[argv[0]], argv[0]
    cli._apply_preset(sub, argv, stage)
    return _dataclass_cli.build(cls, parser.parse_args(argv))


@pytest.mark.ray
def test_freesel_release_sets_the_released_kmeans_precision_and_sampling(make_store, synth, tmp_path, ray_session):
    featurize = parsed(["featurize", "pool", "--out", "s", "--preset", "freesel-release"], FeaturizeConfig)
    assert (featurize.kmeans_init, featurize.kmeans_stop, featurize.kmeans_empty) == ("random", "sum-shift-squared", "reseed")
    assert featurize.precision == "float32" and featurize.clusters == 5 and featurize.tau == 0.5
    explicit = parsed(["featurize", "pool", "--out", "s", "--preset", "freesel-release", "--clusters", "1"], FeaturizeConfig)
    assert explicit.clusters == 1 and explicit.kmeans_init == "random"  # flags win over the preset
    assert FeaturizeConfig().kmeans_init == "kmeans++"  # without the preset: raysel's defaults

    store = make_store(synth.table(synth.uris(40, 1), synth.vectors(40, 3, 6, seed=1)))
    out = str(tmp_path / "sel.parquet")
    assert cli.main(["select", store, "--preset", "freesel-release", "--budget", "6", "--out", out, "--no-progress"]) == 0
    written = json.load(open(out + ".config.json"))["config"]
    assert written["sampling"] == "prob" and written["method"] == "geal" and written["distance"] == "cosine"
    assert preset_config(SelectConfig, "freesel-release", store=store, out=out, budget=6).sampling == "prob"


@pytest.mark.pure
def test_pt4al_release_sets_the_released_learner_and_batches(make_store, synth, tmp_path):
    pretext = parsed(["pretext", "train", "pool", "--out", "r.pt", "--preset", "pt4al-release"], PretextConfig)
    assert pretext.model == "cifar_resnet18" and pretext.image_size is None  # the model's own 32 px
    assert (pretext.shuffle, pretext.rotation_forwards, pretext.keep) == ("full", "separate", "best")
    assert (pretext.epochs, pretext.batch_size, pretext.lr) == (15, 256, 0.1)
    pretext.validate()

    uris = synth.uris(30, 2)
    table = synth.table(uris, synth.vectors(30, 1, 4, seed=2))
    losses = np.exp(np.random.default_rng(2).uniform(np.log(1e-6), np.log(3.0), 30)).astype(np.float32)
    store = make_store(table.append_column("pretext_loss", pa.array(losses, pa.float32())))
    out = str(tmp_path / "c0.parquet")
    argv = ["select", store, "--preset", "pt4al-release", "--cycles", "3", "--cycle", "0", "--budget", "2", "--out", out]
    assert cli.main([*argv, "--no-progress"]) == 0
    written = json.load(open(out + ".config.json"))
    assert written["config"]["pt4al_sort"] == "string" and written["config"]["confidence"] == "normalized"
    assert written["stats"]["pt4al_sort"] == "string"
    assert parsed([*argv, "--pt4al-sort", "numeric"], SelectConfig).pt4al_sort == "numeric"


@pytest.mark.pure
def test_every_preset_value_is_a_real_option_and_unknown_presets_fail(capsys):
    classes = {"featurize": FeaturizeConfig, "select": SelectConfig, "pretext": PretextConfig}
    for stages in PRESETS.values():
        for stage, values in stages.items():
            names = {f for f in classes[stage].__dataclass_fields__}
            assert set(values) <= names, (stage, set(values) - names)
    with pytest.raises(SystemExit):
        cli.main(["select", "store", "--preset", "nope", "--budget", "1", "--out", "x.parquet"])
