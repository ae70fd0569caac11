"""Label-noise models: which training labels are flipped, and after which real process.

A model turns the training split's videos (clean class, manipulation strength) and one uniform draw per frame into a
flip mask. The draws are made by the data source (the embedded generator, or :func:`with_label_noise` for files),
from the dataset seed or from a ``noise_seed`` of their own, so a model decides only how the rate ``label_noise`` is
spent:

- ``frame``: every training frame flipped independently, the symmetric "random classification noise" of Angluin and
  Laird (1988, *Learning from noisy examples*). The benchmark's first model. Frames of one video mostly keep their
  label, so a flipped frame's siblings give it away.
- ``video``: a whole video's label flipped. DeepfakeBench (Yan et al., NeurIPS 2023) labels each video in its JSON
  files and every frame inherits that label, so a labelling error there is an error on every frame of a video.
- ``class_conditional``: fake videos labelled real, reals never flipped: a forgery that passed as authentic. Noise
  that depends on the class only (Natarajan et al., NeurIPS 2013, *Learning with noisy labels*), one-way here.
- ``instance``: the weakest manipulations labelled real, reals never flipped: a subtle forgery is the one a labeller
  misses. Noise that depends on the sample (Menon et al., Machine Learning 2018, *Learning from binary labels with
  instance-dependent noise*; Chen et al., AAAI 2021, *Beyond class-conditional assumption*). A fake video of strength
  rank ``r = (rank - 1/2) / n_fake`` among the split's ``n_fake`` fake videos (rank 1 the weakest) is flipped with
  probability ``min(1, 2 * label_noise * (1 - r))``: the mean over the fakes is ``label_noise`` up to 0.5, and
  ``1 - 1 / (4 * label_noise)`` above it (the weakest fakes are then always flipped).

The embedded benchmark flips its own labels (``tsrl_env.data.embedded``); :func:`with_label_noise` flips those of a
dataset read from files (DeepfakeBench's ``label_noise`` option), so a tutor can be measured on a user's own frames
against a known truth. Files carry no manipulation strength, so ``instance`` needs the embedded benchmark.

Share of all training labels flipped, at ``label_noise`` = a and ``fake_fraction`` = f: a for ``frame`` and ``video``;
f * a for ``class_conditional``; f * a for ``instance`` up to a = 0.5 (f * (1 - 1/(4a)) above). At the default f = 0.5
the two one-way models flip about half the share of the symmetric ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from tsrl_env.data.base import Dataset
from tsrl_env.validation import register, registered

# Tags the stream of a noise seed, keeping it apart from every content stream of the same number.
_NOISE_STREAM = 0x1AB


@dataclass(frozen=True)
class TrainingVideos:
    """What a noise model sees of the training split: per video its clean class and manipulation strength (0 for a
    real video), and the uniform draws in [0, 1) that decide its flips, one per frame (shape (videos, frames))."""

    fake: np.ndarray
    strengths: np.ndarray
    uniforms: np.ndarray


NoiseModel = Callable[[TrainingVideos, float], np.ndarray]
"""``model(videos, label_noise)``: the bool flip mask of shape (videos, frames)."""

NOISE_MODELS: dict[str, NoiseModel] = {}
"""Every label-noise model the ``noise_model`` setting accepts (embedded benchmark, DeepfakeBench files), by name."""


def register_noise_model(name: str) -> Callable[[NoiseModel], NoiseModel]:
    """Decorator making a function the label-noise model ``name`` (see :data:`NoiseModel`)."""

    def decorator(model: NoiseModel) -> NoiseModel:
        register(NOISE_MODELS, name, model, "noise model")
        return model

    return decorator


def noise_model(name: str) -> NoiseModel:
    """The noise model registered as ``name``; an unknown name raises a ValueError with a did-you-mean."""
    return registered(NOISE_MODELS, name, "noise model")


def seeded_uniforms(noise_seed: int, n_videos: int, n_frames: int) -> np.ndarray:
    """The draws of a ``noise_seed``: uniforms of shape (n_videos, n_frames) from a stream of that seed alone, so they
    do not depend on the images, and one content seed can carry many flip masks."""
    return np.random.default_rng(np.random.SeedSequence([noise_seed, _NOISE_STREAM])).random((n_videos, n_frames))


def _whole_videos(videos: TrainingVideos, flipped: np.ndarray) -> np.ndarray:
    """A per-video decision spread over every frame of the video."""
    return np.repeat(flipped[:, None], videos.uniforms.shape[1], axis=1)


@register_noise_model("frame")
def frame_noise(videos: TrainingVideos, rate: float) -> np.ndarray:
    """Each frame flipped independently with probability ``rate``."""
    return videos.uniforms < rate


@register_noise_model("video")
def video_noise(videos: TrainingVideos, rate: float) -> np.ndarray:
    """Each video's label flipped, on all its frames, with probability ``rate`` (its first frame's draw decides)."""
    return _whole_videos(videos, videos.uniforms[:, 0] < rate)


@register_noise_model("class_conditional")
def class_conditional_noise(videos: TrainingVideos, rate: float) -> np.ndarray:
    """Each fake video labelled real, on all its frames, with probability ``rate``; reals kept."""
    return _whole_videos(videos, videos.fake & (videos.uniforms[:, 0] < rate))


def instance_flip_probability(strengths: np.ndarray, rate: float) -> np.ndarray:
    """The flip probability of fake videos of ``strengths``: ``min(1, 2 * rate * (1 - r))``, ``r`` the mid-rank of the
    strength in [0, 1] (0 the weakest), so that the mean is ``rate`` for ``rate`` up to 0.5."""
    if len(strengths) == 0:
        return np.zeros(0)
    rank = (rankdata(strengths) - 0.5) / len(strengths)
    return np.minimum(1.0, 2.0 * rate * (1.0 - rank))


@register_noise_model("instance")
def instance_noise(videos: TrainingVideos, rate: float) -> np.ndarray:
    """Each fake video labelled real, on all its frames, the more likely the weaker its manipulation; reals kept."""
    probability = np.zeros(len(videos.fake))
    probability[videos.fake] = instance_flip_probability(videos.strengths[videos.fake], rate)
    return _whole_videos(videos, videos.uniforms[:, 0] < probability)


def with_label_noise(dataset: Dataset, label_noise: float, model: str, noise_seed: int) -> Dataset:
    """``dataset`` with its training labels flipped by the noise model ``model`` at rate ``label_noise``, the draws
    those of ``noise_seed`` (one per frame, by video and frame position), the true labels kept (``knows_label_noise``).

    A video is a training group (its frames contiguous or not); a video's class is its first frame's label. Frames
    need no strength unless the model reads one: ``instance`` on a split whose fakes have none is refused. A video's
    draws are those of its position among the training videos as read and of its frames' order: the same files, the
    same reading options (``train_dataset``, ``frame_num``, ``val_fraction`` and its ``seed``, skipped frames) and the
    same ``noise_seed`` give the same flips; changing a reading option may flip other videos.
    """
    train = dataset.splits["train"]
    groups = train.groups.numpy()
    videos, first, video_of = np.unique(groups, return_index=True, return_inverse=True)
    fake = train.clean_labels.numpy()[first] == 1
    strengths = train.strengths.numpy()[first].astype(np.float64)
    if model == "instance" and np.isnan(strengths[fake]).any():
        raise ValueError(
            f"the instance noise model flips the weakest manipulations, and dataset {dataset.name!r} does not know its "
            "fakes' manipulation strengths (files carry none); use noise_model video, class_conditional or frame"
        )
    order = np.argsort(video_of, kind="stable")
    position = np.empty(len(groups), dtype=np.int64)
    starts = np.searchsorted(video_of[order], np.arange(len(videos)))
    position[order] = np.arange(len(groups)) - starts[video_of[order]]
    uniforms = seeded_uniforms(noise_seed, len(videos), int(position.max()) + 1)
    flipped = noise_model(model)(TrainingVideos(fake=fake, strengths=strengths, uniforms=uniforms), label_noise)
    flipped_frames = torch.from_numpy(flipped[video_of, position])
    labels = torch.where(flipped_frames, 1 - train.clean_labels, train.clean_labels)
    splits = {**dataset.splits, "train": dataclasses.replace(train, labels=labels)}
    return dataclasses.replace(dataset, splits=splits, knows_label_noise=True)
