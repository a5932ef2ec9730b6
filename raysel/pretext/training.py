"""`raysel pretext train`: PT4AL's rotation model, data-parallel on Ray Train.

The pool is read through the same Ray Data path as `featurize` (`list_images`,
then `DecodeBatch` tasks) and handed to a `TorchTrainer` as
`datasets={"train": ...}`; each worker reads its share with
`ray.train.get_dataset_shard("train")`. Workers run DDP (NCCL on GPUs, gloo on
CPUs). `--batch-size` is the global batch: each of W workers takes
batch_size // W images per step, each in its 4 rotations.

Resume: after every epoch rank 0 writes `CHECKPOINTS/epoch-NNNNNN.pt` (model,
optimizer, loss history). A worker starts from the newest checkpoint there, so
rerunning a killed run, or Ray Train's own retry after a worker failure
(`--max-failures`), continues from the last finished epoch. The checkpoint
directory remembers the settings it was trained with; another run asking for
other settings fails instead of mixing them.

Recipe: PT4AL's SGD (lr 0.1, momentum 0.9, weight decay 5e-4) is made for ResNet-18; a ViT under
it ends every epoch at ln 4 = 1.3863, chance: it outputs a constant. `--optimizer auto` (the
default) keeps SGD for CNNs and gives transformers (models with a `patch_embed`) AdamW (lr 1e-3,
weight decay 0.05) with a linear warmup over the first 10% of the steps, a per-step cosine decay
to 0 and the gradient norm clipped to 1, the usual ViT recipe (docs/pt4al.md has the measurement).
A final loss within 2% of ln 4 (or above it) is reported as a warning in the summary and saved in
the model file's metadata (`at_chance`, `warning`): such a model ranks nothing and is a useless
`featurize --weights` backbone.

Determinism: the network init, the data order (a seeded permutation of the
pool, order-preserving Ray Data) and each epoch's local shuffle are seeded.
With one worker on the CPU a run is reproducible; with several workers Ray
Data may hand rows to other workers from one run to the next.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raysel import schema, storage
from raysel.config import PretextConfig, RayConfig, to_dict
from raysel.images import list_images
from raysel.pretext import checkpoints
from raysel.pretext.data import IMAGE, training_dataset
from raysel.pretext.rotation import PretextError, default_image_size

log = logging.getLogger(__name__)

# Tests only: seconds each worker sleeps after an epoch's checkpoint, so a test can kill a run between
# epochs. Read by the driver (train_pretext) and handed to the workers.
PAUSE_AFTER_EPOCH_ENV = "RAYSEL_PRETEXT_TEST_PAUSE_AFTER_EPOCH_S"


@dataclass
class PretextSummary:
    out: str
    images: int  # images listed in the source (undecodable ones are skipped in training)
    epochs: int
    resumed_from_epoch: int  # 0 when the run started from scratch
    history: list[float] = field(default_factory=list)  # mean training loss per epoch
    workers: int = 0
    device: str = "cpu"
    seconds: float = 0.0  # wall time of this call
    train_seconds: float = 0.0  # time inside the epochs of this call (workers' view)
    images_per_second: float = 0.0  # images (each in its 4 rotations) trained per second of train_seconds
    skipped: bool = False  # the model already existed with the same settings

    @property
    def final_loss(self) -> float | None:
        return self.history[-1] if self.history else None

    @property
    def warning(self) -> str | None:
        return chance_warning(self.final_loss)

    def lines(self) -> str:
        warning = f"\n  WARNING: {self.warning}" if self.warning else ""
        if self.skipped:
            return f"pretext model: {self.out} (already trained with these settings; nothing to do)" + warning
        resumed = f", resumed after epoch {self.resumed_from_epoch}" if self.resumed_from_epoch else ""
        losses = " ".join(f"{loss:.4f}" for loss in self.history)
        return (
            f"pretext model: {self.out}\n"
            f"  images: {self.images}  epochs: {self.epochs}{resumed}  workers: {self.workers} ({self.device})\n"
            f"  loss per epoch: {losses}\n"
            f"  this run: {self.seconds:.1f} s ({self.images_per_second:.1f} images/s while training)"
        ) + warning


CHANCE_LOSS = math.log(4)  # cross-entropy of a constant guess over the 4 rotations
CHANCE_MARGIN = 0.02  # a final loss within 2% of it (or above) has learnt nothing


def chance_warning(final_loss: float | None) -> str | None:
    """The warning for a model that ended at chance level, else None."""
    if final_loss is None or final_loss < (1 - CHANCE_MARGIN) * CHANCE_LOSS:
        return None
    return (
        f"the final training loss {final_loss:.4f} is at chance level (ln 4 = {CHANCE_LOSS:.4f}): the model predicts "
        "no rotation, its pretext losses rank nothing and its backbone is no use for `featurize --weights`. "
        "Train longer, or with another --optimizer / learning rate (ViTs: --optimizer adamw)"
    )


def is_transformer(model_name: str) -> bool:
    """Whether a timm model is a patch-embedding transformer (ViT, DeiT, Swin, ...), judged on the meta device."""
    import timm
    import torch

    with torch.device("meta"):
        return hasattr(timm.create_model(model_name, pretrained=False), "patch_embed")


def optimizer_name(config: PretextConfig) -> str:
    """'sgd' or 'adamw': --optimizer, with 'auto' resolved by the model's family."""
    if config.optimizer != "auto":
        return config.optimizer
    return "adamw" if is_transformer(config.model) else "sgd"


