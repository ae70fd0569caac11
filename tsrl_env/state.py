"""The per-sample state the tutor observes: the learning history of every sample and the registered state columns.

A state row is the concatenation of the columns named by the env setting ``state_columns``, in that order. Each name
is a :class:`StateColumn` registered with :func:`register_state_column`; the built-ins (``features``, ``ema_loss``,
``counters``, ``p_fake``, ``correctness``, the default list) register the same way. :class:`StateLayout` says where
each column sits in a row, so that curricula and analyses read observations by name (docs/design.md, "State columns").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from tsrl_env.student import FAKE_CLASS
from tsrl_env.validation import ema_alpha_setting, register, registered

if TYPE_CHECKING:
    from tsrl_env.config import EnvConfig
    from tsrl_env.trainer import StudentTrainer, TrainingBatch

COUNTERS = ("learned", "forgotten")
"""Transition counters a sample's history keeps (and the ``counters`` column shows those of ``state_counters``).

``learned`` counts wrong→right transitions between consecutive visits: the reference implementation's
"forgetting" counter. ``forgotten`` counts right→wrong transitions: forgetting events in the sense of
Toneva et al. (ICLR 2019).
"""


class PerSampleTensors:
    """Tensors indexed by sample id, saved and restored by name (``tensor_names``) for epoch-start states."""

    tensor_names: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in self.tensor_names}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)


class SampleHistory(PerSampleTensors):
    """Learning history of every training sample, held as tensors indexed by sample id.

    Each visit of a sample (one Student forward on it) updates its exponential moving average of the
    cross-entropy loss, its transition counters and its last correctness, all in one vectorised call.
    A transition needs two visits: the first visit of a sample, right or wrong, counts as no event (its
    "last visit correct" flag starts True, and the first visit sets it).
    """

    tensor_names = ("ema_loss", "learned", "forgotten", "last_correct", "visits")

    def __init__(self, num_samples: int, ema_alpha: float = 0.1, device: torch.device | str = "cpu") -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = num_samples
        self.ema_alpha = ema_alpha_setting(ema_alpha)
        self.ema_loss = torch.full((num_samples,), math.log(2.0), device=device)
        self.learned = torch.zeros(num_samples, dtype=torch.int32, device=device)
        self.forgotten = torch.zeros(num_samples, dtype=torch.int32, device=device)
        self.last_correct = torch.ones(num_samples, dtype=torch.bool, device=device)
        self.visits = torch.zeros(num_samples, dtype=torch.int32, device=device)

    def observe(self, ids: torch.Tensor, losses: torch.Tensor, correct: torch.Tensor) -> None:
        """Record one visit of the samples ``ids`` with their per-sample losses and correctness.

        ``ids`` must lie in ``[0, num_samples)``. That is checked for ids on the CPU; on an accelerator the check would
        make the host wait for the device at every step (before the next forward could be queued), so there the
        caller's ids (the environment's own epoch order) are trusted.
        """
        if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_samples):
            raise IndexError(f"sample ids must lie in [0, {self.num_samples}), got range [{int(ids.min())}, {int(ids.max())}]")
        was_correct = self.last_correct[ids]
        seen_before = self.visits[ids] > 0
        self.learned[ids] += (seen_before & ~was_correct & correct).int()
        self.forgotten[ids] += (seen_before & was_correct & ~correct).int()
        self.ema_loss[ids] = (1.0 - self.ema_alpha) * self.ema_loss[ids] + self.ema_alpha * losses.detach().float()
        self.last_correct[ids] = correct
        self.visits[ids] += 1

    def counter(self, name: str) -> torch.Tensor:
        if name not in COUNTERS:
            raise ValueError(f"unknown counter {name!r}; accepted: {', '.join(COUNTERS)}")
        return getattr(self, name)


class StateColumn:
    """One named group of columns of the per-sample state; register a subclass with :func:`register_state_column`.

    The env builds each column of its ``state_columns`` once, as ``cls(config, trainer)``, and at every training
    forward calls :meth:`values` with the batch (this process's rows of it) and the samples' history, updated with the
    batch already. ``width`` is the number of columns; ``part_names`` optionally names each of them, so that
    :meth:`StateLayout.values` reads one. A column with per-sample memory of its own forgets it in :meth:`reset` and
    carries it across epoch-start checkpoints in :meth:`state_dict`.
    """

    width = 1
    part_names: tuple[str, ...] = ()

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        """Nothing to set up by default; a column that needs settings or sizes reads them here."""

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        """The column's values for the batch's rows, shape ``(rows, width)``, on the batch's device."""
        raise NotImplementedError

    def reset(self) -> None:
        """A new episode (a new Student) starts."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What the column needs to continue an episode from an epoch start (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from :meth:`state_dict`."""


class FeaturesColumn(StateColumn):
    """The Student's penultimate features, projected to ``state_feature_dim`` when set.

    The projection is a fixed random Gaussian matrix seeded by the env setting ``seed`` (scaled by 1/sqrt(width), so
    that norms are preserved in expectation): the observation keeps its size whatever the backbone.
    """

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        backbone_features = trainer.student.num_features
        self.projection: torch.Tensor | None = None
        if config.state_feature_dim is not None:
            generator = torch.Generator().manual_seed(config.seed)
            projection = torch.randn(backbone_features, config.state_feature_dim, generator=generator)
            self.projection = (projection / math.sqrt(config.state_feature_dim)).to(trainer.device)
        self.width = backbone_features if config.state_feature_dim is None else config.state_feature_dim

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        return batch.features if self.projection is None else batch.features @ self.projection


class EmaLossColumn(StateColumn):
    """``tanh(EMA of the sample's cross-entropy)``, smoothed by the env setting ``ema_alpha``."""

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        return torch.tanh(history.ema_loss[batch.row_ids]).unsqueeze(1)


class CountersColumn(StateColumn):
    """``tanh(count / 10)`` of each transition counter of the env setting ``state_counters`` (see :data:`COUNTERS`)."""

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        self.part_names = tuple(config.state_counters)
        self.width = len(self.part_names)

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        counts = [history.counter(name)[batch.row_ids].float() / 10.0 for name in self.part_names]
        return torch.cat([torch.tanh(count).unsqueeze(1) for count in counts], dim=1)


class PFakeColumn(StateColumn):
    """The Student's softmax probability of the class "fake"."""

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        return batch.probabilities[:, FAKE_CLASS].unsqueeze(1)


class CorrectnessColumn(StateColumn):
    """``onehot(correct)``: 1 in ``wrong`` or in ``correct``, whether the Student's argmax equals the label."""

    width = 2
    part_names = ("wrong", "correct")

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        return torch.cat([(~batch.correct).float().unsqueeze(1), batch.correct.float().unsqueeze(1)], dim=1)


STATE_COLUMNS: dict[str, type[StateColumn]] = {}
"""Every state column the env accepts in ``state_columns``, by name."""

DEFAULT_STATE_COLUMNS = ("features", "ema_loss", "counters", "p_fake", "correctness")
"""The reference state ``[f, tanh(ema_loss), tanh(counter / 10)..., p_fake, onehot(correct)]``."""


def register_state_column(name: str, cls: type[StateColumn]) -> None:
    """Make ``cls`` the state column ``name``, for the env setting ``state_columns``."""
    if not (isinstance(cls, type) and issubclass(cls, StateColumn)):
        raise TypeError(f"a state column must be a subclass of tsrl_env.StateColumn, got {cls!r}")
    register(STATE_COLUMNS, name, cls, "state column")


for _name, _cls in zip(
    DEFAULT_STATE_COLUMNS, (FeaturesColumn, EmaLossColumn, CountersColumn, PFakeColumn, CorrectnessColumn), strict=True
):
    register_state_column(_name, _cls)


@dataclass(frozen=True)
class StateLayout:
    """Where each column sits in a state row, so that curricula and analyses read observations by name.

    ``columns`` maps each column's name to its slice of the row; ``parts`` maps the names of single columns inside a
    wider one (the counters, ``wrong`` and ``correct``) to their index.
    """

    columns: dict[str, slice]
    parts: dict[str, int]

    @classmethod
    def of(cls, columns: dict[str, StateColumn]) -> StateLayout:
        slices, parts, start = {}, {}, 0
        for name, column in columns.items():
            slices[name] = slice(start, start + column.width)
            parts.update({part: start + index for index, part in enumerate(column.part_names)})
            start += column.width
        return cls(slices, parts)

    @property
    def width(self) -> int:
        """Values per state row."""
        return max((where.stop for where in self.columns.values()), default=0)

    def values(self, states: np.ndarray, name: str) -> np.ndarray:
        """The column ``name`` (a column or a part of one) of state rows: shape ``states.shape[:-1]`` for a single
        column, ``states.shape[:-1] + (width,)`` for a wider one."""
        if name in self.parts:
            return states[..., self.parts[name]]
        where = self._slice(name)
        return states[..., where.start] if where.stop - where.start == 1 else states[..., where]

    @property
    def features(self) -> slice:
        return self._slice("features")

    @property
    def ema_loss(self) -> int:
        return self._slice("ema_loss").start

    @property
    def counters(self) -> dict[str, int]:
        """Index of each counter in the row, by counter name."""
        where = self._slice("counters")
        return {name: index for name, index in self.parts.items() if where.start <= index < where.stop}

    @property
    def p_fake(self) -> int:
        return self._slice("p_fake").start

    @property
    def wrong(self) -> int:
        return self._part("wrong")

    @property
    def correct(self) -> int:
        return self._part("correct")

    def ema_loss_of(self, states: np.ndarray) -> np.ndarray:
        """The EMA losses of state rows (undoing the tanh squashing), shape ``states.shape[:-1]``."""
        return np.arctanh(np.clip(states[..., self.ema_loss], 0.0, 1.0 - 1e-7))

    def correct_of(self, states: np.ndarray) -> np.ndarray:
        """Whether the Student got each row's sample right in the forward that built the state."""
        return states[..., self.correct] > 0.5

    def p_label_of(self, states: np.ndarray) -> np.ndarray:
        """The Student's probability for each sample's training label.

        The label is not part of the state, but with two classes it follows from correctness: a correct
        prediction means the label is the more probable class.
        """
        p_fake = states[..., self.p_fake]
        p_top = np.maximum(p_fake, 1.0 - p_fake)
        return np.where(self.correct_of(states), p_top, 1.0 - p_top)

    def _slice(self, name: str) -> slice:
        if name not in self.columns:
            raise ValueError(f"the state has no column {name!r}; its columns: {', '.join([*self.columns, *self.parts])}")
        return self.columns[name]

    def _part(self, name: str) -> int:
        if name not in self.parts:
            raise ValueError(f"the state has no column {name!r}; its columns: {', '.join([*self.columns, *self.parts])}")
        return self.parts[name]


class StateBuilder:
    """Builds the state rows of a batch from the env's columns, in the order of ``state_columns``."""

    def __init__(self, names: Sequence[str], config: EnvConfig, trainer: StudentTrainer) -> None:
        self.columns = {name: state_column_class(name)(config, trainer) for name in names}
        self.layout = StateLayout.of(self.columns)
        self.state_dim = self.layout.width

    def build(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        """States of the batch's rows, shape ``(rows, state_dim)``."""
        return torch.cat([column.values(batch, history) for column in self.columns.values()], dim=1)

    def reset(self) -> None:
        for column in self.columns.values():
            column.reset()

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: column.state_dict() for name, column in self.columns.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, column in self.columns.items():
            column.load_state_dict(state[name])


def state_column_class(name: str) -> type[StateColumn]:
    """The state column registered as ``name``; an unknown name raises a ValueError listing the registered ones."""
    return registered(STATE_COLUMNS, name, "state column")
