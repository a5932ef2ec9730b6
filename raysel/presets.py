"""Named flag sets that reproduce the released code as closely as raysel's architecture allows.

    raysel featurize SOURCE --out STORE --preset freesel-release
    raysel select STORE --preset freesel-release --budget 3000 --out sel.parquet
    raysel pretext train SOURCE --out rot.pt --preset pt4al-release
    raysel select STORE --preset pt4al-release --cycle 0 --budget 1000 --out c0.parquet

A preset sets option defaults before a `--config` YAML file and the flags, so anything
given explicitly still wins. In Python: `preset_config(SelectConfig, "freesel-release",
store=..., out=..., budget=...)`. What each value reproduces, and what no option can, is in
docs/fidelity.md.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

# stage -> option -> value; stages: "featurize", "select", "pretext" (pretext train)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # yichen928/FreeSel data_selection/voc_dense_kmeans.py (argparse defaults, lines 171-189) + kmeans_pytorch
    "freesel-release": {
        "featurize": {
            "model": "vit_small_patch16_224.dino",  # --arch vit_small --patch_size 16, DINO weights
            "tau": 0.5,  # --threshold 0.5
            "clusters": 5,  # --centroid_num 5 (the CIFAR script: 1)
            "kmeans_iters": 100,  # iter_limit=100
            "kmeans_tol": 1e-4,  # kmeans_pytorch's tol
            "kmeans_init": "random",
            "kmeans_stop": "sum-shift-squared",
            "kmeans_empty": "reseed",
            "precision": "float32",
        },
        "select": {"method": "geal", "sampling": "prob", "distance": "cosine"},  # --sampling prob, --dist_type cosine
    },
    # johnsk95/PT4AL rotation.py, make_batches.py, main.py
    "pt4al-release": {
        "pretext": {
            "model": "cifar_resnet18",  # models/resnet.py ResNet18, linear -> 4
            "epochs": 15,
            "batch_size": 256,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "constant",  # MultiStepLR(milestones=[30, 60, 90]) never steps within 15 epochs
            "shuffle": "full",  # DataLoader(shuffle=True)
            "rotation_forwards": "separate",  # net(inputs), net(inputs1), ... of shuffled rotations
            "keep": "best",  # save when the rotation accuracy improves
        },
        "select": {"method": "pt4al", "cycles": 10, "pt4al_sort": "string", "confidence": "normalized"},
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset_values(name: str, stage: str) -> dict[str, Any]:
    """The option values preset `name` sets for `stage` ("featurize", "select" or "pretext")."""
    if name not in PRESETS:
        raise ValueError(f"unknown --preset {name!r}; presets: {preset_names()}")
    return dict(PRESETS[name].get(stage, {}))


def preset_config(cls: type, name: str, **explicit: Any) -> Any:
    """`cls` (FeaturizeConfig, SelectConfig or PretextConfig) with preset `name`, then `explicit` values on top."""
    stage = {"FeaturizeConfig": "featurize", "SelectConfig": "select", "PretextConfig": "pretext"}[cls.__name__]
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in preset_values(name, stage).items() if k in known}
    return cls(**{**values, **explicit})