def adamw_step_lr(config: PretextConfig, step: int, total_steps: int) -> float:
    """AdamW's learning rate at 0-based `step`: linear warmup over `warmup` x total, then cosine to 0."""
    total_steps = max(1, total_steps)
    warmup_steps = int(round(config.warmup * total_steps))
    if step < warmup_steps:
        return config.adamw_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return config.adamw_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def identity_of(config: PretextConfig, image_size: int) -> dict[str, Any]:
    """The settings that define what a checkpoint or model means: a resumed run must match them."""
    return {
        "source": config.source,
        "model": config.model,
        "pretrained": config.pretrained,
        "image_size": image_size,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "shuffle_buffer": config.shuffle_buffer,
        "seed": config.seed,
        # only for AdamW, so the identity of an SGD run is what it always was
        **({"optimizer": "adamw", "adamw_lr": config.adamw_lr, "adamw_weight_decay": config.adamw_weight_decay,
            "warmup": config.warmup, "grad_clip": config.grad_clip} if optimizer_name(config) == "adamw" else {}),
        # the released-code options join only when set, so older checkpoints keep matching their defaults
        **{name: getattr(config, name) for name, default in FIDELITY_DEFAULTS.items() if getattr(config, name) != default},
    }


FIDELITY_DEFAULTS = {"shuffle": "buffer", "rotation_forwards": "joint", "keep": "last"}


def learning_rate(config: PretextConfig, epoch: int) -> float:
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return config.lr


def train_pretext(config: PretextConfig, ray_config: RayConfig | None = None) -> PretextSummary:
    """Train (or resume, or skip when done) the rotation model; writes `config.out`.

    Raises:
        PretextError: unknown model, settings that differ from the existing
            model or checkpoints, no usable image.
        StorageError / ManifestError: a source that cannot be listed.
        ResourcePlanError: the training workers and their decode task cannot fit the cluster.
        StallError: no training step finished for `stall_timeout` seconds (the run is aborted).
    """
    import ray
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysel.runtime import cluster_gpus, ensure_ray

    config.validate()
    # Workers run in another directory: relative local paths must mean what they mean here.
    config = dataclasses.replace(
        config,
        source=checkpoints.absolute_uri(config.source),
        out=checkpoints.absolute_uri(config.out),
        checkpoint_dir=checkpoints.absolute_uri(config.checkpoints()),
    )
    started = time.time()
    options = config.storage()
    uris: list[str] | None = None
    if config.image_size:
        image_size = config.image_size
    else:
        # No upsampling of small images: their native size when the first ones are all smaller than the model's.
        uris = list_images(config.source, options)
        image_size = native_image_size(uris, options, default_image_size_checked(config.model))
    identity = identity_of(config, image_size)

    if storage.exists(config.out, options):
        try:
            meta = checkpoints.load(config.out, options).get("pretext") or {}
        except PretextError as exc:
            raise PretextError(f"--out {config.out} exists and is not a raysel pretext model; use a new --out ({exc})") from exc
        if meta.get("identity") != identity:
            raise PretextError(f"{config.out} exists and was trained with other settings ({_differences(meta.get('identity'), identity)}); use a new --out")
        return PretextSummary(out=config.out, images=0, epochs=config.epochs, resumed_from_epoch=config.epochs,
                              history=list(meta.get("history", [])), skipped=True, seconds=time.time() - started)

    checkpoint_dir = config.checkpoints()
    identity_uri = storage.join(checkpoint_dir, checkpoints.IDENTITY_FILE)
    if storage.exists(identity_uri, options):
        previous = storage.read_json(identity_uri, options)
        if previous != identity:
            raise PretextError(
                f"{checkpoint_dir} holds checkpoints of a run with other settings "
                f"({_differences(previous, identity)}); use a new --out or --checkpoint-dir"
            )
    else:
        storage.write_json_atomic(identity_uri, identity, options)
    storage.write_json_atomic(storage.join(checkpoint_dir, schema.RESOLVED_CONFIG_FILE), to_dict(config), options)
    found = checkpoints.checkpoint_uris(checkpoint_dir, options)
    resumed_from = checkpoints.epochs_of(found[-1]) if found else 0
    if resumed_from:
        log.info("resuming from %s (%d of %d epochs done)", found[-1], resumed_from, config.epochs)

    ensure_ray(ray_config)
    uris = uris if uris is not None else list_images(config.source, options)
    order = np.random.default_rng(config.seed).permutation(len(uris))
    dataset = training_dataset(
        [uris[i] for i in order], image_size, options, config.max_image_pixels, config.decode_threads
    )

    gpus = cluster_gpus()
    use_gpu = gpus > 0 and not config.cpu
    workers = config.num_workers or (gpus if use_gpu else 1)
    from raysel.pretext.data import DECODE_CPUS
    from raysel.runtime import check_training_resources, cluster_total_cpus

    check_training_resources(cluster_total_cpus(), workers, config.cpus_per_worker, DECODE_CPUS)  # fail now, not hang
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True  # the same rows in the same order every epoch and every rerun
    from raysel.pretext.watchdog import ProgressBeacon, StallWatch, watched_trainer_class

    beacon = ProgressBeacon.remote()
    watch = StallWatch(beacon, config.stall_timeout)
    trainer = watched_trainer_class(TorchTrainer, watch)(
        train_loop_per_worker,
        train_loop_config={
            "config": config,
            "image_size": image_size,
            "identity": identity,
            "pause_after_epoch_s": float(os.environ.get(PAUSE_AFTER_EPOCH_ENV, "0") or 0),
            "optimizer": optimizer_name(config),
            "steps_per_epoch": max(1, math.ceil(len(uris) / config.batch_size)),
            "beacon": beacon,
        },
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"raysel-pretext-{uuid.uuid4().hex[:8]}",
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(execution_options=ingest),
    )
    try:
        with watch:
            _fit(trainer)
    except Exception as exc:
        if watch.fired is not None:
            from raysel.runtime import StallError

            raise StallError(watch.message()) from exc
        raise
    finally:
        ray.kill(beacon)
    meta = checkpoints.load(config.out, options)["pretext"]
    # Ray Train keeps only metrics reported with a checkpoint; rank 0 leaves this run's numbers in the model file.
    this_run = meta.get("last_run", {})
    train_seconds = float(this_run.get("train_seconds", 0.0))
    summary = PretextSummary(
        out=config.out,
        images=len(uris),
        epochs=config.epochs,
        resumed_from_epoch=resumed_from,
        history=list(meta["history"]),
        workers=workers,
        device="gpu" if use_gpu else "cpu",
        seconds=time.time() - started,
        train_seconds=train_seconds,
        images_per_second=float(this_run.get("images", 0)) / train_seconds if train_seconds > 0 else 0.0,
    )
    if summary.warning:
        log.warning("%s: %s", config.out, summary.warning)
    return summary


NATIVE_SIZE_PEEK = 16  # images whose size decides --image-size when it is not given


def native_image_size(uris: list[str], options, model_size: int, peek: int = NATIVE_SIZE_PEEK) -> int:
    """The pool's own size when its first `peek` images are all smaller than `model_size`, else `model_size`.

    CIFAR-like pools (32 x 32 files) then train and score at 32 px, as PT4AL did, instead of being
    upsampled to the model's 224; pools of larger images keep the model's size. The size is the
    largest side among the peeked images (all are resized to it, square). Unreadable files are skipped.
    """
    import io

    from PIL import Image

    sides = []
    for uri in uris[:peek]:
        try:
            with Image.open(io.BytesIO(storage.read_bytes(uri, options))) as image:
                sides.append(max(image.size))
        except Exception:  # decode errors are reported by the training run itself
            continue
    if sides and max(sides) < model_size:
        log.info("training at the images' native %d px (the model's default is %d px)", max(sides), model_size)
        return max(8, max(sides))
    return model_size


def default_image_size_checked(model_name: str) -> int:
    import timm

    if not timm.is_model(model_name):
        raise PretextError(f"unknown timm model {model_name!r}; see timm.list_models()")
    return default_image_size(model_name)


