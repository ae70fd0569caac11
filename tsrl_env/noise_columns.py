"""State columns that look for wrong labels, from the label-noise literature.

Each is a registered :class:`~tsrl_env.state.StateColumn`: add its name to the env setting ``state_columns``. A column
whose *low* values point at a wrong label says so with ``low_flags_noise = True`` (the records' noise-detection
tables read it the right way round); for the others, high values do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tsrl_env.config import EnvConfig
from tsrl_env.state import PerSampleTensors, SampleHistory, StateColumn, register_state_column
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


register_state_column("area_under_margin", AreaUnderMargin)
register_state_column("knn_disagreement", KnnLabelDisagreement)
