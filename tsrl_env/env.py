"""DeepfakeCurriculumEnv: one Student training run as a Gymnasium episode (DESIGN §3.1 and §3.2)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.utils import seeding
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from tsrl_env.config import EnvConfig, setting_differences
from tsrl_env.data import FrameStore, Split, make_dataset
from tsrl_env.distributed import ProcessGroupView
from tsrl_env.metrics import detection_metrics, per_family_auc
from tsrl_env.rewards import (
    NEXT_VISIT_REWARDS,
    NextVisitLedger,
    cross_entropy_errors,
    get_reward,
    head_gradient,
    needs_trusted_batch,
)
from tsrl_env.state import SampleHistory, StateBuilder
from tsrl_env.student import FAKE_CLASS, Student, resolve_device

EVAL_BATCH_SIZE = 256
RESTORE_MAY_CHANGE = ("lr", "device", "num_workers")
"""Env settings an epoch-start state may be restored under with another value than it was taken with."""
_EPOCH_START_KEYS = (
    "config",
    "epoch",
    "student",
    "optimizer",
    "history",
    "ledger",
    "data_generator",
    "trusted_generator",
    "np_random",
)

logger = logging.getLogger(__name__)


@dataclass
class _PendingBatch:
    """The current batch after its training forward, waiting for the tutor's weights.

    ``ids`` and the ``batch_`` fields cover the whole batch; the others this process's shard of it (all of it when
    nothing is distributed).
    """

    ids: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    losses: torch.Tensor  # per-sample CE, still attached to the autograd graph
    p_true: torch.Tensor
    correct: torch.Tensor
    probabilities: torch.Tensor  # detached, (shard, classes)
    features: torch.Tensor  # detached head inputs, (shard, features)
    batch_p_true: torch.Tensor
    batch_correct: torch.Tensor


class DeepfakeCurriculumEnv(gym.Env):
    """Training of a deepfake detector (the Student) as an episode in which the agent picks per-sample loss weights.

    One step is one Student mini-batch. The observation holds one state row per sample of the batch
    (``[features, tanh(EMA loss), tanh(counter / 10)..., p_fake, onehot(correct)]``), the action one weight
    in [0, 1] per sample. The Student's training forward on a batch happens before the observation is
    returned, so the state comes from the very pass whose loss the action weights; ``step`` then runs the
    weighted backward and one no-grad forward for the after-update predictions the reward compares.

    The reward is the mean of the per-sample rewards; ``info["sample_rewards"]`` holds the vector. ``reset``
    builds a fresh Student from the episode's seed and trains it ``warmup_epochs`` epochs with uniform
    weights; the episode terminates after ``epochs`` tutored epochs. Epoch ends add validation metrics to
    ``info["val"]``; the last step adds every test split's metrics to ``info["test"]``.

    ``reward="next_visit"`` is a cheaper variant, not the paper's reward: ``step`` runs no forward after the update.
    The rewards a step pays are those of the current batch's samples for the transition from their previous tutored
    visit (one epoch earlier, where the tutor weighted them) to this visit's training forward, with ``tsrl``'s
    branches; ``info["reward_for"]`` says which earlier action each belongs to (``transition``, ``epoch``, ``step``,
    ``slot``, ``weight``; -1 and NaN where there is none). A sample's first tutored visit has no earlier action and
    gets 0, so the first tutored epoch pays nothing, and the last epoch's actions are never paid. A tutor must credit
    each reward to the action it names (:mod:`agents.next_visit`); see :class:`~tsrl_env.rewards.NextVisitLedger`.

    ``reward="val_alignment"`` is another variant, not the paper's reward: before the update, ``step`` forwards
    ``trusted_batch_size`` validation images drawn afresh (no gradients, BatchNorm statistics frozen) for the mean
    gradient of the Student's linear head on them, and pays each sample its weight times the cosine between its own head
    gradient and that one (:func:`~tsrl_env.rewards.val_alignment_reward`); it runs no forward after the update.

    Datasets held in memory (the embedded benchmark) are indexed directly; datasets whose frames stay on disk
    (``deepfakebench``, ``folder``) are decoded by ``DataLoader`` workers (``num_workers``), following the same
    epoch order, and evaluated as a stream that keeps one score per frame. Frames a source skipped as unreadable are
    counted in the reset info's ``bad_frames``.

    Settings are those of :class:`~tsrl_env.config.EnvConfig`, given as a config, keywords, or both.

    ``group`` (a :class:`~tsrl_env.distributed.DistributedGroupView`) trains the Student with DistributedDataParallel
    across the processes of a torch.distributed group, one env per process, each built with the same settings: every
    rank draws the same data order and augmentation, forwards its contiguous shard of each batch (``batch_size`` must
    divide by the world size), backpropagates its shard's weighted loss as the mean over the shard (DDP averages the
    gradients over the ranks, so the update is that of the whole batch's mean), runs the reward pass on its shard and
    evaluates its shard of each split. Observations, rewards and infos are the whole batch's, the same on every rank:
    the state rows, per-sample rewards and scores are all-gathered. ``step`` uses rank 0's action and ``reset`` rank
    0's seed and options (a restore's state arrives by broadcast); the other ranks' are ignored, and every rank must
    call ``reset``, ``step`` and ``evaluate`` the same number of times, in the same order.

    The per-sample history (and ``next_visit``'s ledger) is replicated: every rank updates its own copy from the whole
    batch's gathered losses, correctness and probabilities, a few numbers per sample, where owning each sample on one
    rank would need a map from ids to owners and a second exchange to build the states of a batch that mixes them. The
    sample ids need not travel: every rank draws the same order. The states of ``epoch_start_state`` are therefore the
    same on every rank, and a checkpoint of a distributed run restores as well in one process as in a group.

    Equivalence with one process at the same global batch: exact in arithmetic, equal up to floating-point summation
    order for a Student without BatchNorm, or on CUDA, where BatchNorm layers become SyncBatchNorm (statistics of the
    whole batch). torch has no CPU SyncBatchNorm: on the CPU each rank normalises with its shard's statistics (standard
    DDP) and a BatchNorm Student trains differently; its running statistics are rank 0's (given to every rank before
    each evaluation). Dropout masks come from each rank's global torch RNG, so a Student with dropout is not equivalent.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: EnvConfig | None = None,
        render_mode: str | None = None,
        group: ProcessGroupView | None = None,
        **settings: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"DeepfakeCurriculumEnv has no render modes, got render_mode={render_mode!r}")
        self.config = EnvConfig.from_dict(settings) if config is None else config.replace(**settings)
        self.group = ProcessGroupView() if group is None else group
        # This process's rows of every training batch; refused before any data is loaded if the shards would differ.
        self._shard = self.group.equal_shard(self.config.batch_size, "batch_size")
        self.device = resolve_device(self.config.device)
        self.dataset = make_dataset(self.config.dataset, **self.config.dataset_options)
        if self.dataset.bad_frames:
            skipped = self.dataset.bad_frames
            logger.warning("training without %d unreadable frame(s), per split: %s", sum(skipped.values()), skipped)
        self.splits = {
            name: _to_device(split, self.device, self.config.image_size) for name, split in self.dataset.splits.items()
        }
        self.batch_size = self.config.batch_size
        train_size = len(self.splits["train"])
        if train_size < self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {train_size} training samples of {self.config.dataset!r}")
        # The ragged last batch is dropped: every step has the same shape.
        self.steps_per_epoch = train_size // self.batch_size

        self.student = self.build_student(self.config.seed)
        self._network: nn.Module | None = None  # what the training forward goes through, made by reset()
        self.state_builder = StateBuilder(
            self.student.num_features,
            self.config.state_feature_dim,
            self.config.state_counters,
            seed=self.config.seed,
            device=self.device,
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.batch_size, self.state_builder.state_dim), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (self.batch_size,), np.float32)
        self.reward_function = get_reward(self.config.reward)
        self._uses_trusted_batch = needs_trusted_batch(self.config.reward)
        if self._uses_trusted_batch:
            val_size = len(self.splits["val"])
            if val_size < self.config.trusted_batch_size:
                raise ValueError(
                    f"trusted_batch_size {self.config.trusted_batch_size} exceeds the {val_size} validation samples of "
                    f"{self.config.dataset!r}; set it to at most {val_size}"
                )
            # Raises now, before any training, if the head is not linear.
            self._head_has_bias = self.student.classifier.bias is not None
        self._ledger: NextVisitLedger | None = None  # the next_visit reward's per-sample memory, rebuilt by reset()

        self.state_layout = self.state_builder.layout
        self.history = SampleHistory(train_size, self.config.ema_alpha, self.device)
        self.finished_student: Student | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending: _PendingBatch | None = None
        self._observation = np.zeros(self.observation_space.shape, np.float32)
        self._data_generator = torch.Generator()
        # val_alignment's trusted batches come from a generator of their own, so that a run's data order and
        # augmentation are those of a run with the same seed under any other reward.
        self._trusted_generator = torch.Generator()
        self._order = torch.arange(train_size)
        self._epoch_batches = _EpochBatches(self.batch_size, self.steps_per_epoch, self._shard)
        self._train_loader: DataLoader | None = None  # made at the first epoch of a dataset whose frames are on disk
        self._train_batches: Iterator[torch.Tensor] | None = None
        self._epoch = 0
        self._step_in_epoch = 0
        self._warming_up = False
        self._seeded = False
        self._epoch_start: dict[str, Any] | None = None

    @property
    def epoch(self) -> int:
        """Index of the current tutored epoch (0-based)."""
        return self._epoch

    @property
    def warming_up(self) -> bool:
        """Whether ``reset`` is running the uniform-weight warm-up epochs."""
        return self._warming_up

    @property
    def batch_sample_ids(self) -> np.ndarray:
        """Training-set positions of the batch the next action weights, in the order of the observation's rows."""
        if self._pending is None:
            raise RuntimeError("no batch is waiting for weights: call reset() first, or reset() again after the episode ended")
        return self._pending.ids.cpu().numpy()

    @property
    def at_epoch_start(self) -> bool:
        """Whether the current tutored epoch has taken no step yet: its first batch is forwarded, not yet updated."""
        return self._pending is not None and not self._warming_up and self._step_in_epoch == 1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Build and warm up a new Student, or with ``options={"restore": state}`` continue from an epoch-start state.

        Seeding follows Gymnasium: ``seed`` reseeds the episode RNG, ``None`` continues it (the first reset without a
        seed uses ``config.seed``). A restore ignores ``seed``: the state carries the RNG states it was taken with. In
        a process group, rank 0's ``seed`` and ``options`` are used on every rank.
        """
        seed, options = self.group.broadcast_object((seed, options), kind="setup")
        unknown = set(options or {}) - {"restore"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: 'restore' (a state from epoch_start_state())")
        if options and "restore" in options:
            return self._restore(options["restore"])
        if seed is None and not self._seeded:
            seed = self.config.seed
        super().reset(seed=seed)
        self._seeded = True
        student_seed, data_seed = (int(s) for s in self.np_random.integers(0, 2**31 - 1, size=2))
        self.student = self.build_student(student_seed)
        self._network = self.group.wrap(self.student)
        self._optimizer = self.build_optimizer(self.student)
        self.history = SampleHistory(len(self.splits["train"]), self.config.ema_alpha, self.device)
        if self.config.reward in NEXT_VISIT_REWARDS:
            self._ledger = NextVisitLedger(len(self.splits["train"]), self.device)
        self._data_generator.manual_seed(data_seed)
        if self._uses_trusted_batch:
            self._trusted_generator.manual_seed(int(self.np_random.integers(0, 2**31 - 1)))
        self._pending = None

        warmup = []
        self._warming_up = True
        for epoch in range(self.config.warmup_epochs):
            self._epoch = epoch
            self._start_epoch()
            for _ in range(self.steps_per_epoch):
                self._forward_next_batch()
                self._update(torch.ones(self.batch_size, device=self.device))
            warmup.append({"epoch": epoch, "val": self.evaluate("val")})

        self._warming_up = False
        self._epoch = 0
        self._epoch_start = self._snapshot()
        self._start_epoch()
        self._observation = self._forward_next_batch()
        return self._observation, {"warmup": warmup, "epoch": 0, "bad_frames": dict(self.dataset.bad_frames)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._pending is None:
            raise RuntimeError("call reset() before step(), and again after the episode terminated")
        weights, clipped = self._validate_action(action)
        # Rank 0's action is the one every rank applies: its weights and how many of them it clipped, in one broadcast.
        # From pageable memory to the device: safe, no wait for the device.
        chosen = torch.cat([weights, torch.full((1,), clipped, dtype=weights.dtype)]).to(self.device, non_blocking=True)
        chosen = self.group.broadcast(chosen, kind="weights")
        device_weights = chosen[: self.batch_size]
        batch = self._pending
        step_index = self._epoch * self.steps_per_epoch + self._step_in_epoch - 1
        # Before the update: the batch's head gradients are those of the network its training forward ran.
        trusted_gradient = self._trusted_head_gradient() if self._uses_trusted_batch else None
        loss = self._update(device_weights)

        paid_for = None
        if trusted_gradient is not None:
            errors = cross_entropy_errors(batch.probabilities, batch.labels)
            shard_rewards = self.reward_function(errors, batch.features, trusted_gradient, device_weights[self._shard])
            (sample_rewards,) = self.group.all_gather_rows(shard_rewards, total=self.batch_size, kind="rewards")
        elif self._ledger is None:
            with torch.no_grad(), self.student.frozen_batch_statistics():
                logits_after, _ = self.student(batch.images)
            p_after = logits_after.softmax(dim=1).gather(1, batch.labels.unsqueeze(1)).squeeze(1)
            correct_after = logits_after.argmax(dim=1) == batch.labels
            shard_rewards = self.reward_function(batch.p_true, p_after, batch.correct, correct_after)
            (sample_rewards,) = self.group.all_gather_rows(shard_rewards, total=self.batch_size, kind="rewards")
        else:
            # next_visit: this visit's training forward closes each sample's transition from its previous visit. The
            # ledger is replicated, so every rank pays the whole batch without exchanging anything.
            transitions = step_index * self.batch_size + torch.arange(self.batch_size, device=self.device)
            sample_rewards, *paid_for = self._ledger.visit(
                batch.ids, batch.batch_p_true, batch.batch_correct, device_weights, transitions
            )

        info: dict[str, Any] = {"epoch": self._epoch, "step": self._step_in_epoch - 1}
        terminated = False
        if self._step_in_epoch == self.steps_per_epoch:
            info["val"] = self.evaluate("val")
            self._epoch += 1
            if self._epoch == self.config.epochs:
                terminated = True
                info["test"] = {name: self.evaluate(name) for name in self.dataset.test_splits}
                self.finished_student = self.student
                self._pending = None
            else:
                self._epoch_start = self._snapshot()
                self._start_epoch()
        if not terminated:
            self._observation = self._forward_next_batch()
        # Read back only now, after the next batch's forward (whose states have to come back anyway): on a GPU the
        # reward path then adds no wait for the device of its own between the update and the next forward.
        host_weights = chosen.cpu()
        info["mean_weight"] = float(host_weights[: self.batch_size].mean())
        info["weights"] = host_weights[: self.batch_size].numpy()
        info["clipped_actions"] = int(host_weights[self.batch_size])
        info["sample_rewards"] = sample_rewards.float().cpu().numpy()
        info["sample_ids"] = batch.ids.cpu().numpy()
        info["loss"] = float(loss)
        info["accuracy"] = float(batch.batch_correct.float().mean())
        if paid_for is not None:
            info["reward_for"] = self._reward_for_info(*paid_for)
        return self._observation, float(info["sample_rewards"].mean()), terminated, False, info

    def _reward_for_info(self, transitions: torch.Tensor, weights: torch.Tensor) -> dict[str, np.ndarray]:
        """Which earlier action each ``next_visit`` reward of a step belongs to, -1 (weight NaN) where there is none.

        ``transition`` numbers the per-sample transitions of the episode: ``(epoch * steps_per_epoch + step) *
        batch_size + slot``, where ``slot`` is the sample's row in the batch it was weighted in.
        """
        transition = transitions.cpu().numpy()
        paid = transition >= 0
        step_index, slot = np.divmod(transition, self.batch_size)
        epoch, step = np.divmod(step_index, self.steps_per_epoch)
        return {
            "transition": transition,
            "epoch": np.where(paid, epoch, -1),
            "step": np.where(paid, step, -1),
            "slot": np.where(paid, slot, -1),
            "weight": weights.cpu().numpy(),
        }

    def epoch_start_state(self) -> dict[str, Any]:
        """Everything this environment needs to continue from the start of the current tutored epoch.

        The state is taken before the epoch's first training forward: the Student's weights and BatchNorm statistics,
        the optimiser, the per-sample history, the ``next_visit`` ledger, the data-order generator, the episode RNG
        and the epoch index. ``reset(options={"restore": state})`` (on an environment with the same settings; ``lr``,
        ``device`` and ``num_workers`` may differ) continues exactly where the episode was at that point. The tensors
        are the environment's own copies: save them (``torch.save``) or clone them, do not modify them.
        """
        if self._epoch_start is None:
            raise RuntimeError("no tutored epoch has started yet; call reset() first")
        return self._epoch_start

    def _snapshot(self) -> dict[str, Any]:
        """The epoch-start state; refuses to take one from a Student whose weights are no longer finite."""
        assert self._optimizer is not None
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.student.parameters()]).all()):  # one sync
            during = f"tutored epoch {self._epoch - 1}" if self._epoch else "the warm-up"
            raise FloatingPointError(
                f"the Student's weights stopped being finite during {during}; rerun with a lower learning rate: the env "
                f"setting lr is {self.config.lr:g}, try {self.config.lr / 10:g}"
            )
        return {
            "config": self.config.to_dict(),
            "epoch": self._epoch,
            "student": {name: value.detach().clone() for name, value in self.student.state_dict().items()},
            "optimizer": copy.deepcopy(self._optimizer.state_dict()),
            "history": self.history.state_dict(),
            "ledger": None if self._ledger is None else self._ledger.state_dict(),
            "data_generator": self._data_generator.get_state(),
            "trusted_generator": self._trusted_generator.get_state(),
            "np_random": copy.deepcopy(self.np_random.bit_generator.state),
        }

    def _restore(self, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        missing = set(_EPOCH_START_KEYS) - set(state)
        if missing:
            raise ValueError(f"not a state from epoch_start_state(): it lacks {sorted(missing)}")
        differences = setting_differences(state["config"], self.config.to_dict(), ignore=RESTORE_MAY_CHANGE)
        if differences:
            raise ValueError(
                f"the state was taken with other env settings ({'; '.join(differences)}); restore it on an environment "
                f"with the settings it was taken with (only {', '.join(RESTORE_MAY_CHANGE)} may change)"
            )
        self._np_random, _ = seeding.np_random()
        self._np_random.bit_generator.state = copy.deepcopy(state["np_random"])
        self._seeded = True
        self.student = self.build_student(self.config.seed)
        self.student.load_state_dict(state["student"])
        self._network = self.group.wrap(self.student)
        self._optimizer = self.build_optimizer(self.student)
        self._optimizer.load_state_dict(state["optimizer"])
        for group in self._optimizer.param_groups:  # a resume may lower the learning rate
            group["lr"] = self.config.lr
        self.history = SampleHistory(len(self.splits["train"]), self.config.ema_alpha, self.device)
        self.history.load_state_dict(state["history"])
        self._ledger = None
        if state["ledger"] is not None:
            self._ledger = NextVisitLedger(len(self.splits["train"]), self.device)
            self._ledger.load_state_dict(state["ledger"])
        self._data_generator.set_state(state["data_generator"])
        self._trusted_generator.set_state(state["trusted_generator"])
        self.finished_student = None
        self._pending = None
        self._warming_up = False
        self._epoch = int(state["epoch"])
        self._epoch_start = state
        self._start_epoch()
        self._observation = self._forward_next_batch()
        info = {"warmup": [], "epoch": self._epoch, "bad_frames": dict(self.dataset.bad_frames), "restored": True}
        return self._observation, info

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        """Metrics of the current Student on ``split``, plus each manipulation family's AUC against the reals.

        The frames stream through in batches: memory holds one score per frame, whatever the split's size. In a
        process group each rank scores its shard of the split and the scores are all-gathered, so every rank returns
        the same metrics.
        """
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; accepted: {', '.join(self.splits)}")
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
            logits = self.student(_normalise(images.to(self.device, non_blocking=True)))[0]
            shard_scores[start : start + len(images)] = logits.softmax(dim=1)[:, FAKE_CLASS]
            start += len(images)
        self.student.train(was_training)
        (scores,) = self.group.all_gather_rows(shard_scores, total=len(data), kind="evaluation")
        scores = scores.cpu().numpy()
        metrics: dict[str, Any] = detection_metrics(labels, scores, data.groups.cpu().numpy())
        metrics["family_auc"] = per_family_auc(labels, scores, data.families.cpu().numpy(), self.dataset.family_names)
        return metrics

    def close(self) -> None:
        """Stop the frame-decoding worker processes, if any (the next ``reset`` starts new ones)."""
        self._train_batches = None
        self._train_loader = None

    def _evaluation_batches(self, data: Split, positions: slice) -> Iterator[torch.Tensor]:
        """uint8 image batches of ``data[positions]`` in sample order, sliced from memory or decoded by a DataLoader."""
        if isinstance(data.images, FrameStore):
            yield from self._frame_loader(Subset(data.images, range(positions.start, positions.stop)), batch_size=EVAL_BATCH_SIZE)
        else:
            for start in range(positions.start, positions.stop, EVAL_BATCH_SIZE):
                yield data.images[start : min(start + EVAL_BATCH_SIZE, positions.stop)]

    def _frame_loader(self, frames: Dataset, persistent: bool = False, **batching: Any) -> DataLoader:
        """A DataLoader decoding frame files in ``num_workers`` processes (kept between epochs when ``persistent``)."""
        workers = self.config.num_workers
        return DataLoader(
            frames,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=persistent and workers > 0,
            **batching,
        )

    def build_student(self, seed: int) -> Student:
        """A new Student of this env's backbone, initialised from ``seed`` (the global RNG untouched), on its device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = Student.from_timm(self.config.backbone, self.config.pretrained)
        return student.to(self.device, memory_format=torch.channels_last)

    def build_optimizer(self, student: Student) -> torch.optim.Optimizer:
        """The optimiser this env trains ``student`` with (Adam at the env's ``lr`` and ``weight_decay``)."""
        return torch.optim.Adam(student.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _start_epoch(self) -> None:
        self._order = torch.randperm(len(self.splits["train"]), generator=self._data_generator)
        self._step_in_epoch = 0
        train = self.splits["train"].images
        if isinstance(train, FrameStore):
            if self._train_loader is None:
                self._train_loader = self._frame_loader(train, batch_sampler=self._epoch_batches, persistent=True)
            # Workers start decoding this epoch's first batches at once, ahead of the Student.
            self._epoch_batches.order = self._order
            self._train_batches = iter(self._train_loader)

    def _forward_next_batch(self) -> np.ndarray:
        """Training forward on the next batch; returns its states and keeps the graph for the weighted update."""
        start = self._step_in_epoch * self.batch_size
        ids = self._order[start : start + self.batch_size].to(self.device)  # the whole batch: the same on every rank
        self._step_in_epoch += 1
        shard_ids = ids[self._shard]
        train = self.splits["train"]
        if train.in_memory:
            images = train.images[shard_ids]
        else:
            assert self._train_batches is not None
            images = next(self._train_batches).to(self.device, non_blocking=True)
        if self.config.augment:
            # Drawn for the whole batch on every rank, so that the generator stays where one process would have it.
            flip = (torch.rand(len(ids), generator=self._data_generator) < 0.5)[self._shard].to(self.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        images = _normalise(images)
        labels = train.labels[shard_ids]

        assert self._network is not None
        self._network.train()
        logits, features = self._network(images)
        losses = F.cross_entropy(logits, labels, reduction="none")
        probabilities = logits.detach().softmax(dim=1)
        correct = probabilities.argmax(dim=1) == labels
        p_true = probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
        batch_losses, batch_correct, batch_p_true = self.group.all_gather_rows(
            losses.detach(), correct, p_true, total=self.batch_size, kind="states"
        )
        self.history.observe(ids, batch_losses, batch_correct)
        features = features.detach()
        self._pending = _PendingBatch(
            ids, images, labels, losses, p_true, correct, probabilities, features, batch_p_true, batch_correct
        )
        states = self.state_builder.build(features, shard_ids, self.history, probabilities[:, FAKE_CLASS], correct)
        (states,) = self.group.all_gather_rows(states, total=self.batch_size, kind="states")
        return states.cpu().numpy().astype(np.float32, copy=False)

    def _trusted_head_gradient(self) -> torch.Tensor:
        """The mean head gradient of ``trusted_batch_size`` validation images drawn afresh (``val_alignment`` reward).

        Drawn with the env's trusted-batch generator (seeded by reset, kept by epoch_start_state); forwarded without gradients in
        training mode with BatchNorm statistics frozen, the normalisation of the training forward it is compared with.
        """
        val = self.splits["val"]
        size = self.config.trusted_batch_size
        ids = torch.randperm(len(val), generator=self._trusted_generator)[:size][self.group.shard(size)]
        device_ids = ids.to(self.device)
        if val.in_memory:
            images = val.images[device_ids]
        else:
            images = torch.stack([val.images[i] for i in ids.tolist()]).to(self.device, non_blocking=True)
        with torch.no_grad(), self.student.frozen_batch_statistics():
            logits, features = self.student(_normalise(images))
        errors = cross_entropy_errors(logits.softmax(dim=1), val.labels[device_ids])
        errors, features = self.group.all_gather_rows(errors, features, total=size, kind="rewards")
        return head_gradient(errors, features, bias=self._head_has_bias)

    def _update(self, weights: torch.Tensor) -> torch.Tensor:
        """The weighted backward and optimiser step; returns the whole batch's detached loss, left on the device.

        The backward is that of the mean over this rank's shard: DDP averages the gradients over the ranks' equal
        shards, which makes them those of the whole batch's mean. The loss checked and returned is the ranks' average,
        the same on every rank, so all of them stop together on a loss that is not finite.
        """
        assert self._pending is not None and self._optimizer is not None
        shard_loss = (weights[self._shard] * self._pending.losses).mean()
        loss = self.group.average(shard_loss.detach(), kind="loss")
        if not torch.isfinite(loss):
            phase = "warm-up" if self._warming_up else "tutored"
            raise FloatingPointError(
                f"the Student's loss became {loss.item()} at {phase} epoch {self._epoch}, step {self._step_in_epoch - 1} "
                f"(counting from 0); rerun with a lower learning rate: the env setting lr is {self.config.lr:g}, "
                f"try {self.config.lr / 10:g}"
            )
        self._optimizer.zero_grad(set_to_none=True)
        shard_loss.backward()
        self._optimizer.step()
        return loss

    def _validate_action(self, action: Any) -> tuple[torch.Tensor, int]:
        """The weights clipped to [0, 1] as float32, and how many were clipped; a bad action raises and changes nothing."""
        shape = self.action_space.shape
        try:
            weights = np.asarray(action)
        except ValueError as error:  # ragged nested sequences
            raise ValueError(f"action must be an array of shape {shape} (one weight per sample of the batch): {error}") from None
        if weights.shape != shape:
            raise ValueError(f"action must have shape {shape} (one weight per sample of the batch), got {weights.shape}")
        if weights.dtype.kind not in "biuf":
            raise TypeError(f"action must hold real numbers (bool, integer or float dtype), got dtype {weights.dtype}")
        weights = weights.astype(np.float64)
        nan, infinite = int(np.isnan(weights).sum()), int(np.isinf(weights).sum())
        if nan or infinite:
            raise ValueError(
                f"action holds {nan + infinite} NaN or infinite weight(s) ({nan} NaN, {infinite} infinite); "
                "weights must be finite numbers in [0, 1]"
            )
        clipped = np.clip(weights, 0.0, 1.0)
        return torch.from_numpy(clipped.astype(np.float32)), int((clipped != weights).sum())


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to floats in [-1, 1] (mean and std 0.5), channels-last for faster CPU convolutions."""
    return (images.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


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
    """This process's shard of the training batches of one epoch in the env's own order, for a DataLoader that decodes
    frame files.

    The env sets ``order`` at each epoch start; the ragged last batch is dropped, as in the in-memory path, so
    batch ``k`` holds exactly the sample ids the env's step ``k`` uses in its ``shard`` of the batch (rows of it).
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, shard: slice) -> None:
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.shard = shard
        self.order = torch.arange(batch_size * steps_per_epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order
        for step in range(self.steps_per_epoch):
            start = step * self.batch_size
            yield order[start + self.shard.start : start + self.shard.stop].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch
