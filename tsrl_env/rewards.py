"""The tutor's rewards: strategies registered by name, and the vectorised functions they compute.

A reward is a :class:`Reward` registered with :func:`register_reward`; the env setting ``reward`` names it. At every
tutored step the env calls its :meth:`~Reward.before_update` (the batch's training forward is done, the weighted update
is not), then :meth:`~Reward.after_update`, which returns the whole batch's per-sample rewards. A reward that
``pays_late`` pays each action at a later step and says which earlier action each reward pays
(:meth:`~Reward.paid_actions`, a :class:`LateCredit` in ``info["reward_for"]``); tutors ask it, never its name.

The built-ins register the same way (docs/design.md, "Rewards"):

- ``tsrl``: wrong→right +1, right→wrong −1, otherwise ``+0.5 * (p_after(y) − p_before(y))``, comparing the training
  forward the weights apply to with a no-grad forward right after the weighted update;
- ``tsrl_reference``: the same with the reference code's sign on still-wrong samples;
- ``next_visit`` (a variant, not the paper's reward): ``tsrl``'s branches between a sample's training forward at one
  visit and at its next visit, one epoch later, with no forward after the update; it pays late
  (:class:`NextVisitLedger` keeps what that needs);
- ``val_alignment`` (a variant, not the paper's reward): each sample's weighted head gradient against the mean head
  gradient of a trusted batch of validation images, before the update (:func:`val_alignment_reward`);
- ``counterfactual`` (a variant, not the paper's reward): each sample's weight times its gradient's alignment with a
  trusted batch's over the whole Student, the first-order drop of the trusted loss it brings (:class:`CounterfactualReward`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from tsrl_env.influence import trusted_alignment
from tsrl_env.state import PerSampleTensors
from tsrl_env.validation import register, registered

if TYPE_CHECKING:
    from tsrl_env.config import EnvConfig
    from tsrl_env.trainer import StudentTrainer, TrainingBatch


def _flip_reward(
    p_before: torch.Tensor,
    p_after: torch.Tensor,
    correct_before: torch.Tensor,
    correct_after: torch.Tensor,
    still_wrong_sign: float,
) -> torch.Tensor:
    progress = 0.5 * (p_after - p_before)
    reward = torch.where(correct_after, progress, still_wrong_sign * progress)
    reward = torch.where(~correct_before & correct_after, torch.ones_like(reward), reward)
    return torch.where(correct_before & ~correct_after, -torch.ones_like(reward), reward)


def tsrl_reward(
    p_before: torch.Tensor, p_after: torch.Tensor, correct_before: torch.Tensor, correct_after: torch.Tensor
) -> torch.Tensor:
    """wrong→right +1, right→wrong −1, otherwise ``+0.5 * (p_after(y) − p_before(y))``.

    Progress on the true class is rewarded whether the sample is still wrong or already right.
    """
    return _flip_reward(p_before, p_after, correct_before, correct_after, still_wrong_sign=1.0)


def tsrl_reference_reward(
    p_before: torch.Tensor, p_after: torch.Tensor, correct_before: torch.Tensor, correct_after: torch.Tensor
) -> torch.Tensor:
    """As ``tsrl_reward`` but wrong→wrong gives ``−0.5 * (p_after(y) − p_before(y))``, the reference code's sign.

    That sign punishes progress on a still-wrong sample; it is kept to reproduce the reference implementation.
    """
    return _flip_reward(p_before, p_after, correct_before, correct_after, still_wrong_sign=-1.0)


def next_visit_reward(
    p_before: torch.Tensor, p_after: torch.Tensor, correct_before: torch.Tensor, correct_after: torch.Tensor
) -> torch.Tensor:
    """``tsrl_reward``'s branches between two consecutive visits of a sample: a variant, not the paper's reward.

    "Before" is the sample's training forward at the visit where the tutor gave it a weight, "after" its training
    forward at its next visit (the next epoch), so the comparison costs no extra forward pass. The change it
    measures includes every update between the two visits, not only the weighted one, and the reward arrives an
    epoch after the action it belongs to; see :class:`NextVisitLedger`.
    """
    return tsrl_reward(p_before, p_after, correct_before, correct_after)


def cross_entropy_errors(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``softmax(z) − onehot(y)``, the gradient of each sample's cross-entropy with respect to its logits ``z``."""
    return probabilities - F.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)


