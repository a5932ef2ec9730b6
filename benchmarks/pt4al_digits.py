"""Does an image's rotation (pretext) loss predict its downstream loss? PT4AL's premise, on real images.

    .venv/bin/python benchmarks/pt4al_digits.py                      # paper settings: resnet18, 15 epochs, batch 256
    .venv/bin/python benchmarks/pt4al_digits.py --epochs 2 --model test_resnet   # a quick smoke run

1. scikit-learn's bundled handwritten digits (1797 real 8x8 scans, 10 classes), upsampled to 32 px PNGs
   (`raysel.datasets.digits.write_digits`).
2. `train_pretext` (what `raysel pretext train` runs): Ray Train on an embedded Ray, PT4AL's recipe.
3. Each image's pretext loss from `PretextScorer` (the Ray Data stage behind `featurize --pretext`),
   called in process on the decoded images.
4. Each image's downstream loss, held out: 5-fold cross-fitting, so an image's cross-entropy comes from a
   classifier that never saw it. Two classifiers on the 8x8 pixels: logistic regression and a small MLP.
5. Spearman correlation between the two losses over all 1797 images. Controls: the same network untrained
   (its rotation loss at init), and the two classifiers against each other (an upper reference).
6. A small active-learning run with raysel's own selectors (`run_selection`): a feature store of the pixels
   (`write_store`, bring-your-own embeddings) with the pretext losses; a stratified test split is held out;
   `--cycles` cycles of `--budget` labels each for pt4al, uncertainty (entropy, starting from the same cold
   start as pt4al) and random (mean of 5 seeds); test accuracy of the linear head after each cycle.

Writes a markdown report (default benchmarks/results/pt4al_digits.md) and the per-image losses (.csv).
Needs scikit-learn and scipy (raysel's test extra).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time

import numpy as np


def downstream_losses(images: np.ndarray, labels: np.ndarray, classifier: str, seed: int = 0) -> np.ndarray:
    """[N] held-out cross-entropy of each image under `classifier` ('logistic' or 'mlp'), 5-fold cross-fitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = images.reshape(len(images), -1).astype(np.float64) / 255.0
    losses = np.zeros(len(images))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    for train, held_out in folds.split(features, labels):
        if classifier == "logistic":
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        else:
            model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=seed))
        model.fit(features[train], labels[train])
        probabilities = model.predict_proba(features[held_out])
        columns = {label: index for index, label in enumerate(model.classes_)}
        true = probabilities[np.arange(len(held_out)), [columns[y] for y in labels[held_out]]]
        losses[held_out] = -np.log(np.clip(true, 1e-12, None))
    return losses


def pretext_losses(model_uri: str, uris: list[str], image_size: int) -> np.ndarray:
    """[N] rotation loss of each image, with the same decode + scorer path as `featurize --pretext`."""
    from raysel.images import DecodeBatch
    from raysel.pretext.scorer import PretextScorer
    from raysel.storage import StorageOptions

    decode = DecodeBatch(image_size, 10**8, StorageOptions())
    scorer = PretextScorer(model_uri)
    losses = []
    for start in range(0, len(uris), 256):
        batch = decode({"uri": np.array(uris[start : start + 256], dtype=object)})
        assert not any(batch["error"]), batch["error"]
        losses.append(scorer(batch)["pretext_loss"])
    return np.concatenate(losses)


def untrained_model(model: str, image_size: int, seed: int, path: str) -> str:
    """The same architecture at init, saved as a pretext model file (the control)."""
    from raysel.pretext import checkpoints
    from raysel.pretext.rotation import build_rotation_net

    net, spec = build_rotation_net(model, image_size, seed=seed)
    checkpoints.save(checkpoints.export_model(net, model, spec, {"history": []}), path)
    return path