def _differences(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    old = old or {}
    return ", ".join(f"{k}: has {old.get(k)!r}, run asks {v!r}" for k, v in new.items() if old.get(k) != v) or "unknown"


def _fit(trainer):
    """trainer.fit(), with a PretextError raised by a worker surfacing as itself."""
    try:
        return trainer.fit()
    except Exception as exc:
        cause: BaseException | None = exc
        seen = 0
        while cause is not None and seen < 10:
            for nested in _nested_errors(cause):
                if isinstance(nested, PretextError):
                    raise PretextError(str(nested)) from exc
            cause, seen = cause.__cause__ or cause.__context__, seen + 1
        raise


def _nested_errors(error: BaseException) -> list[BaseException]:
    found = [error]
    failures = getattr(error, "worker_failures", None)  # Ray Train's WorkerGroupError: {rank: exception}
    if isinstance(failures, dict):
        for failure in failures.values():
            found.append(failure)
            found.extend(e for e in (failure.__cause__, getattr(failure, "cause", None)) if isinstance(e, BaseException))
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        found.append(cause)
    return found


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: DDP training of the RotationNet, one checkpoint per epoch (rank 0)."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from raysel.embed.knowledge import normalize_images
    from raysel.pretext.rotation import build_rotation_net, rotated_views

    config: PretextConfig = loop_config["config"]
    identity: dict[str, Any] = loop_config["identity"]
    options = config.storage()
    checkpoint_dir = config.checkpoints()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(config.cpus_per_worker)
    else:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    net, spec = build_rotation_net(config.model, loop_config["image_size"], config.pretrained, config.seed)
    start_epoch, history, optimizer_state = 0, [], None
    found = checkpoints.checkpoint_uris(checkpoint_dir, options)
    if found:
        state = checkpoints.load(found[-1], options)
        if state.get("identity") != identity:
            raise PretextError(f"{found[-1]} was written by a run with other settings; use a new --checkpoint-dir")
        net.backbone.load_state_dict(state["backbone"])
        net.head.load_state_dict(state["rotation_head"])
        start_epoch, history, optimizer_state = int(state["epoch"]), list(state["history"]), state["optimizer"]

    model = ray.train.torch.prepare_model(net)  # moves to the device; DDP when there are several workers
    adamw = loop_config.get("optimizer") == "adamw"
    if adamw:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.adamw_lr, weight_decay=config.adamw_weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    steps_per_epoch = int(loop_config.get("steps_per_epoch", 1))
    total_steps = steps_per_epoch * config.epochs
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    shard = ray.train.get_dataset_shard("train")
    per_worker = max(1, config.batch_size // world)
    pause = loop_config.get("pause_after_epoch_s", 0.0)
    images_this_run, train_seconds = 0, 0.0
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    from raysel.pretext.watchdog import StepReporter

    reporter = StepReporter(loop_config.get("beacon"), rank)
    best = state.get("best") if found else None  # {"accuracy", "epoch", "backbone", "rotation_head"} (--keep best)
    in_memory = _decoded_share(shard, per_worker, reporter) if config.shuffle == "full" else None

    def epoch_images(epoch: int, shuffled: bool = True):
        """[b, S, S, 3] uint8 batches of this worker's share for one epoch."""
        if in_memory is not None:
            order = np.arange(len(in_memory))
            if shuffled:
                order = np.random.default_rng([config.seed, epoch, rank]).permutation(len(in_memory))
            for start in range(0, len(order), per_worker):
                yield torch.from_numpy(in_memory[order[start : start + per_worker]])
            return
        buffer = config.shuffle_buffer if shuffled else 0
        for batch in shard.iter_torch_batches(
            batch_size=per_worker,
            local_shuffle_buffer_size=buffer or None,
            local_shuffle_seed=config.seed * 100_003 + epoch * 101 + rank if buffer else None,
        ):
            yield batch[IMAGE]

    for epoch in range(start_epoch, config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch)
        model.train()
        epoch_started = time.perf_counter()
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, images
        for step, batch_images in enumerate(epoch_images(epoch)):
            if adamw:  # per step: the whole run's warmup and cosine decay
                step_lr = adamw_step_lr(config, epoch * steps_per_epoch + min(step, steps_per_epoch - 1), total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
            images = batch_images.to(device)
            views, labels = rotated_views(normalize_images(images, spec.mean, spec.std))
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                if config.rotation_forwards == "separate":
                    loss = _separate_forwards_loss(model, views, labels, len(images), [config.seed, epoch, rank, step])
                else:
                    loss = F.cross_entropy(model(views).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if adamw and config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            totals[0] += loss.detach().double() * len(images)
            totals[1] += len(images)
            reporter.step(epoch, step)
        if world > 1:
            dist.all_reduce(totals)
        if totals[1].item() == 0:
            raise PretextError(f"no usable image in {config.source}: every one failed to decode (see the worker logs)")
        train_seconds += time.perf_counter() - epoch_started
        images_this_run += int(totals[1].item())
        history.append(float(totals[0].item() / totals[1].item()))
        if config.keep == "best":
            reporter.progress(f"epoch {epoch + 1}: rotation accuracy pass (--keep best) on rank {rank}", force=True)
            accuracy = _rotation_accuracy(model, epoch_images(epoch, shuffled=False), spec, device, world)
            if best is None or accuracy > best["accuracy"]:  # the released rotation.py: `if acc > best_acc`
                best = {
                    "accuracy": accuracy,
                    "epoch": epoch + 1,
                    "backbone": {k: v.detach().cpu().clone() for k, v in net.backbone.state_dict().items()},
                    "rotation_head": {k: v.detach().cpu().clone() for k, v in net.head.state_dict().items()},
                }
        if rank == 0:
            checkpoints.save(
                {
                    "format": checkpoints.CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "backbone": net.backbone.state_dict(),
                    "rotation_head": net.head.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    "identity": identity,
                    **({"best": best} if best is not None else {}),
                },
                storage.join(checkpoint_dir, checkpoints.checkpoint_name(epoch + 1)),
                options,
            )
            checkpoints.prune_checkpoints(checkpoint_dir, config.keep_checkpoints, options)
        ray.train.report(
            {"epoch": epoch + 1, "loss": history[-1], "images_this_run": images_this_run, "train_seconds": train_seconds}
        )
        reporter.step(epoch, steps_per_epoch - 1, force=True)  # the epoch's checkpoint is progress too
        if pause:
            time.sleep(pause)

    if rank == 0:
        meta = {
            "identity": identity,
            "history": history,
            "epochs": config.epochs,
            "pretrained": config.pretrained,
            "last_run": {"images": images_this_run, "train_seconds": train_seconds, "workers": world},
            "optimizer": "adamw" if adamw else "sgd",
            "at_chance": chance_warning(history[-1] if history else None) is not None,
            "warning": chance_warning(history[-1] if history else None),
        }
        net = net.cpu()
        if config.keep == "best" and best is not None:
            net.backbone.load_state_dict(best["backbone"])
            net.head.load_state_dict(best["rotation_head"])
            meta.update(kept="best", best_epoch=best["epoch"], best_rotation_accuracy=best["accuracy"])
        checkpoints.save(checkpoints.export_model(net, config.model, spec, meta), config.out, options)


def _decoded_share(shard, batch_size: int, reporter=None) -> np.ndarray:
    """This worker's whole share, decoded, in the order Ray Data hands it: [n, S, S, 3] uint8 (--shuffle full)."""
    parts = []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        parts.append(np.asarray(batch[IMAGE]))
        if reporter is not None:
            reporter.progress(f"decoding the share of rank {reporter.rank} for --shuffle full ({len(parts)} batches)")
    return np.concatenate(parts) if parts else np.zeros((0, 1, 1, 3), np.uint8)


def _separate_forwards_loss(model, views, labels, batch: int, seed: list[int]):
    """The released rotation.py: 4 forwards of `batch` views each, every image's rotations in a random order.

    Forward j sees one view per image (rotation perm[i, j] of image i); the loss is the mean of
    the 4 cross-entropies, as `(loss1 + loss2 + loss3 + loss4) / 4`.
    """
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**62)))
    order = torch.argsort(torch.rand(batch, 4, generator=generator), dim=1).to(views.device)  # [batch, 4]
    rows = torch.arange(batch, device=views.device)
    total = 0.0
    for j in range(4):
        picked = order[:, j] * batch + rows  # rotated_views is view-major: rotation k of image i at k * batch + i
        total = total + F.cross_entropy(model(views[picked]).float(), labels[picked])
    return total / 4


def _rotation_accuracy(model, batches, spec, device, world: int) -> float:
    """Share of the 4 rotated views of every image whose rotation the model gets right, eval mode (the pool itself)."""
    import torch
    import torch.distributed as dist

    from raysel.embed.knowledge import normalize_images
    from raysel.pretext.rotation import rotated_views

    model.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # correct, views
    with torch.no_grad():
        for images in batches:
            views, labels = rotated_views(normalize_images(images.to(device), spec.mean, spec.std))
            counts[0] += (model(views).argmax(1) == labels).sum()
            counts[1] += len(labels)
    if world > 1:
        dist.all_reduce(counts)
    model.train()
    return float(counts[0] / counts[1]) if counts[1] > 0 else 0.0