def head_gradient(errors: torch.Tensor, features: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """The mean over a batch of the per-sample cross-entropy gradients of a linear head, as one matrix.

    ``errors`` are :func:`cross_entropy_errors`, ``(batch, classes)``, and ``features`` the head's inputs,
    ``(batch, features)``. A sample's gradient with respect to the head's weight is ``e ⊗ f`` and with respect to its
    bias ``e``, so the result is ``(classes, features + 1)``, the bias's gradient in the last column, or
    ``(classes, features)`` for a head without bias.
    """
    inputs = _with_bias_input(features) if bias else features
    return errors.T @ inputs / len(errors)


def val_alignment_reward(
    errors: torch.Tensor, features: torch.Tensor, trusted_gradient: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``w_i · cos(g_i, G)``: how far the weighted gradient of sample ``i`` points down a trusted batch's loss.

    ``g_i`` is the gradient of sample ``i``'s cross-entropy with respect to the Student's linear head (weight and
    bias) at the training forward the tutor's weights ``w`` apply to; ``errors`` and ``features`` are that forward's
    ``softmax(z_i) − onehot(y_i)`` and head inputs. ``G`` (``trusted_gradient``) is :func:`head_gradient` of a batch of
    validation images, whose labels are taken as clean, forwarded by the same network. A variant, not the paper's
    reward.

    Derivation: the weighted update descends ``(1/B) Σ_i w_i ℓ_i``; a gradient step of size ``η`` moves the head by
    ``−(η/B) Σ_i w_i g_i``, which changes the trusted batch's loss, to first order, by ``−(η/B) Σ_i w_i <g_i, G>``.
    Sample ``i``'s part in the decrease is thus ``w_i <g_i, G>``. Up to ``−η/B``, ``<g_i, G>`` is the meta-gradient
    of the trusted loss with respect to ``w_i`` that Learning to Reweight (Ren et al., ICML 2018) computes, over the
    whole network, at every step and sets the weights from (its positive part, normalised). Divided by ``‖g_i‖ ‖G‖`` it
    becomes ``w_i cos(g_i, G)``, in [−1, 1] for ``w_i`` in [0, 1]: the sample's normalised first-order contribution
    to decreasing the trusted batch's loss. Here it is a reward, so the tutor learns a policy that acts on the state
    and carries to new Students instead of solving for the weights at every step; and it depends on the action, as a
    policy gradient needs (a weight of 0 earns 0 whatever the sample). It is first order, ignores the backbone's
    gradient, and treats the optimiser as plain gradient descent (Adam rescales each coordinate).

    For a linear head ``g_i = e_i ⊗ [f_i; 1]``, so ``<g_i, G>_F = e_iᵀ G [f_i; 1]`` and ``‖g_i‖ = ‖e_i‖ ‖[f_i; 1]‖``:
    the whole batch takes a matrix product and row norms, with no autograd and no per-sample loop. A head without
    bias is recognised by ``trusted_gradient`` having ``features`` columns rather than ``features + 1``. A sample or
    a trusted batch with a zero gradient gets 0.
    """
    width = features.shape[1]
    if trusted_gradient.shape[1] not in (width, width + 1):
        raise ValueError(
            f"trusted_gradient must have {width + 1} columns (the head's weight and bias gradients) or {width} (no bias) "
            f"for {width} features, got shape {tuple(trusted_gradient.shape)}; build it with head_gradient"
        )
    inputs = _with_bias_input(features) if trusted_gradient.shape[1] == width + 1 else features
    dots = ((errors @ trusted_gradient) * inputs).sum(dim=1)
    norms = errors.norm(dim=1) * inputs.norm(dim=1) * trusted_gradient.norm()
    # A zero norm comes with a zero dot product: reward 0. Rounding can push |cos| a hair past 1.
    cosines = (dots / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp(-1.0, 1.0)
    return weights * cosines


def _with_bias_input(features: torch.Tensor) -> torch.Tensor:
    """``[f; 1]`` per row: the bias is a weight on a constant input."""
    return torch.cat([features, features.new_ones(len(features), 1)], dim=1)


class NextVisitLedger(PerSampleTensors):
    """What the ``next_visit`` reward remembers of each training sample between two visits, as tensors by sample id.

    At every tutored visit of a sample, :meth:`visit` pays the reward of the transition from the sample's previous
    tutored visit (where the tutor chose its last weight) to this one, then records this visit as the start of the
    next transition. A sample with no earlier tutored visit (the first tutored epoch, whose previous visits were
    warm-up visits with weight 1, chosen by nobody) gets reward 0 and no transition. The actions of the last epoch
    of an episode are never paid: the episode ends before their samples come back.

    Per sample it holds the probability of the true class and the correctness at the last tutored visit, the index
    of the transition (action) taken there, and the weight given: 17 bytes, whatever the state width.
    """

    NO_TRANSITION = -1
    tensor_names = ("p_true", "correct", "transition", "weight")

    def __init__(self, num_samples: int, device: torch.device | str = "cpu") -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = num_samples
        self.p_true = torch.zeros(num_samples, device=device)
        self.correct = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.transition = torch.full((num_samples,), self.NO_TRANSITION, dtype=torch.int64, device=device)
        self.weight = torch.full((num_samples,), float("nan"), device=device)

    def visit(
        self,
        ids: torch.Tensor,
        p_true: torch.Tensor,
        correct: torch.Tensor,
        weights: torch.Tensor,
        transitions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pay the samples ``ids`` for their previous transition, then record this visit as the next one's start.

        ``p_true`` and ``correct`` are this visit's training-forward predictions, ``weights`` the tutor's weights for
        it and ``transitions`` the index this visit's action gets (unique per transition, non-negative). ``ids`` must
        be distinct. Returns the rewards, and for each the index and weight of the earlier action it belongs to
        (``NO_TRANSITION`` and NaN, with reward 0, where there is none).
        """
        paid_transition = self.transition[ids]
        paid_weight = self.weight[ids]
        rewards = next_visit_reward(self.p_true[ids], p_true, self.correct[ids], correct)
        rewards = torch.where(paid_transition != self.NO_TRANSITION, rewards, torch.zeros_like(rewards))
        self.p_true[ids] = p_true.to(self.p_true.dtype)
        self.correct[ids] = correct
        self.transition[ids] = transitions.to(torch.int64)
        self.weight[ids] = weights.to(self.weight.dtype)
        return rewards, paid_transition, paid_weight


@dataclass(frozen=True)
class LateCredit:
    """Which earlier action each per-sample reward of one step pays, for a reward that pays late (``info["reward_for"]``).

    One entry per row of the step's batch: the epoch, step and slot (row of its batch) of the action the row's reward
    pays, that action's weight and the reward; -1 (weight NaN, reward 0) where the reward pays no action (a sample's
    first tutored visit). :meth:`paid` keeps the rows that pay one.
    """

    epoch: np.ndarray
    step: np.ndarray
    slot: np.ndarray
    weight: np.ndarray
    reward: np.ndarray

    def paid(self) -> LateCredit:
        """The rows whose reward pays an earlier action."""
        rows = self.epoch >= 0
        return LateCredit(self.epoch[rows], self.step[rows], self.slot[rows], self.weight[rows], self.reward[rows])


class Reward:
    """A tutor reward: one reward per sample of each tutored step. Register a subclass with :func:`register_reward`.

    The env builds its reward once, as ``cls(config, trainer)`` (kept as ``self.config`` and ``self.trainer``, the
    :class:`~tsrl_env.trainer.StudentTrainer`); at each tutored step it calls :meth:`before_update` and, after the
    weighted update, :meth:`after_update`, which returns the whole batch's rewards. ``batch`` is a
    :class:`~tsrl_env.trainer.TrainingBatch` and ``weights`` the whole batch's weights, on the device. In a process
    group each process holds its rows of the batch; :meth:`StudentTrainer.whole_batch
    <tsrl_env.trainer.StudentTrainer.whole_batch>` gathers per-row rewards into the whole batch's.
    """

    pays_late = False
    """Whether a step's rewards pay actions of earlier steps (then :meth:`paid_actions` says which)."""

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        self.config = config
        self.trainer = trainer

    def reset(self, np_random: np.random.Generator) -> None:
        """A new episode (a new Student) starts: forget the last one; draw any seed from the episode RNG ``np_random``."""

    def before_update(self, batch: TrainingBatch, weights: torch.Tensor) -> None:
        """What the reward needs from the network the weights apply to, before the update changes it."""

    def after_update(self, batch: TrainingBatch, weights: torch.Tensor) -> torch.Tensor:
        """The whole batch's per-sample rewards, shape ``(batch_size,)``, after the weighted update."""
        raise NotImplementedError

    def paid_actions(self) -> LateCredit:
        """For a reward that pays late: which earlier action each reward of the last :meth:`after_update` pays."""
        raise TypeError(f"{type(self).__name__} pays each step's own actions (pays_late is False)")

    def state_dict(self) -> dict[str, Any]:
        """What the reward needs to continue an episode from an epoch start (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""


class TsrlReward(Reward):
    """The paper's reward: the batch's predictions right after the weighted update against those of its training
    forward (one no-grad forward, BatchNorm statistics frozen); see :func:`tsrl_reward`."""

    still_wrong_sign = 1.0

    def after_update(self, batch: TrainingBatch, weights: torch.Tensor) -> torch.Tensor:
        logits_after, _ = self.trainer.frozen_forward(batch.images)
        p_after = logits_after.softmax(dim=1).gather(1, batch.labels.unsqueeze(1)).squeeze(1)
        correct_after = logits_after.argmax(dim=1) == batch.labels
        rewards = _flip_reward(batch.p_true, p_after, batch.correct, correct_after, self.still_wrong_sign)
        return self.trainer.whole_batch(rewards, kind="rewards")


class TsrlReferenceReward(TsrlReward):
    """:class:`TsrlReward` with the reference code's sign on still-wrong samples; see :func:`tsrl_reference_reward`."""

    still_wrong_sign = -1.0


class NextVisitReward(Reward):
    """``tsrl``'s branches between a sample's consecutive tutored visits, paid at the later one (:class:`NextVisitLedger`).

    It runs no forward after the update. The first tutored epoch pays nothing (no earlier tutored action) and the
    last epoch's actions are never paid; a tutor must credit each reward to the action :meth:`paid_actions` names.
    The ledger is replicated in a process group: every rank pays the whole batch from the gathered predictions.
    """

    pays_late = True

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        super().__init__(config, trainer)
        self.ledger = NextVisitLedger(len(trainer.splits["train"]), trainer.device)
        self._paid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def reset(self, np_random: np.random.Generator) -> None:
        self.ledger = NextVisitLedger(len(self.trainer.splits["train"]), self.trainer.device)

    def after_update(self, batch: TrainingBatch, weights: torch.Tensor) -> torch.Tensor:
        size, steps_per_epoch = self.trainer.batch_size, self.trainer.steps_per_epoch
        first = (batch.epoch * steps_per_epoch + batch.step) * size
        transitions = first + torch.arange(size, device=weights.device)
        rewards, *paid_for = self.ledger.visit(batch.ids, batch.batch_p_true, batch.batch_correct, weights, transitions)
        self._paid = (rewards, *paid_for)
        return rewards

    def paid_actions(self) -> LateCredit:
        """Which action each reward of the last step pays, decoded from the ledger's transition numbers
        ``(epoch * steps_per_epoch + step) * batch_size + slot``."""
        assert self._paid is not None, "after_update() has not run yet"
        rewards, transitions, weights = (tensor.cpu().numpy() for tensor in self._paid)
        paid = transitions >= 0
        step_index, slot = np.divmod(transitions, self.trainer.batch_size)
        epoch, step = np.divmod(step_index, self.trainer.steps_per_epoch)
        none = np.int64(-1)
        return LateCredit(np.where(paid, epoch, none), np.where(paid, step, none), np.where(paid, slot, none), weights, rewards)

    def state_dict(self) -> dict[str, Any]:
        return {"ledger": self.ledger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ledger.load_state_dict(state["ledger"])


class TrustedBatchReward(Reward):
    """What the rewards that read a trusted batch share: ``trusted_batch_size`` validation images (clean in every
    source: only training labels are flipped), drawn afresh at every step with a generator of their own (seeded from the
    episode RNG), so that a run's data order and augmentation are those of a run with the same seed under any other
    reward."""

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        super().__init__(config, trainer)
        val_size = len(trainer.splits["val"])
        if val_size < config.trusted_batch_size:
            raise ValueError(
                f"trusted_batch_size {config.trusted_batch_size} exceeds the {val_size} validation samples of "
                f"{config.dataset!r}; set it to at most {val_size}"
            )
        self.generator = torch.Generator()

    def reset(self, np_random: np.random.Generator) -> None:
        self.generator.manual_seed(int(np_random.integers(0, 2**31 - 1)))

    def trusted_ids(self) -> torch.Tensor:
        """The next trusted batch's validation ids (CPU), the whole batch's in every process."""
        return torch.randperm(len(self.trainer.splits["val"]), generator=self.generator)[: self.config.trusted_batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class ValAlignmentReward(TrustedBatchReward):
    """Each sample's weighted head gradient against a trusted batch's (:func:`val_alignment_reward`), before the update.

    The trusted batch is forwarded without gradients, BatchNorm statistics frozen.
    """

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        super().__init__(config, trainer)
        # Raises now, before any training, if the head is not linear.
        self.head_has_bias = trainer.student.classifier.bias is not None
        self._trusted_gradient: torch.Tensor | None = None

    def before_update(self, batch: TrainingBatch, weights: torch.Tensor) -> None:
        # The batch's head gradients are those of the network its training forward ran: take the trusted one now too.
        size = self.config.trusted_batch_size
        ids = self.trusted_ids()[self.trainer.group.shard(size)]
        logits, features = self.trainer.frozen_forward(self.trainer.images_of("val", ids))
        labels = self.trainer.splits["val"].labels[ids.to(self.trainer.device)]
        errors = cross_entropy_errors(logits.softmax(dim=1), labels)
        errors, features = self.trainer.group.all_gather_rows(errors, features, total=size, kind="rewards")
        self._trusted_gradient = head_gradient(errors, features, bias=self.head_has_bias)

    def after_update(self, batch: TrainingBatch, weights: torch.Tensor) -> torch.Tensor:
        assert self._trusted_gradient is not None, "before_update() has not run"
        errors = cross_entropy_errors(batch.probabilities, batch.labels)
        rewards = val_alignment_reward(errors, batch.features, self._trusted_gradient, weights[self.trainer.rows])
        return self.trainer.whole_batch(rewards, kind="rewards")


class CounterfactualReward(TrustedBatchReward):
    """``w_i * d_i``: each sample's weight times ``d_i = grad l_i . grad L``, the first-order drop of a trusted batch's
    mean loss ``L`` that a plain SGD step on the sample would bring, over the parameters that train (the whole Student
    unless its backbone is frozen; :func:`~tsrl_env.influence.trusted_alignment`, Learning to Reweight's quantity),
    before the update.

    Linear in the weight, so its derivative with respect to a sample's weight is ``d_i``: positive where the sample's
    gradient helps the trusted set, negative where it hurts it (as a flipped label's tends to). Its scale follows the
    gradients' and shrinks as the Student learns; a tutor that standardises rewards per update (``TutorPPO``) sees none of
    that. About two training steps more per step: one backward of the trusted batch and one Jacobian-vector product of
    the training batch. It weighs the whole batch in one process: a Student trained by a process group is refused.
    """

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        super().__init__(config, trainer)
        if trainer.group.world_size > 1:
            raise ValueError(
                "the counterfactual reward takes every sample's gradient in one process; train the Student without a "
                "process group, or choose another reward"
            )
        self._alignment: torch.Tensor | None = None

    def before_update(self, batch: TrainingBatch, weights: torch.Tensor) -> None:
        ids = self.trusted_ids()
        labels = self.trainer.splits["val"].labels[ids.to(self.trainer.device)]
        trusted_images = self.trainer.images_of("val", ids)
        student = self.trainer.student
        # A frozen backbone does not move: the drop is that of a step of the parameters that train.
        moved = [name for name, p in student.named_parameters() if p.requires_grad] if self.config.frozen_backbone else None
        self._alignment = trusted_alignment(student, batch.images, batch.labels, trusted_images, labels, moved=moved)

    def after_update(self, batch: TrainingBatch, weights: torch.Tensor) -> torch.Tensor:
        assert self._alignment is not None, "before_update() has not run"
        return weights * self._alignment


REWARDS: dict[str, type[Reward]] = {}
"""Every reward the env accepts in its ``reward`` setting, by name."""

REWARD_NAMES = REWARDS.keys()
"""The names of :data:`REWARDS`, a live view (rewards registered later are in it)."""


def register_reward(name: str, cls: type[Reward]) -> None:
    """Make ``cls`` the reward ``name``, for the env setting ``reward``."""
    if not (isinstance(cls, type) and issubclass(cls, Reward)):
        raise TypeError(f"a reward must be a subclass of tsrl_env.Reward, got {cls!r}")
    register(REWARDS, name, cls, "reward")


def reward_class(name: str) -> type[Reward]:
    """The reward registered as ``name``; an unknown name raises a ValueError listing the registered ones."""
    return registered(REWARDS, name, "reward")


for _name, _cls in {
    "tsrl": TsrlReward,
    "tsrl_reference": TsrlReferenceReward,
    "next_visit": NextVisitReward,
    "val_alignment": ValAlignmentReward,
    "counterfactual": CounterfactualReward,
}.items():
    register_reward(_name, _cls)
