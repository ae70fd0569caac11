"""DeepfakeCurriculumEnv: one Student training run as a Gymnasium episode (docs/design.md, "The environment contract")."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding

from tsrl_env.config import EnvConfig
from tsrl_env.distributed import ProcessGroupView
from tsrl_env.rewards import reward_class
from tsrl_env.state import SampleHistory, StateBuilder
from tsrl_env.student import Student
from tsrl_env.trainer import StudentTrainer, TrainingBatch
from tsrl_env.validation import setting_differences

RESTORE_MAY_CHANGE = ("lr", "device", "num_workers")
"""Env settings an epoch-start state may be restored under with another value than it was taken with."""
_EPOCH_START_KEYS = ("config", "epoch", "trainer", "history", "state_columns", "reward", "np_random")


class TrainingListener:
    """An observer of the Student's training as it happens, warm-up included (a progress display, a recorder): the
    warm-up runs inside ``reset``, where no step's ``info`` can show it. Override the events you need."""

    def batch_trained(self, samples: int) -> None:
        """After every Student update, warm-up or tutored: ``samples`` in the batch."""

    def warmup_epoch_ended(self, epoch: int, val: dict[str, Any]) -> None:
        """After each warm-up epoch's validation: its index (from 0) and metrics."""


class DeepfakeCurriculumEnv(gym.Env):
    """Training of a deepfake detector (the Student) as an episode in which the agent picks per-sample loss weights.

    One step is one Student mini-batch: the observation holds one state row per sample of the batch, the action one
    loss weight per sample. The Student's training forward on a batch runs before its observation is returned, so the
    state comes from the very pass whose loss the action weights.

    ## Observation

    ``Box(-inf, inf, (batch_size, state_dim), float32)``: per sample, the columns named by ``state_columns`` (by
    default ``[features, tanh(EMA loss), tanh(counter / 10)..., p_fake, onehot(correct)]``). ``state_layout`` says
    where each column sits.

    ## Action

    ``Box(0, 1, (batch_size,), float32)``: the samples' loss weights. Values outside [0, 1] are clipped (counted in
    ``info["clipped_actions"]``); a wrong shape, a non-numeric dtype or a NaN raises and changes nothing.

    ## Reward

    The mean of the per-sample rewards of the strategy named by ``reward`` (``info["sample_rewards"]``). A reward that
    pays late (``next_visit``) says in ``info["reward_for"]`` which earlier action each reward pays.

    ## Episode

    ``reset`` builds a fresh Student from the episode's seed and trains it ``warmup_epochs`` epochs with uniform
    weights; the episode terminates after ``epochs`` tutored epochs. Epoch ends add validation metrics to
    ``info["val"]``; the last step adds every test split's metrics to ``info["test"]``. ``epoch_start_state`` and
    ``reset(options={"restore": state})`` continue an episode from the start of a tutored epoch. The
    :class:`TrainingListener` objects in ``listeners`` are told of every update and warm-up epoch as it ends.

    ## Settings

    Those of :class:`~tsrl_env.config.EnvConfig`, given as a config, keywords, or both. ``group`` (a
    :class:`~tsrl_env.distributed.DistributedGroupView`) trains the Student with DistributedDataParallel across a
    process group, one env per process, each built with the same settings (docs/design.md, "Distributed training").
    ``compute_rewards=False`` skips the reward's passes (the no-grad forward after each update among them) for a tutor
    that does not learn and a run that records no reward: every reward is then NaN, and the Student trains exactly as
    with them, since no reward feeds it.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: EnvConfig | None = None,
        render_mode: str | None = None,
        group: ProcessGroupView | None = None,
        compute_rewards: bool = True,
        **settings: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"DeepfakeCurriculumEnv has no render modes, got render_mode={render_mode!r}")
        self.config = EnvConfig.from_dict(settings) if config is None else config.replace(**settings)
        self.trainer = StudentTrainer(self.config, group)
        self.group = self.trainer.group
        self.device = self.trainer.device
        self.dataset = self.trainer.dataset
        self.splits = self.trainer.splits
        self.batch_size = self.trainer.batch_size
        self.steps_per_epoch = self.trainer.steps_per_epoch

        self.state_builder = StateBuilder(self.config.state_columns, self.config, self.trainer)
        self.state_layout = self.state_builder.layout
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.batch_size, self.state_builder.state_dim), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (self.batch_size,), np.float32)
        self.reward = reward_class(self.config.reward)(self.config, self.trainer)
        self.compute_rewards = compute_rewards
        self.history = SampleHistory(len(self.splits["train"]), self.config.ema_alpha, self.device)

        self.listeners: list[TrainingListener] = []
        self.finished_student: Student | None = None
        self._batch: TrainingBatch | None = None  # the batch whose weights the next action gives
        self._observation = np.zeros(self.observation_space.shape, np.float32)
        self._epoch = 0
        self._warming_up = False
        self._seeded = False
        self._epoch_start: dict[str, Any] | None = None

    @property
    def student(self) -> Student:
        """The Student being trained (a new one at every reset)."""
        return self.trainer.student

    @property
    def epoch(self) -> int:
        """Index of the current tutored epoch (0-based)."""
        return self._epoch

    @property
    def warming_up(self) -> bool:
        """Whether ``reset`` is running the uniform-weight warm-up epochs."""
        return self._warming_up

    @property
    def pending_batch(self) -> TrainingBatch:
        """The training batch the next action weights, after the Student's training forward: its images, labels and
        losses, for tutors that weigh samples with the Student itself (:mod:`agents.meta_reweight`)."""
        if self._batch is None:
            raise RuntimeError("no batch is waiting for weights: call reset() first, or reset() again after the episode ended")
        return self._batch

    @property
    def batch_sample_ids(self) -> np.ndarray:
        """Training-set positions of the batch the next action weights, in the order of the observation's rows."""
        return self.pending_batch.ids.cpu().numpy()

    @property
    def at_epoch_start(self) -> bool:
        """Whether the current tutored epoch has taken no step yet: its first batch is forwarded, not yet updated."""
        return self._batch is not None and not self._warming_up and self._batch.step == 0

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
        self.trainer.start(student_seed, data_seed)
        self.history = SampleHistory(len(self.splits["train"]), self.config.ema_alpha, self.device)
        self.state_builder.reset()
        self.reward.reset(self.np_random)

        warmup = []
        self._warming_up = True
        for epoch in range(self.config.warmup_epochs):
            self._epoch = epoch
            self.trainer.start_epoch(epoch)
            for _ in range(self.steps_per_epoch):
                self._observe()
                self.trainer.update(self._batch, torch.ones(self.batch_size, device=self.device), "warm-up")
                for listener in self.listeners:
                    listener.batch_trained(self.batch_size)
            warmup.append({"epoch": epoch, "val": self.evaluate("val")})
            for listener in self.listeners:
                listener.warmup_epoch_ended(epoch, warmup[-1]["val"])
        self._warming_up = False
        self._epoch = 0
        self._epoch_start = self._snapshot()
        self.trainer.start_epoch(0)
        self._observation = self._observe()
        return self._observation, {"warmup": warmup, "epoch": 0, "bad_frames": dict(self.dataset.bad_frames)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._batch is None:
            raise RuntimeError("call reset() before step(), and again after the episode terminated")
        weights, clipped = _checked_weights(action, self.action_space.shape)
        # Rank 0's action is the one every rank applies: its weights and how many of them it clipped, in one broadcast.
        # From pageable memory to the device: safe, no wait for the device.
        chosen = torch.cat([weights, torch.full((1,), clipped, dtype=weights.dtype)]).to(self.device, non_blocking=True)
        chosen = self.group.broadcast(chosen, kind="weights")
        weights = chosen[: self.batch_size]
        batch = self._batch
        if self.compute_rewards:
            self.reward.before_update(batch, weights)
        loss = self.trainer.update(batch, weights, "tutored")
        if self.compute_rewards:
            sample_rewards = self.reward.after_update(batch, weights)
        else:
            sample_rewards = torch.full((self.batch_size,), float("nan"))
        for listener in self.listeners:
            listener.batch_trained(self.batch_size)

        info: dict[str, Any] = {"epoch": self._epoch, "step": batch.step}
        terminated = False
        if self.trainer.step_in_epoch == self.steps_per_epoch:
            info["val"] = self.evaluate("val")
            self._epoch += 1
            if self._epoch == self.config.epochs:
                terminated = True
                info["test"] = {name: self.evaluate(name) for name in self.dataset.test_splits}
                self.finished_student = self.student
                self._batch = None
            else:
                self._epoch_start = self._snapshot()
                self.trainer.start_epoch(self._epoch)
        if not terminated:
            self._observation = self._observe()
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
        if self.reward.pays_late and self.compute_rewards:
            info["reward_for"] = self.reward.paid_actions()
        return self._observation, float(info["sample_rewards"].mean()), terminated, False, info

    def evaluate(self, split: str) -> dict[str, Any]:
        """Metrics of the current Student on ``split`` (see :meth:`StudentTrainer.evaluate`)."""
        return self.trainer.evaluate(split)

    def epoch_start_state(self) -> dict[str, Any]:
        """Everything this environment needs to continue from the start of the current tutored epoch.

        The state is taken before the epoch's first training forward: the trainer's (Student, optimiser, data-order
        generator), the per-sample history, the state columns' and the reward's, the episode RNG and the epoch index.
        ``reset(options={"restore": state})`` (on an environment with the same settings; ``lr``, ``device`` and
        ``num_workers`` may differ) continues exactly where the episode was at that point. The tensors are the
        environment's own copies: save them (``torch.save``) or clone them, do not modify them.
        """
        if self._epoch_start is None:
            raise RuntimeError("no tutored epoch has started yet; call reset() first")
        return self._epoch_start

    def close(self) -> None:
        """Stop the frame-decoding worker processes, if any (the next ``reset`` starts new ones)."""
        self.trainer.close()

    def _observe(self) -> np.ndarray:
        """The training forward of the next batch, the samples' history updated with it, and the batch's states."""
        batch = self.trainer.forward_next_batch()
        self.history.observe(batch.ids, batch.batch_losses, batch.batch_correct)
        self._batch = batch
        states = self.trainer.whole_batch(self.state_builder.build(batch, self.history), kind="states")
        return states.cpu().numpy().astype(np.float32, copy=False)

    def _snapshot(self) -> dict[str, Any]:
        """The epoch-start state; refuses to take one from a Student whose weights are no longer finite."""
        if not self.trainer.weights_finite():
            during = f"tutored epoch {self._epoch - 1}" if self._epoch else "the warm-up"
            raise FloatingPointError(
                f"the Student's weights stopped being finite during {during}; rerun with a lower learning rate: the env "
                f"setting lr is {self.config.lr:g}, try {self.config.lr / 10:g}"
            )
        return {
            "config": self.config.to_dict(),
            "epoch": self._epoch,
            "trainer": self.trainer.state_dict(),
            "history": self.history.state_dict(),
            "state_columns": self.state_builder.state_dict(),
            "reward": self.reward.state_dict(),
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
        self.trainer.load_state_dict(state["trainer"])
        self.history = SampleHistory(len(self.splits["train"]), self.config.ema_alpha, self.device)
        self.history.load_state_dict(state["history"])
        self.state_builder.load_state_dict(state["state_columns"])
        self.reward.load_state_dict(state["reward"])
        self.finished_student = None
        self._batch = None
        self._warming_up = False
        self._epoch = int(state["epoch"])
        self._epoch_start = state
        self.trainer.start_epoch(self._epoch)
        self._observation = self._observe()
        info = {"warmup": [], "epoch": self._epoch, "bad_frames": dict(self.dataset.bad_frames), "restored": True}
        return self._observation, info


def _checked_weights(action: Any, shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """The weights clipped to [0, 1] as float32, and how many were clipped; a bad action raises and changes nothing."""
    if isinstance(action, torch.Tensor):
        # A tutor's tensor (on any device, of any float type, part of a graph or not) is read as its values.
        action = action.detach().to("cpu", torch.float64).numpy()
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
