"""StudentTrainer: the supervised side of the environment, training one Student batch by batch with given weights.

It owns the Student, its optimiser, the data (loading, epoch order, augmentation), the training forward, the weighted
update and evaluation, and its state for checkpoints; it knows nothing of tutors, states or rewards. The environment
(:mod:`tsrl_env.env`) drives it one batch per step, the rewards read the batches it produces, and the bench scripts
build their baselines on it. In a process group each process forwards its rows (its shard) of every batch; see
docs/design.md, "Distributed training".
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, Subset
from torch.utils.data import Dataset as TorchDataset

from tsrl_env.augment import DEEPFAKEBENCH, SEED_BOUND, SeededAugmentation, augmented_batch, deepfakebench_transform
from tsrl_env.config import EnvConfig, worker_count
from tsrl_env.data import Dataset, FrameStore, Split, make_dataset
from tsrl_env.distributed import ProcessGroupView
from tsrl_env.metrics import detection_metrics, per_family_auc
from tsrl_env.student import FAKE_CLASS, Student, resolve_device

EVAL_BATCH_SIZE = 256

logger = logging.getLogger(__name__)


@dataclass
class TrainingBatch:
    """One training batch after the Student's training forward, waiting for its weighted update.

    ``epoch`` and ``step`` place it in the episode; ``ids`` are the whole batch's sample ids (the same on every
    process), ``row_ids`` those of this process's rows. ``images`` (normalised), ``labels``, ``losses`` (per-sample
    cross-entropy, still attached to the autograd graph), ``p_true`` (probability of the label), ``correct``,
    ``probabilities`` and ``features`` (detached head inputs) cover this process's rows; the ``batch_`` fields are the
    whole batch's, gathered from every process (all of it when nothing is distributed).
    """

    epoch: int
    step: int
    ids: torch.Tensor
    row_ids: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    losses: torch.Tensor
    p_true: torch.Tensor
    correct: torch.Tensor
    probabilities: torch.Tensor
    features: torch.Tensor
    batch_losses: torch.Tensor
    batch_p_true: torch.Tensor
    batch_correct: torch.Tensor


class StudentTrainer:
    """Trains one Student on the env's data with per-sample loss weights (the settings of :class:`EnvConfig`).

    ``dataset`` reuses data loaded already (its splits are moved to the trainer's device and image size); by default
    the trainer loads ``config.dataset``. With ``train_on_trusted`` or ``threshold_share`` the trainer's ``dataset`` is
    that data with trusted images joined to its training split (see :func:`trusted_in_training`); ``threshold_ids``
    holds the training-split positions of the threshold samples (empty without), and the first ``own_training_size``
    samples are those of the data's own training split. ``group`` is the process group
    training the Student together (:mod:`tsrl_env.distributed`). Call :meth:`start` for a new Student (or
    :meth:`load_state_dict`), then per epoch :meth:`start_epoch` and ``steps_per_epoch`` times
    :meth:`forward_next_batch` and :meth:`update`.
    """

    def __init__(self, config: EnvConfig, group: ProcessGroupView | None = None, dataset: Dataset | None = None) -> None:
        self.config = config
        self.group = ProcessGroupView() if group is None else group
        # This process's rows of every training batch; refused before any data is loaded if the shards would differ.
        self.rows = self.group.equal_shard(config.batch_size, "batch_size")
        self.device = resolve_device(config.device)
        self.precision = resolved_precision(config.precision, self.device)
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none.
        self._scaler = torch.amp.GradScaler(self.device.type) if self.precision == torch.float16 else None
        loaded = make_dataset(config.dataset, **config.dataset_options) if dataset is None else dataset
        self.dataset, self.threshold_ids = trusted_in_training(loaded, config)
        # The training samples of the data itself come first; trusted and threshold samples joined after them.
        self.own_training_size = len(loaded.splits["train"])
        if self.dataset.bad_frames:
            skipped = self.dataset.bad_frames
            logger.warning("training without %d unreadable frame(s), per split: %s", sum(skipped.values()), skipped)
        self.splits = {name: _to_device(split, self.device, config.image_size) for name, split in self.dataset.splits.items()}
        self.batch_size = config.batch_size
        train_size = len(self.splits["train"])
        if train_size < self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {train_size} training samples of {config.dataset!r}")
        # The ragged last batch is dropped: every step has the same shape.
        self.steps_per_epoch = train_size // self.batch_size
        self.student = self.build_student(config.seed)
        self.network: nn.Module | None = None  # what the training forward goes through (DDP in a group), made by start()
        self.optimizer: torch.optim.Optimizer | None = None
        self.data_generator = torch.Generator()
        self.epoch = 0
        self.epochs_begun = 0  # every epoch of this Student, warm-up included: the learning-rate schedule's clock
        self.step_in_epoch = 0
        self._order = torch.arange(train_size)
        self._epoch_batches = _EpochBatches(self.batch_size, self.steps_per_epoch, self.rows)
        self._augmentation = deepfakebench_transform() if config.augment == DEEPFAKEBENCH else None
        self._sample_seeds: torch.Tensor | None = None  # this epoch's augmentation seed of each training sample
        self._train_loader: DataLoader | None = None  # made at the first epoch of a dataset whose frames are on disk
        self._train_batches: Iterator[torch.Tensor] | None = None
        self._unchecked_loss: tuple[torch.Tensor, str, int, int] | None = None  # (loss, phase, epoch, step)

    def build_student(self, seed: int) -> Student:
        """A new Student of the configured backbone, initialised from ``seed`` (the global RNG untouched), on the device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = Student.from_timm(self.config.backbone, self.config.pretrained_weights)
        if self.config.frozen_backbone:
            student.requires_grad_(False)
            student.classifier.requires_grad_(True)
        return student.to(self.device, memory_format=torch.channels_last)

    def build_optimizer(self, student: Student) -> torch.optim.Optimizer:
        """The optimiser ``student`` trains with (Adam at the configured ``lr`` and ``weight_decay``), over its classifier
        alone with ``frozen_backbone``."""
        trained = student.classifier.parameters() if self.config.frozen_backbone else student.parameters()
        return torch.optim.Adam(trained, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def start(self, student_seed: int, data_seed: int) -> None:
        """A new Student and optimiser from ``student_seed``; the data order and augmentation drawn from ``data_seed``."""
        self.student = self.build_student(student_seed)
        self.network = self.group.wrap(self.student)
        self.optimizer = self.build_optimizer(self.student)
        self.data_generator.manual_seed(data_seed)
        self.epochs_begun = 0
        self._unchecked_loss = None

    def start_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s order of the training samples (and start decoding its first frames, if on disk)."""
        self.epoch = epoch
        if self.config.lr_schedule is not None:
            self._set_lr(scheduled_lr(self.config.lr, self.config.lr_schedule, self.epochs_begun))
        self.epochs_begun += 1
        self._order = torch.randperm(len(self.splits["train"]), generator=self.data_generator)
        if self._augmentation is not None:
            self._sample_seeds = torch.randint(SEED_BOUND, (len(self._order),), generator=self.data_generator)
            self._epoch_batches.seeds = self._sample_seeds
        self.step_in_epoch = 0
        train = self.splits["train"].images
        if isinstance(train, FrameStore):
            if self._train_loader is None:
                frames = train if self._augmentation is None else SeededAugmentation(train, self._augmentation)
                self._train_loader = self._frame_loader(frames, batch_sampler=self._epoch_batches, persistent=True)
            # Workers start decoding this epoch's first batches at once, ahead of the Student.
            self._epoch_batches.order = self._order
            self._train_batches = iter(self._train_loader)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The epoch's next batch: its sample ids, this process's ids, images (augmented, normalised) and labels."""
        start = self.step_in_epoch * self.batch_size
        host_ids = self._order[start : start + self.batch_size]  # the whole batch: the same on every rank
        # From pageable memory to the device: safe, no wait for the device (here and for the flips below).
        ids = host_ids.to(self.device, non_blocking=True)
        self.step_in_epoch += 1
        row_ids = ids[self.rows]
        train = self.splits["train"]
        if train.in_memory:
            images = train.images[row_ids]
            if self._augmentation is not None:
                seeds = self._sample_seeds[host_ids[self.rows]]
                images = augmented_batch(images.cpu(), seeds, self._augmentation).to(self.device, non_blocking=True)
        else:
            assert self._train_batches is not None, "call start_epoch() first"
            images = next(self._train_batches).to(self.device, non_blocking=True)
        if self.config.augment:
            # Drawn for the whole batch on every rank, so that the generator stays where one process would have it.
            flip = (torch.rand(len(ids), generator=self.data_generator) < 0.5)[self.rows].to(self.device, non_blocking=True)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return ids, row_ids, normalise_images(images), train.labels[row_ids]

    def forward_next_batch(self) -> TrainingBatch:
        """The training forward of the epoch's next batch; the batch keeps the graph for :meth:`update`."""
        step = self.step_in_epoch
        ids, row_ids, images, labels = self.next_batch()
        assert self.network is not None, "call start() or load_state_dict() first"
        self.network.train(not self.config.frozen_backbone)  # a frozen backbone keeps its BatchNorm statistics
        logits, features = self._forward(self.network, images)
        losses = F.cross_entropy(logits, labels, reduction="none")
        probabilities = logits.detach().softmax(dim=1)
        correct = probabilities.argmax(dim=1) == labels
        p_true = probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
        batch_losses, batch_correct, batch_p_true = self.group.all_gather_rows(
            losses.detach(), correct, p_true, total=self.batch_size, kind="states"
        )
        self.check_loss()  # the previous update's, long computed: this forward is queued behind it already
        return TrainingBatch(
            epoch=self.epoch,
            step=step,
            ids=ids,
            row_ids=row_ids,
            images=images,
            labels=labels,
            losses=losses,
            p_true=p_true,
            correct=correct,
            probabilities=probabilities,
            features=features.detach(),
            batch_losses=batch_losses,
            batch_p_true=batch_p_true,
            batch_correct=batch_correct,
        )

    def update(self, batch: TrainingBatch, weights: torch.Tensor, phase: str) -> torch.Tensor:
        """The weighted backward and optimiser step of ``batch``; returns the whole batch's detached loss, on the device.

        ``weights`` are the whole batch's. The backward is that of the mean over this process's rows: DDP averages the
        gradients over the ranks' equal shards, which makes them those of the whole batch's mean. The loss returned is
        the ranks' average, the same on every rank, so all of them stop together on a loss that is not finite
        (``phase`` names the epoch kind, "warm-up" or "tutored", in that error). That check reads the loss on the host
        once the next batch's forward is queued (or at the next evaluation or state copy, whichever comes first), when
        the device has long computed it: no update waits for the device, and no state, checkpoint or metric comes from a
        Student past a bad loss.
        """
        assert self.optimizer is not None, "call start() or load_state_dict() first"
        row_loss = (weights[self.rows] * batch.losses).mean()
        loss = self.group.average(row_loss.detach(), kind="loss")
        self._unchecked_loss = (loss, phase, batch.epoch, batch.step)
        self.optimizer.zero_grad(set_to_none=True)
        if self._scaler is None:
            row_loss.backward()
            self.optimizer.step()
        else:
            self._scaler.scale(row_loss).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        return loss

    def _forward(self, module: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and features of ``module`` (the Student, or its DDP wrapper), under autocast at a lower precision
        when set, handed on as float32 so that losses, states and rewards are computed as at full precision."""
        if self.precision is None:
            return module(images)
        with torch.autocast(self.device.type, dtype=self.precision):
            logits, features = module(images)
        return logits.float(), features.float()

    def whole_batch(self, rows: torch.Tensor, kind: str) -> torch.Tensor:
        """The whole batch's values from every process's ``rows`` of them (this process's alone when not distributed);
        ``kind`` counts the bytes sent (:data:`tsrl_env.distributed.COMMUNICATION_KINDS`)."""
        (gathered,) = self.group.all_gather_rows(rows, total=self.batch_size, kind=kind)
        return gathered

    @torch.no_grad()
    def frozen_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and features of normalised ``images`` without gradients, in training mode with BatchNorm statistics
        frozen: the normalisation of the training forward, leaving no trace in the Student (for rewards)."""
        with self.student.frozen_batch_statistics():
            return self._forward(self.student, images)

    def images_of(self, split: str, ids: torch.Tensor) -> torch.Tensor:
        """The normalised images of ``split``'s samples ``ids`` (CPU ids), on the device."""
        data = self.splits[split]
        if data.in_memory:
            images = data.images[ids.to(self.device)]
        else:
            images = torch.stack([data.images[i] for i in ids.tolist()]).to(self.device, non_blocking=True)
        return normalise_images(images)

    def check_loss(self) -> None:
        """Raise a FloatingPointError, naming where and what to lower, if the last update's loss was not finite."""
        if self._unchecked_loss is None:
            return
        loss, phase, epoch, step = self._unchecked_loss
        self._unchecked_loss = None
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the Student's loss became {loss.item()} at {phase} epoch {epoch}, step {step} (counting from 0); rerun "
                f"with a lower learning rate: the env setting lr is {self.config.lr:g}, try {self.config.lr / 10:g}"
            )

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        """Metrics of the current Student on ``split``, plus each manipulation family's AUC against the reals.

        The frames stream through in batches: memory holds one score per frame, whatever the split's size. In a
        process group each rank scores its shard of the split and the scores are all-gathered, so every rank returns
        the same metrics.
        """
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; accepted: {', '.join(self.splits)}")
        self.check_loss()
        data = self.splits[split]
        labels = data.labels.cpu().numpy()
        # Ranks whose BatchNorm layers normalised their own shards (no SyncBatchNorm on the CPU) hold running
        # statistics of their own: every rank scores with rank 0's, the ones its checkpoints and saved Student hold.
        self.group.broadcast_buffers(self.student)
        positions = self.group.shard(len(data))
        shard_scores = torch.empty(positions.stop - positions.start, device=self.device)
        was_training = self.student.training
        self.student.eval()
        start = 0
        for images in self._evaluation_batches(data, positions):
            logits = self._forward(self.student, normalise_images(images.to(self.device, non_blocking=True)))[0]
            shard_scores[start : start + len(images)] = logits.softmax(dim=1)[:, FAKE_CLASS]
            start += len(images)
        self.student.train(was_training)
        (scores,) = self.group.all_gather_rows(shard_scores, total=len(data), kind="evaluation")
        scores = scores.cpu().numpy()
        metrics: dict[str, Any] = detection_metrics(labels, scores, data.groups.cpu().numpy())
        metrics["family_auc"] = per_family_auc(labels, scores, data.families.cpu().numpy(), self.dataset.family_names)
        return metrics

    def weights_finite(self) -> bool:
        """Whether every weight of the Student is finite (one device sync)."""
        return bool(torch.stack([torch.isfinite(p).all() for p in self.student.parameters()]).all())

    def state_dict(self) -> dict[str, Any]:
        """Copies of the Student's weights and buffers, the optimiser's state, the data generator's, the learning-rate
        schedule's epoch count and, in fp16, the gradient scaler's."""
        assert self.optimizer is not None, "call start() or load_state_dict() first"
        self.check_loss()
        return {
            "student": {name: value.detach().clone() for name, value in self.student.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "data_generator": self.data_generator.get_state(),
            "epochs_begun": self.epochs_begun,
            "grad_scaler": None if self._scaler is None else self._scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`, at the configured learning rate (a resume may lower it)."""
        self.student = self.build_student(self.config.seed)
        self.student.load_state_dict(state["student"])
        self._unchecked_loss = None
        self.network = self.group.wrap(self.student)
        self.optimizer = self.build_optimizer(self.student)
        self.optimizer.load_state_dict(state["optimizer"])
        self._set_lr(self.config.lr)
        self.data_generator.set_state(state["data_generator"])
        # A checkpoint written before the schedule existed was of a constant learning rate: its count does not matter.
        self.epochs_begun = int(state.get("epochs_begun", 0))
        if self._scaler is not None and state.get("grad_scaler"):
            self._scaler.load_state_dict(state["grad_scaler"])

    def _set_lr(self, lr: float) -> None:
        assert self.optimizer is not None, "call start() or load_state_dict() first"
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def close(self) -> None:
        """Stop the frame-decoding worker processes, if any (the next epoch starts new ones)."""
        self._train_batches = None
        self._train_loader = None

    def _evaluation_batches(self, data: Split, positions: slice) -> Iterator[torch.Tensor]:
        """uint8 image batches of ``data[positions]`` in sample order, sliced from memory or decoded by a DataLoader."""
        if isinstance(data.images, FrameStore):
            yield from self._frame_loader(Subset(data.images, range(positions.start, positions.stop)), batch_size=EVAL_BATCH_SIZE)
        else:
            for start in range(positions.start, positions.stop, EVAL_BATCH_SIZE):
                yield data.images[start : min(start + EVAL_BATCH_SIZE, positions.stop)]

    def _frame_loader(self, frames: TorchDataset, persistent: bool = False, **batching: Any) -> DataLoader:
        """A DataLoader decoding frame files in ``num_workers`` processes (kept between epochs when ``persistent``)."""
        workers = worker_count(self.config.num_workers)
        return DataLoader(
            frames,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=persistent and workers > 0,
            **batching,
        )


def resolved_precision(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast type of the ``precision`` setting on ``device``; None for full float32 precision.

    ``auto`` is bf16 on a CUDA device that supports it, fp16 on an older one and float32 elsewhere: the CPU's results
    stay those of float32. ``bf16`` runs on the CPU too; ``fp16`` needs CUDA.
    """
    cuda = device.type == "cuda"
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError(f"precision fp16 needs a CUDA device, and the device is {device}; use bf16, fp32 or auto there")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{device} does not support bf16; use precision fp16 or auto (fp16 with loss scaling there)")
    return {None: None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def scheduled_lr(lr: float, schedule: dict[str, Any], epoch: int) -> float:
    """The learning rate of a Student's epoch ``epoch`` (from 0, warm-up included) under the step ``schedule``."""
    return lr * schedule["gamma"] ** (epoch // schedule["step_epochs"])


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to floats in [-1, 1] (mean and std 0.5), channels-last for faster CPU convolutions."""
    return (images.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


def trusted_in_training(dataset: Dataset, config: EnvConfig) -> tuple[Dataset, torch.Tensor]:
    """``dataset`` with trusted images joined to its training split as ``config`` asks, and the training-split positions
    of the threshold samples among them.

    The frames of ``threshold_share`` of the trusted split's videos (``val``, clean; whole videos, so that no frame left
    for validation has a sibling trained on; a choice seeded by ``config.seed``) leave it and join the training split
    last, every label flipped, so that each of their labels is known to be wrong; with ``train_on_trusted`` the rest
    of the trusted split joins before them with its own labels. ``clean_labels`` keep the
    true ones, so ``Split.flipped`` marks the threshold samples. Without either setting the dataset is returned as is.
    """
    if not config.train_on_trusted and not config.threshold_share:
        return dataset, torch.empty(0, dtype=torch.long)
    train, trusted = dataset.splits["train"], dataset.splits["val"]
    videos = trusted.groups.unique()
    chosen = int(config.threshold_share * len(videos))
    if config.threshold_share and not chosen:
        raise ValueError(
            f"threshold_share {config.threshold_share} of the {len(videos)} validation videos is no threshold sample; "
            "raise threshold_share or val_size"
        )
    order = torch.randperm(len(videos), generator=torch.Generator().manual_seed(config.seed))
    is_threshold = torch.isin(trusted.groups, videos[order[:chosen]])
    threshold, kept = _rows(trusted, is_threshold.nonzero()[:, 0]), _rows(trusted, (~is_threshold).nonzero()[:, 0])
    joined = [train, kept] if config.train_on_trusted else [train]
    if chosen:
        joined.append(dataclasses.replace(threshold, labels=1 - threshold.labels))
    splits = {**dataset.splits, "train": _joined(joined), "val": kept}
    size = len(splits["train"])
    return dataclasses.replace(dataset, splits=splits), torch.arange(size - len(threshold), size)


def _rows(split: Split, ids: torch.Tensor) -> Split:
    """The samples ``ids`` of ``split``, in that order."""
    images = split.images
    taken = images[ids] if split.in_memory else FrameStore([images.path(i) for i in ids.tolist()], images.image_size)
    return Split(taken, *(getattr(split, name)[ids] for name in _PER_SAMPLE))


def _joined(splits: list[Split]) -> Split:
    """The samples of ``splits`` one after the other."""
    if all(split.in_memory for split in splits):
        images = torch.cat([split.images for split in splits])
    else:
        paths = [split.images.path(i) for split in splits for i in range(len(split))]
        images = FrameStore(paths, splits[0].image_size)
    return Split(images, *(torch.cat([getattr(split, name) for split in splits]) for name in _PER_SAMPLE))


_PER_SAMPLE = ("labels", "clean_labels", "groups", "families", "strengths")
"""The per-sample fields of a :class:`~tsrl_env.data.Split` besides its images, in its constructor's order."""


def _to_device(split: Split, device: torch.device, image_size: int | None) -> Split:
    """The split with its tensors on ``device`` and its images at ``image_size`` (frame files: when decoded)."""
    images = split.images
    if isinstance(images, FrameStore):
        if image_size is not None:
            images = images.resized(image_size)
    else:
        if image_size is not None and images.shape[-1] != image_size:
            resized = F.interpolate(
                images.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
            )
            images = resized.round().clamp(0, 255).to(torch.uint8)
        images = images.to(device)
    return Split(
        images=images,
        labels=split.labels.to(device),
        clean_labels=split.clean_labels.to(device),
        groups=split.groups.to(device),
        families=split.families.to(device),
        strengths=split.strengths.to(device),
    )


class _EpochBatches(Sampler[list[int]]):
    """This process's rows of the training batches of one epoch in the trainer's order, for a DataLoader that decodes
    frame files.

    The trainer sets ``order`` at each epoch start; the ragged last batch is dropped, as in the in-memory path, so
    batch ``k`` holds exactly the sample ids step ``k`` uses in its ``rows`` of the batch.
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, rows: slice) -> None:
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.rows = rows
        self.order = torch.arange(batch_size * steps_per_epoch)
        self.seeds: torch.Tensor | None = None  # per sample id, set with seeded augmentations: items are (id, seed)

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        order = self.order
        for step in range(self.steps_per_epoch):
            start = step * self.batch_size
            ids = order[start + self.rows.start : start + self.rows.stop]
            yield ids.tolist() if self.seeds is None else list(zip(ids.tolist(), self.seeds[ids].tolist(), strict=True))

    def __len__(self) -> int:
        return self.steps_per_epoch
