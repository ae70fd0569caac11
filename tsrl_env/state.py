"""Per-sample learning history and the state vectors the tutor observes (DESIGN §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

COUNTERS = ("learned", "forgotten")
"""Transition counters a sample's state can include.

``learned`` counts wrong→right transitions between consecutive visits: the reference implementation's
"forgetting" counter. ``forgotten`` counts right→wrong transitions: forgetting events in the sense of
Toneva et al. (ICLR 2019).
"""


class SampleHistory:
    """Learning history of every training sample, held as tensors indexed by sample id.

    Each visit of a sample (one Student forward on it) updates its exponential moving average of the
    cross-entropy loss, its transition counters and its last correctness, all in one vectorised call.
    A transition needs two visits: the first visit of a sample, right or wrong, counts as no event (its
    "last visit correct" flag starts True, and the first visit sets it).
    """

    def __init__(self, num_samples: int, ema_alpha: float = 0.1, device: torch.device | str = "cpu") -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if not 0.0 < ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must lie in (0, 1], got {ema_alpha}")
        self.num_samples = num_samples
        self.ema_alpha = ema_alpha
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

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in ("ema_loss", "learned", "forgotten", "last_correct", "visits")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)


@dataclass(frozen=True)
class StateLayout:
    """Where each quantity sits in a state row, so that curricula and analyses can read observations.

    ``features`` is the slice of Student features; the other fields are column indices.
    """

    features: slice
    ema_loss: int
    counters: dict[str, int]
    p_fake: int
    wrong: int
    correct: int

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


class StateBuilder:
    """Builds the per-sample state ``[f, tanh(ema_loss), tanh(counter / 10) ..., p_fake, onehot(correct)]``.

    With ``feature_dim`` set, the Student's features are mapped to that width by a fixed random Gaussian
    projection (seeded, scaled by 1/sqrt(width) so that norms are preserved in expectation), so the
    observation stays the same size whatever the backbone.
    """

    def __init__(
        self,
        backbone_features: int,
        feature_dim: int | None = None,
        counters: tuple[str, ...] = ("learned",),
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        unknown = [name for name in counters if name not in COUNTERS]
        if unknown:
            raise ValueError(f"unknown state counter(s) {unknown}; accepted: {', '.join(COUNTERS)}")
        if feature_dim is not None and feature_dim < 1:
            raise ValueError(f"state_feature_dim must be a positive integer or None, got {feature_dim}")
        self.counters = tuple(counters)
        self.projection: torch.Tensor | None = None
        if feature_dim is not None:
            generator = torch.Generator().manual_seed(seed)
            projection = torch.randn(backbone_features, feature_dim, generator=generator) / math.sqrt(feature_dim)
            self.projection = projection.to(device)
        self.feature_dim = backbone_features if feature_dim is None else feature_dim
        self.state_dim = self.feature_dim + 1 + len(self.counters) + 1 + 2
        width = self.feature_dim
        self.layout = StateLayout(
            features=slice(0, width),
            ema_loss=width,
            counters={name: width + 1 + index for index, name in enumerate(self.counters)},
            p_fake=self.state_dim - 3,
            wrong=self.state_dim - 2,
            correct=self.state_dim - 1,
        )

    def build(
        self,
        features: torch.Tensor,
        ids: torch.Tensor,
        history: SampleHistory,
        p_fake: torch.Tensor,
        correct: torch.Tensor,
    ) -> torch.Tensor:
        """States of a batch, shape ``(batch, state_dim)``; ``features`` must be detached."""
        if self.projection is not None:
            features = features @ self.projection
        columns = [features, torch.tanh(history.ema_loss[ids]).unsqueeze(1)]
        columns += [torch.tanh(history.counter(name)[ids].float() / 10.0).unsqueeze(1) for name in self.counters]
        columns += [p_fake.unsqueeze(1), (~correct).float().unsqueeze(1), correct.float().unsqueeze(1)]
        return torch.cat(columns, dim=1)
