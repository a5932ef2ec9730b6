"""Typed configuration, one dataclass per stage.

The CLI (`raysel ...`), YAML job files (`jobs/*.py --config run.yaml`) and the
Python API (`raysel.featurize(FeaturizeConfig(...))`) all build these same
objects; `raysel/_dataclass_cli.py` turns their fields into flags. Every run
writes its resolved config next to its output.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from raysel.storage import StorageOptions


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class RayConfig:
    """Where the work runs."""

    address: str | None = _opt(
        None, "Ray cluster to join ('auto', 'HOST:PORT', 'ray://HOST:PORT'); default: an embedded in-process Ray"
    )
    num_cpus: int | None = _opt(None, "CPUs of the embedded Ray (ignored with --address)")
    num_gpus: int | None = _opt(None, "GPUs of the embedded Ray (ignored with --address)")


@dataclass
class FeaturizeConfig:
    """`raysel featurize SOURCE --out STORE`: images -> embeddings + knowledge clusters."""

    source: str = _opt("", "Local folder, s3://bucket/prefix, or a manifest (.parquet/.csv with a 'uri' column)", positional=True)
    out: str = _opt("", "Feature store directory (local or s3://)", required=True)
    model: str = _opt("vit_small_patch16_224.dino", "timm ViT name (GEAL uses DINO ViT-S/16)")
    weights: str | None = _opt(None, "Checkpoint to load (local path or s3://), read with weights_only=True")
    random_init: bool = _opt(False, "Use randomly initialised weights (tests, benchmarks); never the silent default")
    tau: float = _opt(0.5, "Keep the smallest set of patches holding at least this much class-token attention")
    clusters: int = _opt(5, "Knowledge clusters K per image")
    kmeans_iters: int = _opt(100, "Max K-Means iterations per image")
    kmeans_tol: float = _opt(1e-4, "K-Means stops when no center moves more than this")
    batch_size: int | None = _opt(
        None, "Images per model batch ('auto'/default: from the cluster and model, 256 per GPU for ViT-S/16, "
        "32 on CPUs; docs/operations.md)", auto=True
    )
    chunk_size: int | None = _opt(
        None, "Images per work chunk: the unit of output shards and of resume ('auto'/default: shards of at most "
        "128 MiB, >= 4 chunks per writing actor, >= 256 images; docs/operations.md)", auto=True
    )
    model_actors: int | None = _opt(
        None, "Model actors ('auto'/default: one per GPU; on CPU clusters one per node)", auto=True
    )
    kmeans_actors: int | None = _opt(
        None, "Knowledge-cluster K-Means actors ('auto'/default: 0 on GPU clusters = K-Means on the model's GPU; "
        "on CPU clusters enough CPU actors for the model actors' rate, at least 1)", auto=True
    )
    decode_threads: int | None = _opt(
        None, "Concurrent object reads per decode task ('auto'/default: 8 for local sources, 16 for s3://)", auto=True
    )
    max_image_pixels: int = _opt(89_478_485, "Reject larger images (decompression-bomb guard)")
    seed: int = _opt(0, "Seed for everything random")
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")
    pretext: str | None = _opt(None, "Rotation pretext checkpoint: adds a pretext_loss column (PT4AL)")
    stall_timeout: float = _opt(600.0, "Stop with an error after this many seconds without progress (0: wait forever)")
    s3_max_attempts: int = _opt(8, "Attempts per S3 request (503 SlowDown, 500, resets, timeouts), backoff with jitter")
    # --- fidelity to the released FreeSel code (docs/fidelity.md) ---
    kmeans_init: str = _opt(
        "kmeans++", "K-Means seeding: 'kmeans++' (lowest inertia on real patch features, docs/fidelity.md), "
        "'random' (K distinct random patches, the released kmeans_pytorch) or 'farthest' (farthest point from the "
        "highest-attention patch, raysel <= 0.x); random draws are seeded per image from its uri and --seed"
    )
    kmeans_stop: str = _opt(
        "max-shift", "K-Means stop: 'max-shift' (no center moved more than --kmeans-tol) or 'sum-shift-squared' "
        "((sum of center shifts)^2 < --kmeans-tol, the released kmeans_pytorch)"
    )
    kmeans_empty: str = _opt(
        "keep", "An empty K-Means cluster: 'keep' its center, or 'reseed' it at a random patch (released kmeans_pytorch)"
    )
    precision: str | None = _opt(
        None, "Model precision: 'float32' (end to end, as the released code) or 'bf16' (bfloat16 autocast on GPU, "
        "kept patches shipped to K-Means as float16); default: bf16 on GPU, float32 model on CPU"
    )

    def __post_init__(self) -> None:
        for name in AUTO_FEATURIZE_FIELDS:  # "auto" (YAML, Python API) is the same as not set: chosen from the cluster
            if getattr(self, name) == "auto":
                setattr(self, name, None)

    def fidelity_identity(self) -> dict[str, Any]:
        """What of the K-Means rule and precision joins the store's identity: the init always (stores written
        before it existed used 'farthest' and must not be resumed with another), the rest when not the default."""
        defaults = {"kmeans_stop": "max-shift", "kmeans_empty": "keep", "precision": None}
        changed = {name: getattr(self, name) for name, default in defaults.items() if getattr(self, name) != default}
        return {"kmeans_init": self.kmeans_init, **changed}

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint, s3_max_attempts=self.s3_max_attempts)

    def validate(self) -> None:
        if not self.source:
            raise ValueError("featurize needs a SOURCE (folder, s3://bucket/prefix or manifest)")
        # The same choices as raysel.cluster.kmeans.INITS / STOPS / EMPTIES (not imported: that imports torch).
        kmeans_choices = (
            ("kmeans_init", ("farthest", "random", "kmeans++")),
            ("kmeans_stop", ("max-shift", "sum-shift-squared")),
            ("kmeans_empty", ("keep", "reseed")),
        )
        for name, choices in kmeans_choices:
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.precision not in (None, "float32", "bf16"):
            raise ValueError(f"--precision must be 'float32' or 'bf16', got {self.precision!r}")
        if not self.out:
            raise ValueError("featurize needs --out STORE")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"--tau must be in (0, 1], got {self.tau}")
        for name in ("clusters", "kmeans_iters", "batch_size", "chunk_size", "decode_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.model_actors is not None and self.model_actors < 1:
            raise ValueError(f"--model-actors must be >= 1, got {self.model_actors}")
        if self.kmeans_actors is not None and self.kmeans_actors < 0:
            raise ValueError(f"--kmeans-actors must be >= 0, got {self.kmeans_actors}")
        if self.stall_timeout < 0:
            raise ValueError(f"--stall-timeout must be >= 0 seconds, got {self.stall_timeout}")


# FeaturizeConfig fields whose None / "auto" means "chosen from the cluster" (raysel.runtime.resolve_featurize):
# those declared with auto=True.
AUTO_FEATURIZE_FIELDS = tuple(f.name for f in fields(FeaturizeConfig) if f.metadata.get("auto"))


@dataclass
class SelectConfig:
    """`raysel select STORE --budget B --out SELECTION.parquet`."""

    store: str = _opt("", "Feature store directory (local or s3://)", positional=True)
    out: str = _opt("", "Selection manifest to write (.parquet)", required=True)
    budget: int = _opt(0, "Images to select", required=True)
    method: str = _opt("geal", "Selection method (see `raysel methods`)")
    sampling: str = _opt(
        "greedy", "geal: 'greedy' (the paper's Algorithm 1, FDS) or 'prob' (draw clusters with p ~ d^2; the released "
        "FreeSel scripts default to prob, and its VOC and CIFAR runs used it)"
    )
    distance: str | None = _opt(None, "'cosine' or 'euclidean' (default: cosine for geal, euclidean for coreset)")
    labeled: str | None = _opt(None, "Already-labeled images (.parquet/.csv with 'uri'): seed the pool, never re-picked")
    seed: int = _opt(0, "Seed: first pick without --labeled, prob sampling, random method")
    shards: int = _opt(1, "Shard actors holding the vectors")
    dtype: str = _opt("float32", "Shard storage dtype: float32 or float16")
    candidates: int = _opt(64, "Candidates per pass of the batched exact K-Center-Greedy")
    no_pruning: bool = _opt(
        False, "geal/coreset: compute every distance of every pass (no triangle-inequality skips; same picks)"
    )
    shard_kernel: str = _opt(
        "numpy", "geal/coreset: 'numpy' (CPU) or 'torch' (vectors held on the shard actor's GPU when the cluster has GPUs)"
    )
    checkpoint_every: int = _opt(100, "Checkpoint the selection state every this many picks")
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")
    exclude: str | None = _opt(
        None, "Images never to pick (.parquet/.csv with 'uri'), e.g. `raysel dedup`'s DUPLICATES.parquet; every method"
    )
    s3_max_attempts: int = _opt(8, "Attempts per S3 request (503 SlowDown, 500, resets, timeouts), backoff with jitter")
    # --- label-aware methods: pt4al, uncertainty (docs/pt4al.md) ---
    cycles: int = _opt(10, "pt4al: batches the pool is cut into by pretext loss, one per cycle (paper: 10)")
    cycle: int = _opt(0, "pt4al: this cycle, 0 .. cycles-1 (0: cold start, uniform over the hardest batch)")
    acquisition: str = _opt("entropy", "uncertainty: 'entropy', 'margin' or 'least-confidence'")
    predictions: str | None = _opt(
        None, "pt4al / uncertainty: your model's class probabilities (.parquet/.csv: 'uri' + prob_0..prob_K-1 "
        "or a list column 'probs'), instead of the built-in linear head on the embeddings"
    )
    pt4al_sort: str = _opt(
        "numeric", "pt4al: order of the pretext losses: 'numeric' (the paper) or 'string' (the released "
        "make_batches.py sorts str(float(loss)), so losses below 1e-4 in scientific notation sort with the hardest)"
    )
    confidence: str = _opt(
        "normalized", "pt4al cycles >= 1: top-1 of softmax(logits / |logits|) ('normalized', the released code) or "
        "of softmax(logits) ('softmax'); applies to the linear head and to --predictions-logits"
    )
    predictions_logits: bool = _opt(False, "--predictions holds logits (prob_0.. columns are raw scores), not probabilities")
    random_start: int = _opt(
        0, "geal / coreset: the first N picks are seeded uniform draws that count toward --budget (the released "
        "code's --random_num); the rest are K-Center picks. 0: off"
    )
    # --- low-budget methods on the embedding: typiclust, probcover (docs/selection.md) ---
    typiclust_max_clusters: int = _opt(
        500, "typiclust: most K-Means clusters; the pool is cut into min(labeled + budget, this) (paper's code: 500)"
    )
    delta: float | None = _opt(
        None, "probcover: ball radius on L2-normalized embeddings, in (0, 2]; default: the purity rule"
    )
    purity_alpha: float = _opt(0.95, "probcover: the purity rule keeps the largest delta whose balls are this pure")
    purity_clusters: int | None = _opt(
        None, "probcover: K-Means clusters the purity rule measures against (paper: the classes); "
        "default: min(1000, sample images / 20)"
    )
    ball_index: str = _opt(
        "auto", "probcover: delta-ball search 'flat' (exact), 'ivf' (faiss IVF cells, may miss edges) or 'auto' "
        "(flat up to 100,000 images, ivf above; docs/selection.md)"
    )
    ivf_lists: int | None = _opt(None, "probcover --ball-index ivf: IVF cells (default: round(sqrt(images)))")
    ivf_probes: int = _opt(8, "probcover --ball-index ivf: cells probed per image (= --ivf-lists: the exact graph)")

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint, s3_max_attempts=self.s3_max_attempts)


@dataclass
class PretextConfig:
    """`raysel pretext train SOURCE --out MODEL`: PT4AL's rotation-prediction model, trained with Ray Train.

    Defaults are the paper's (ResNet-18, 15 epochs, batch 256, SGD lr 0.1, momentum 0.9,
    weight decay 5e-4, no augmentation). The trained model scores images in
    `raysel featurize --pretext MODEL` (the store's `pretext_loss` column).
    """

    source: str = _opt("", "Local folder, s3://bucket/prefix, or a manifest (.parquet/.csv with a 'uri' column)", positional=True)
    out: str = _opt("", "Trained model file to write (local or s3://)", required=True)
    model: str = _opt("resnet18", "timm model name (PT4AL: ResNet-18); a ViT's backbone also loads in `featurize --weights`")
    pretrained: bool = _opt(False, "Start from the timm hub's pretrained weights (PT4AL trains from scratch)")
    image_size: int | None = _opt(
        None, "Square input size for training and scoring (default: the model's own, or the images' native size when "
        "the first 16 are all smaller, so CIFAR-size images are not upsampled)"
    )
    epochs: int = _opt(15, "Training epochs (PT4AL: 15)")
    batch_size: int = _opt(256, "Images per step over all workers, each seen in its 4 rotations (PT4AL: 256)")
    lr: float = _opt(0.1, "SGD learning rate (PT4AL: 0.1)")
    momentum: float = _opt(0.9, "SGD momentum (PT4AL: 0.9)")
    weight_decay: float = _opt(5e-4, "SGD weight decay (PT4AL: 5e-4)")
    schedule: str = _opt("constant", "Learning-rate schedule: 'constant' (PT4AL over 15 epochs) or 'cosine'")
    optimizer: str = _opt(
        "auto", "'auto': SGD with --lr etc. (PT4AL's recipe) for CNNs, AdamW with warmup and a cosine decay for "
        "transformers (a ViT under SGD lr 0.1 stays at chance, loss ln 4); or 'sgd' / 'adamw' for any model"
    )
    adamw_lr: float = _opt(1e-3, "AdamW: peak learning rate, after the warmup")
    adamw_weight_decay: float = _opt(0.05, "AdamW: weight decay")
    warmup: float = _opt(0.1, "AdamW: fraction of all steps with a linear warmup; a per-step cosine decay to 0 follows")
    grad_clip: float = _opt(1.0, "AdamW: clip the gradient norm to this (0: no clipping)")
    num_workers: int | None = _opt(None, "Ray Train workers, data-parallel (default: one per GPU, else 1)")
    cpu: bool = _opt(False, "Train on CPUs even when the cluster has GPUs")
    cpus_per_worker: int = _opt(1, "CPUs (and torch threads) per training worker")
    shuffle_buffer: int = _opt(1024, "Rows in each worker's local shuffle buffer (0: no shuffling)")
    checkpoint_dir: str | None = _opt(None, "Epoch checkpoints (default: OUT.checkpoints); a rerun resumes from the last")
    keep_checkpoints: int = _opt(2, "Epoch checkpoints kept (the newest)")
    max_failures: int = _opt(0, "Worker failures Ray Train recovers from (from the last checkpoint) before giving up")
    decode_threads: int = _opt(8, "Concurrent object reads per decode task")
    max_image_pixels: int = _opt(89_478_485, "Reject larger images (decompression-bomb guard)")
    seed: int = _opt(0, "Seed for the init, the data order and the shuffles")
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")
    stall_timeout: float = _opt(600.0, "Stop with an error after this many seconds without a finished step (0: wait forever)")
    # --- fidelity to the released PT4AL code (docs/fidelity.md) ---
    shuffle: str = _opt(
        "buffer", "'buffer': a seeded local shuffle of --shuffle-buffer rows per epoch; 'full': a fresh seeded "
        "permutation of each worker's whole share every epoch (the released DataLoader(shuffle=True); holds the "
        "decoded share in memory)"
    )
    rotation_forwards: str = _opt(
        "joint", "'joint': one forward of the 4 x batch rotated views; 'separate': four forwards of batch views, "
        "each image's rotations in a seeded random order (the released rotation.py; BatchNorm sees other batches)"
    )
    keep: str = _opt(
        "last", "Model written to --out: 'last' epoch, or 'best' rotation accuracy on the pool after an epoch "
        "(the released rotation.py's checkpoint; one extra pass per epoch)"
    )

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint)

    def checkpoints(self) -> str:
        return self.checkpoint_dir or self.out.rstrip("/") + ".checkpoints"

    def validate(self) -> None:
        if not self.source:
            raise ValueError("pretext train needs a SOURCE (folder, s3://bucket/prefix or manifest)")
        if not self.out:
            raise ValueError("pretext train needs --out MODEL (a file path or s3:// URI)")
        for name in ("epochs", "batch_size", "cpus_per_worker", "keep_checkpoints", "decode_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.num_workers is not None and not 1 <= self.num_workers <= self.batch_size:
            raise ValueError(f"--num-workers must be in [1, --batch-size={self.batch_size}], got {self.num_workers}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"--image-size must be >= 8, got {self.image_size}")
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("--lr must be > 0, --momentum and --weight-decay >= 0")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"--schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.optimizer not in ("auto", "sgd", "adamw"):
            raise ValueError(f"--optimizer must be 'auto', 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.adamw_lr <= 0 or self.adamw_weight_decay < 0 or not 0 <= self.warmup < 1 or self.grad_clip < 0:
            raise ValueError("--adamw-lr must be > 0, --adamw-weight-decay and --grad-clip >= 0, --warmup in [0, 1)")
        if self.shuffle_buffer < 0 or self.max_failures < 0:
            raise ValueError("--shuffle-buffer and --max-failures must be >= 0")
        if self.stall_timeout < 0:
            raise ValueError(f"--stall-timeout must be >= 0 seconds, got {self.stall_timeout}")
        for name, choices in (("shuffle", ("buffer", "full")), ("rotation_forwards", ("joint", "separate")), ("keep", ("last", "best"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {list(choices)}, got {getattr(self, name)!r}")


@dataclass
class ReportConfig:
    """`raysel report STORE_OR_RUN --out report.html`: one self-contained HTML page about a selection."""

    source: str = _opt(
        "", "Feature store directory, or a run directory holding store/ and selection.parquet (as `raysel demo` writes)",
        positional=True,
    )
    out: str = _opt("", "HTML file to write (local or s3://)", required=True)
    selection: str | None = _opt(None, "Selection manifest (.parquet); default: selection.parquet of the run directory")
    labels: str | None = _opt(None, "Labels file (.parquet/.csv: 'uri', 'label'): adds the class histogram of the selection")
    simulation: str | None = _opt(None, "`raysel simulate` output directory (results.parquet): adds the accuracy plot")
    max_tiles: int = _opt(
        500, "Most thumbnails in the contact sheet (the first picks by rank); 0: none, no image is read "
        "(a driver that cannot reach the images, or embeddings brought without images)"
    )
    thumbnail_size: int = _opt(96, "Thumbnail size in pixels (square, as the model sees the image)")
    overlays: int = _opt(4, "Knowledge-cluster overlays of the first picks (0: none; needs the store's model)")
    coverage_vectors: str = _opt("auto", "Coverage curve vectors: 'clusters', 'embedding' or 'auto' (clusters for geal)")
    coverage_distance: str | None = _opt(None, "Coverage curve distance: 'cosine' or 'euclidean' (default: the selection's)")
    coverage_sample: int = _opt(
        100_000, "Coverage curve: measure a seeded uniform sample of this many pool images when the pool is larger "
        "(its cost grows with pool x budget); 0: every image"
    )
    weights: str | None = _opt(None, "Overlays: checkpoint to load (default: what the store's metadata records)")
    random_init: bool = _opt(False, "Overlays: random weights seeded as in the store (tests); default: as the store records")
    duplicates: str | None = _opt(
        None, "`raysel dedup` output: adds how many were removed and a few pairs (default: the selection's --exclude)"
    )
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint)

    def validate(self) -> None:
        if not self.source:
            raise ValueError("report needs a STORE_OR_RUN (feature store or run directory)")
        if not self.out:
            raise ValueError("report needs --out FILE.html")
        if self.coverage_sample < 0:
            raise ValueError(f"--coverage-sample must be >= 0, got {self.coverage_sample}")
        if self.max_tiles < 0:
            raise ValueError(f"--max-tiles must be >= 0, got {self.max_tiles}")
        if self.thumbnail_size < 1:
            raise ValueError(f"--thumbnail-size must be >= 1, got {self.thumbnail_size}")
        if self.overlays < 0:
            raise ValueError(f"--overlays must be >= 0, got {self.overlays}")
        if self.coverage_vectors not in ("auto", "clusters", "embedding"):
            raise ValueError(f"--coverage-vectors must be 'auto', 'clusters' or 'embedding', got {self.coverage_vectors!r}")
        if self.coverage_distance not in (None, "cosine", "euclidean"):
            raise ValueError(f"--coverage-distance must be 'cosine' or 'euclidean', got {self.coverage_distance!r}")
        if self.weights is not None and self.random_init:
            raise ValueError("pass either --weights or --random-init, not both")


@dataclass
class SimulateConfig:
    """`raysel simulate STORE --labels L --test-store T --test-labels TL --out DIR`: simulated labeling rounds.

    Each (method, seed) is one curve: round r selects budgets[r] - budgets[r-1] images with the method
    (`run_selection`, the images labeled so far as --labeled), the oracle reveals their labels, and a
    linear probe on the frozen embeddings, trained on all labels so far, is scored on the test split.
    """

    store: str = _opt("", "Pool feature store (local or s3://): the images the methods select from", positional=True)
    labels: str = _opt("", "Pool labels (.parquet/.csv: 'uri', 'label'), one per pool image: the simulated oracle", required=True)
    test_store: str = _opt("", "Test split feature store (its 'embedding' is scored)", required=True)
    test_labels: str = _opt("", "Test split labels (.parquet/.csv: 'uri', 'label'), one per test image", required=True)
    out: str = _opt("", "Output directory: results.parquet/.csv, accuracy.png, config.yaml, runs/", required=True)
    methods: str = _opt("random,coreset", "Comma-separated selection methods (see `raysel methods`)")
    budgets: str = _opt("10,20,40", "Labeled images after each round, strictly increasing (round r labels budgets[r] - budgets[r-1] more)")
    seeds: str = _opt("0,1,2", "Comma-separated seeds, one curve per (method, seed)")
    select_options: str | None = _opt(
        None, "Extra `raysel select` options for every round, as YAML/JSON, e.g. '{distance: euclidean, acquisition: margin}'"
    )
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint)

    def method_list(self) -> list[str]:
        names = self.methods if isinstance(self.methods, (list, tuple)) else str(self.methods).split(",")
        return [str(name).strip() for name in names if str(name).strip()]

    def budget_list(self) -> list[int]:
        return _int_list(self.budgets, "--budgets")

    def seed_list(self) -> list[int]:
        return _int_list(self.seeds, "--seeds")

    def validate(self) -> None:
        for name in ("store", "labels", "test_store", "test_labels", "out"):
            if not getattr(self, name):
                flag = "STORE" if name == "store" else "--" + name.replace("_", "-")
                raise ValueError(f"simulate needs {flag}")
        methods = self.method_list()
        if not methods:
            raise ValueError("--methods needs at least one method (see `raysel methods`)")
        if len(set(methods)) != len(methods):
            raise ValueError(f"--methods lists a method twice: {methods}")
        budgets = self.budget_list()
        if not budgets or budgets[0] < 1 or any(b <= a for a, b in zip(budgets, budgets[1:])):
            raise ValueError(f"--budgets must be labeled counts >= 1, strictly increasing (e.g. 10,20,40); got {self.budgets!r}")
        seeds = self.seed_list()
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds must list distinct integers (e.g. 0,1,2); got {self.seeds!r}")


EXPORT_FORMATS = ("csv", "coco", "label-studio", "cvat", "fiftyone")


@dataclass
class ExportConfig:
    """`raysel export SELECTION --format FORMAT --out PATH`: the picks in a labeling tool's import format.

    Formats (docs/operations.md, "From bucket to labeling tool"): csv (uri, rank, score), coco (an
    `images` list with width/height, empty annotations), label-studio (tasks JSON), cvat (a dataset
    manifest, manifest.jsonl), fiftyone (a dataset directory `fiftyone` loads). `<out>.raysel.json`
    records this config and the selection's own config.
    """

    selection: str = _opt("", "Selection manifest (.parquet/.csv with 'uri'; rank and score when present)", positional=True)
    format: str = _opt("", "Output format: " + ", ".join(EXPORT_FORMATS), required=True)
    out: str = _opt("", "File (or fiftyone: directory) to write, local or s3://", required=True)
    store: str | None = _opt(None, "Feature store (fiftyone embeddings; default: the store the selection records)")
    presign: int | None = _opt(None, "label-studio: presigned HTTPS URLs valid this many seconds instead of s3:// URIs")
    local_files_root: str | None = _opt(
        None, "label-studio: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; local images become /data/local-files/?d=PATH"
    )
    image_root: str | None = _opt(
        None, "coco / cvat: names are paths relative to this folder or s3:// prefix (default: the images' common folder)"
    )
    embeddings: bool = _opt(False, "fiftyone: add each image's store embedding (field 'embedding')")
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint)

    def validate(self) -> None:
        if not self.selection:
            raise ValueError("export needs a SELECTION (.parquet/.csv with a 'uri' column)")
        if self.format not in EXPORT_FORMATS:
            raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {self.format!r}")
        if not self.out:
            raise ValueError("export needs --out PATH")
        if self.presign is not None and not 1 <= self.presign <= 604_800:
            raise ValueError(f"--presign must be 1 .. 604800 seconds (S3's limit is 7 days), got {self.presign}")
        if self.format != "label-studio" and (self.presign is not None or self.local_files_root):
            raise ValueError("--presign and --local-files-root apply to --format label-studio only")
        if self.embeddings and self.format != "fiftyone":
            raise ValueError("--embeddings applies to --format fiftyone only")


@dataclass
class ImportLabelsConfig:
    """`raysel import-labels EXPORT --store STORE --out LABELS.csv`: a labeling tool's export -> uri,label.

    Reads a Label Studio JSON export (tasks with annotations, choices per image) or a COCO file
    (images + annotations + categories, one category per image); writes the labels file that
    `raysel select --labeled` reads. Every image must be in the store.
    """

    source: str = _opt("", "Label Studio JSON export or COCO .json (local or s3://)", positional=True)
    store: str = _opt("", "Feature store the images must belong to", required=True)
    out: str = _opt("", "Labels file to write (.csv or .parquet: uri, label)", required=True)
    format: str = _opt("auto", "'auto', 'label-studio' or 'coco'")
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint)

    def validate(self) -> None:
        if not self.source:
            raise ValueError("import-labels needs an EXPORT file (Label Studio JSON or COCO)")
        if self.format not in ("auto", "label-studio", "coco"):
            raise ValueError(f"--format must be 'auto', 'label-studio' or 'coco', got {self.format!r}")
        if not self.out.lower().endswith((".csv", ".parquet")):
            raise ValueError(f"--out must be a .csv or .parquet file, got {self.out!r}")


@dataclass
class DedupConfig:
    """`raysel dedup STORE --threshold COS --out DUPLICATES.parquet`: near-duplicate removal (SemDeDup).

    Spherical K-Means over the L2-normalized embeddings on shard actors, then, inside each cluster
    on the actor holding it, every pair with cosine >= threshold is linked; each connected group
    keeps the image closest to its cluster centroid (ties: the smallest uri) and the others are
    written with the kept image they duplicate (docs/operations.md, "Near-duplicates").
    """

    store: str = _opt("", "Feature store directory (local or s3://) with an 'embedding' column", positional=True)
    out: str = _opt("", "Duplicates file to write (.parquet: uri, duplicate_of, similarity, cluster)", required=True)
    threshold: float = _opt(0.0, "Cosine similarity in (0, 1] at and above which two images are duplicates", required=True)
    clusters: int | None = _opt(None, "K-Means clusters (default: ceil(sqrt(images)))")
    kmeans_iters: int = _opt(10, "Lloyd steps of the spherical K-Means")
    shards: int = _opt(1, "Shard actors holding the embeddings")
    seed: int = _opt(0, "Seed of the K-Means initial centers")
    s3_endpoint: str | None = _opt(None, "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL or AWS)")

    def storage(self) -> StorageOptions:
        return StorageOptions(s3_endpoint=self.s3_endpoint)

    def validate(self) -> None:
        if not self.store:
            raise ValueError("dedup needs a STORE (feature store directory)")
        if not self.out:
            raise ValueError("dedup needs --out DUPLICATES.parquet")
        if not isinstance(self.threshold, (int, float)) or not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"--threshold must be a cosine similarity in (0, 1], got {self.threshold}")
        if self.clusters is not None and self.clusters < 1:
            raise ValueError(f"--clusters must be >= 1, got {self.clusters}")
        for name in ("kmeans_iters", "shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def _int_list(text: Any, flag: str) -> list[int]:
    """'10,20,40' (or a YAML list) -> [10, 20, 40]; ValueError naming the flag otherwise."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        return [int(str(part).strip()) for part in parts if str(part).strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a dict fit for a file: credentials in URLs (`user:pass@`) redacted (raysel/redact.py)."""
    from raysel.redact import redact

    return redact(asdict(config))


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build `cls` from a dict (e.g. parsed YAML), rejecting unknown keys by name."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(known)}")
    return cls(**values)
