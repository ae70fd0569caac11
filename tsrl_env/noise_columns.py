"""State columns that look for wrong labels, from the label-noise literature.

Each is a registered :class:`~tsrl_env.state.StateColumn`: add its name to the env setting ``state_columns``. A column
whose *low* values point at a wrong label says so with ``low_flags_noise = True`` (the records' noise-detection
tables read it the right way round); for the others, high values do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tsrl_env.state import PerSampleTensors, SampleHistory, StateColumn, register_state_column
from tsrl_env.student import FAKE_CLASS

if TYPE_CHECKING:
    from tsrl_env.config import EnvConfig
    from tsrl_env.trainer import StudentTrainer, TrainingBatch


class _PerSampleMemoryColumn(PerSampleTensors, StateColumn):
    """A column with per-sample memory (``tensor_names``): forgotten with each new Student, kept in checkpoints."""

    def reset(self) -> None:
        for name in self.tensor_names:
            getattr(self, name).zero_()


class AreaUnderMargin(_PerSampleMemoryColumn):
    """The sample's margin, averaged over its visits (Pleiss et al., "Identifying Mislabeled Data using the Area
    under the Margin Ranking", NeurIPS 2020): the logit of its training label minus the largest other logit, at each
    training forward. A mislabelled sample is pulled towards its label only by memorisation and against it by every
    clean neighbour, so its margin stays low for longer than a clean sample's. Squashed as ``tanh(AUM / 4)``.
    """

    low_flags_noise = True
    tensor_names = ("sums", "visits")

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        size = len(trainer.splits["train"])
        self.sums = torch.zeros(size, device=trainer.device)
        self.visits = torch.zeros(size, device=trainer.device)

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        # With softmax probabilities the logit difference is log(p_label / max other p); it needs no logits.
        probabilities = batch.probabilities.clamp_min(1e-12)
        label = probabilities.gather(1, batch.labels.unsqueeze(1)).squeeze(1)
        others = probabilities.scatter(1, batch.labels.unsqueeze(1), 0.0).amax(dim=1).clamp_min(1e-12)
        self.sums[batch.row_ids] += torch.log(label) - torch.log(others)
        self.visits[batch.row_ids] += 1
        return torch.tanh(self.sums[batch.row_ids] / self.visits[batch.row_ids] / 4.0).unsqueeze(1)


class KnnLabelDisagreement(_PerSampleMemoryColumn):
    """The share of the sample's ``k`` nearest neighbours in the Student's feature space whose training label differs
    from its own (Bahri, Jiang & Gupta, "Deep k-NN for Noisy Labels", ICML 2020). Neighbours come from a memory bank
    of every training sample's normalised features at its last visit (cosine similarity, the sample itself and samples
    not yet visited left out): one (rows x training samples) matrix product per step. ``k`` = 10.
    """

    k = 10
    tensor_names = ("bank", "seen")

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        train = trainer.splits["train"]
        self.labels = train.labels.to(trainer.device)
        self.bank = torch.zeros(len(train), trainer.student.num_features, device=trainer.device)
        self.seen = torch.zeros(len(train), dtype=torch.bool, device=trainer.device)

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        features = F.normalize(batch.features.float(), dim=1)
        self.bank[batch.row_ids] = features
        self.seen[batch.row_ids] = True
        similarity = features @ self.bank.T
        similarity[:, ~self.seen] = -math.inf
        similarity[torch.arange(len(batch.row_ids), device=similarity.device), batch.row_ids] = -math.inf
        available = int(self.seen.sum()) - 1
        if available < 1:
            return torch.full((len(batch.row_ids), 1), 0.5, device=features.device)
        neighbours = similarity.topk(min(self.k, available), dim=1).indices
        disagree = (self.labels[neighbours] != batch.labels.unsqueeze(1)).float().mean(dim=1)
        return disagree.unsqueeze(1)


class TrustedProbe(StateColumn):
    """Agreement of the sample's training label with a linear probe fitted on a small trusted clean set: the signed
    log-odds the probe gives the label, squashed as ``tanh(log-odds / 4)``.

    The trusted set is the validation split (clean in every source here: only training labels are flipped). At the
    first batch of every epoch the probe, an L2-regularised logistic regression on the Student's standardised features
    of the trusted images, is fitted again; a training sample whose label the probe, which never saw a wrong label,
    calls unlikely is suspect. The trusted forward runs in training mode with BatchNorm statistics frozen, in batches
    of the training batch size, as the training forward normalises, and leaves no trace in the Student: about 7% of an
    epoch's compute at 600 trusted images and 3,000 training images. The idea is that of a trusted-set probe in the
    label-noise literature (e.g. Hendrycks et al., "Using Trusted Data to Train Deep Networks on Labels Corrupted by
    Severe Noise", NeurIPS 2018), applied to the Student's current features.
    """

    low_flags_noise = True
    trusted_split = "val"
    l2 = 1e-2
    fit_iterations = 50

    def __init__(self, config: EnvConfig, trainer: StudentTrainer) -> None:
        if self.trusted_split not in trainer.splits:
            raise ValueError(
                f"the trusted_probe column needs a {self.trusted_split!r} split of clean labels; "
                f"the dataset has {list(trainer.splits)}"
            )
        self.trainer = trainer
        self.weight = torch.zeros(trainer.student.num_features, device=trainer.device)
        self.bias = torch.zeros((), device=trainer.device)

    def values(self, batch: TrainingBatch, history: SampleHistory) -> torch.Tensor:
        if batch.step == 0:
            self._fit()
        log_odds_fake = batch.features.float() @ self.weight + self.bias
        signed = torch.where(batch.labels == FAKE_CLASS, log_odds_fake, -log_odds_fake)
        return torch.tanh(signed / 4.0).unsqueeze(1)

    def reset(self) -> None:
        self.weight.zero_()
        self.bias.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.clone(), "bias": self.bias.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weight.copy_(state["weight"])
        self.bias.copy_(state["bias"])

    def _fit(self) -> None:
        features, labels = self._trusted_features()
        mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
        standardised = (features - mean) / std
        weight = torch.zeros(features.shape[1], device=features.device, requires_grad=True)
        bias = torch.zeros((), device=features.device, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=self.fit_iterations, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            loss = (
                F.binary_cross_entropy_with_logits(standardised @ weight + bias, labels) + 0.5 * self.l2 * weight.square().sum()
            )
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(objective)
        # Folded back to act on raw features.
        self.weight = (weight.detach() / std).clone()
        self.bias = (bias.detach() - (mean * self.weight).sum()).clone()

    def _trusted_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        trusted = self.trainer.splits[self.trusted_split]
        ids = torch.arange(len(trusted))
        features = [
            self.trainer.frozen_forward(self.trainer.images_of(self.trusted_split, chunk))[1].float()
            for chunk in ids.split(self.trainer.batch_size)
        ]
        return torch.cat(features), (trusted.labels == FAKE_CLASS).float()


register_state_column("area_under_margin", AreaUnderMargin)
register_state_column("knn_disagreement", KnnLabelDisagreement)
register_state_column("trusted_probe", TrustedProbe)