def active_learning(work: str, uris: list[str], images: np.ndarray, labels: np.ndarray, pretext: np.ndarray,
                    cycles: int, budget: int, seed: int) -> dict[str, list]:
    """Test accuracy after each cycle, per selector, with raysel's selectors on a pixel feature store."""
    import pyarrow as pa
    from sklearn.model_selection import train_test_split

    from raysel.config import SelectConfig
    from raysel.select import run_selection
    from raysel.select.supervision.labels import LabeledSet
    from raysel.select.supervision.probe import fit_linear_probe
    from raysel.store import write_store

    features = images.reshape(len(images), -1).astype(np.float32) / 255.0
    pool, test = train_test_split(np.arange(len(uris)), test_size=0.25, stratify=labels, random_state=seed)
    pool = np.sort(pool)
    embedding = pa.ListArray.from_arrays(
        pa.array(np.arange(len(pool) + 1, dtype=np.int32) * features.shape[1]), pa.array(features[pool].reshape(-1))
    )
    table = pa.table({"uri": [uris[i] for i in pool], "embedding": embedding, "pretext_loss": pa.array(pretext[pool], pa.float32())})
    store = write_store(os.path.join(work, "store"), table).uri
    index = {uri: i for i, uri in enumerate(uris)}

    def accuracy(labeled: list[str]) -> float:
        rows = [index[u] for u in labeled]
        classes, targets = LabeledSet(labeled, [int(labels[r]) for r in rows]).class_indices()
        probe = fit_linear_probe(features[rows], targets, len(classes))
        predicted = np.array(classes)[probe.predict_proba(features[test]).argmax(axis=1)]
        return float((predicted == labels[test]).mean())

    def run(method: str, run_seed: int, **options) -> list[float]:
        labeled: list[str] = []
        curve = []
        for cycle in range(cycles):
            labels_file = None
            if labeled:
                labels_file = os.path.join(work, f"labels-{method}-{run_seed}-{cycle}.csv")
                with open(labels_file, "w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["uri", "label"])
                    writer.writerows((u, int(labels[index[u]])) for u in labeled)
            name = method if (method != "uncertainty" or cycle > 0) else "pt4al"  # uncertainty starts from pt4al's cold start
            picks = run_selection(SelectConfig(
                store=store, out=os.path.join(work, f"sel-{method}-{run_seed}-{cycle}.parquet"), method=name,
                budget=budget, labeled=labels_file, seed=run_seed, cycles=cycles, cycle=cycle if name == "pt4al" else 0,
                **options,
            ), progress=False).column("uri").to_pylist()
            labeled += picks
            curve.append(accuracy(labeled) if len({int(labels[index[u]]) for u in labeled}) > 1 else float("nan"))
        return curve

    curves = {"pt4al": run("pt4al", seed), "uncertainty (entropy)": run("uncertainty", seed, acquisition="entropy")}
    randoms = np.array([run("random", seed + s) for s in range(5)])
    curves["random (mean ± std of 5 seeds)"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(randoms.mean(axis=0), randoms.std(axis=0))]
    return curves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/pt4al_digits", help="Working folder (images, model, losses)")
    parser.add_argument("--report", default="benchmarks/results/pt4al_digits.md")
    parser.add_argument("--model", default="resnet18", help="timm model of the rotation task (PT4AL: ResNet-18)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers")
    parser.add_argument("--cpus-per-worker", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=5, help="Active-learning cycles of the selection run")
    parser.add_argument("--budget", type=int, default=30, help="Labels per cycle of the selection run")
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from raysel.config import PretextConfig, RayConfig
    from raysel.datasets.digits import load_digits_arrays, write_digits
    from raysel.pretext.training import train_pretext

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    labels_csv = write_digits(os.path.join(args.out, "digits"), image_size=args.image_size)
    with open(labels_csv) as handle:
        rows = list(csv.DictReader(handle))
    uris = [row["uri"] for row in rows]
    images, labels = load_digits_arrays()
    assert [int(row["label"]) for row in rows] == labels.tolist()

    model_path = os.path.join(args.out, f"pretext-{args.model}-e{args.epochs}-s{args.seed}.pt")
    started = time.time()
    summary = train_pretext(
        PretextConfig(
            source=os.path.dirname(uris[0]), out=model_path, model=args.model, image_size=args.image_size,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, num_workers=args.num_workers,
            cpus_per_worker=args.cpus_per_worker, seed=args.seed,
        ),
        RayConfig(num_cpus=args.num_workers * args.cpus_per_worker + 1),
    )
    train_seconds = time.time() - started
    print(summary.lines(), file=sys.stderr)

    trained = pretext_losses(model_path, uris, args.image_size)
    control = pretext_losses(
        untrained_model(args.model, args.image_size, args.seed, os.path.join(args.out, "untrained.pt")), uris, args.image_size
    )
    downstream = {name: downstream_losses(images, labels, name, args.seed) for name in ("logistic", "mlp")}

    def rho(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        result = spearmanr(a, b)
        return float(result.statistic), float(result.pvalue)

    results = []
    for name, loss in downstream.items():
        results.append((f"trained rotation loss vs {name} loss", *rho(trained, loss)))
        results.append((f"untrained rotation loss vs {name} loss (control)", *rho(control, loss)))
    results.append(("logistic loss vs mlp loss (reference)", *rho(downstream["logistic"], downstream["mlp"])))
    # How much of it is "some digits are harder for both tasks": the correlation inside each class.
    within = [rho(trained[labels == c], downstream["logistic"][labels == c])[0] for c in range(10)]
    results.append(("trained rotation vs logistic loss, within each digit (mean of 10)", float(np.mean(within)), float("nan")))

    # Mean downstream loss per pretext-loss decile: what PT4AL's batches see.
    order = np.argsort(-trained, kind="stable")
    deciles = np.array_split(order, 10)
    per_decile = [(float(trained[d].mean()), float(downstream["logistic"][d].mean()), float(downstream["mlp"][d].mean())) for d in deciles]
    per_class = [(c, float(trained[labels == c].mean()), float(downstream["logistic"][labels == c].mean())) for c in range(10)]

    with open(os.path.join(args.out, "losses.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label", "pretext_loss", "untrained_pretext_loss", "logistic_loss", "mlp_loss"])
        for i, uri in enumerate(uris):
            writer.writerow([uri, int(labels[i]), trained[i], control[i], downstream["logistic"][i], downstream["mlp"][i]])

    curves = active_learning(args.out, uris, images, labels, trained, args.cycles, args.budget, args.seed)

    command = "python benchmarks/pt4al_digits.py " + " ".join(sys.argv[1:])
    lines = [
        "# PT4AL premise on real images: rotation loss vs downstream loss (scikit-learn digits)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch on CPU; {len(uris)} images at {args.image_size} px.  ",
        f"Rotation model: {args.model}, {args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr}, "
        f"{args.num_workers} Ray Train worker(s); final training loss {summary.final_loss:.4f} "
        f"(ln 4 = 1.386 is chance); "
        + ("reused from an earlier run of this command.  " if summary.skipped else f"trained in {train_seconds:.0f} s.  "),
        "Downstream: 5-fold cross-fitted classifiers on the 8x8 pixels; each image's loss is its held-out cross-entropy.",
        "",
        "| pair | Spearman rho | p-value |",
        "|---|---|---|",
        *[f"| {name} | {r:+.3f} | {'n/a' if np.isnan(p) else f'{p:.1e}'} |" for name, r, p in results],
        "",
        "Mean losses per pretext-loss decile (PT4AL's batches; decile 1 = highest pretext loss):",
        "",
        "| decile | pretext loss | logistic loss | mlp loss |",
        "|---|---|---|---|",
        *[f"| {i + 1} | {a:.3f} | {b:.3f} | {c:.3f} |" for i, (a, b, c) in enumerate(per_decile)],
        "",
        "Mean losses per digit class:",
        "",
        "| digit | pretext loss | logistic loss |",
        "|---|---|---|",
        *[f"| {c} | {a:.3f} | {b:.3f} |" for c, a, b in per_class],
        "",
        f"Active learning with raysel's selectors: {args.cycles} cycles x {args.budget} labels from a pool of 75% of the "
        "images (pt4al batches cut from it); test accuracy of the linear head (multinomial logistic regression on the "
        "64 pixels) on the other 25%, after each cycle:",
        "",
        "| selector | " + " | ".join(f"{(c + 1) * args.budget} labels" for c in range(args.cycles)) + " |",
        "|---|" + "---|" * args.cycles,
        *[f"| {name} | " + " | ".join(a if isinstance(a, str) else f"{a:.3f}" for a in curve) + " |" for name, curve in curves.items()],
        "",
    ]
    os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
    with open(args.report, "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
