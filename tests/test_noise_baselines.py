"""The label-noise baselines a reviewer asks for: ``aum_filter``, ``small_loss``, ``trusted_union`` and ``probe``, on
hand-made cases and on the tiny environment, and the env settings that build their Students."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import LayoutEnv, rows
from sklearn.metrics import roc_auc_score

from agents import load_tutor, make_tutor, tutor_spec
from agents.heuristics import estimated_noise_rate
from agents.noise_baselines import fit_linear_probe
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, EnvConfig
from tsrl_env.data import Dataset, FrameStore, Split
from tsrl_env.state import DEFAULT_STATE_COLUMNS, StateBuilder
from tsrl_env.student import FAKE_CLASS, Student
from tsrl_env.trainer import trusted_in_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_env(tutor: str | None = None, **settings) -> DeepfakeCurriculumEnv:
    """The tiny environment, built with ``tutor``'s env settings (as the harness builds its Student) and ``settings``."""
    needed = dict(tutor_spec(tutor).env_settings) if tutor else {}
    return DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "device": "cpu", **needed, **settings})


def episode(env: DeepfakeCurriculumEnv, tutor) -> list[dict]:
    """Run one episode with ``tutor``'s weights; every step's info."""
    states, _ = env.reset(seed=0)
    infos, terminated = [], False
    while not terminated:
        weights, _ = tutor.predict(states, deterministic=True)
        states, _, terminated, _, info = env.step(weights.reshape(-1))
        infos.append(info)
    return infos


# --- aum_filter ---------------------------------------------------------------------------------------------------

AUM_COLUMNS = (*DEFAULT_STATE_COLUMNS, "area_under_margin")


class AumEnv(LayoutEnv):
    """What ``aum_filter`` reads: a state with the AUM column, 20 training samples of which 10-19 are threshold
    samples, and the ids of the batch awaiting weights (set by the test)."""

    def __init__(self, epoch: int = 0) -> None:
        trainer = SimpleNamespace(
            student=SimpleNamespace(num_features=4), splits={"train": range(20)}, device="cpu", threshold_ids=torch.arange(10, 20)
        )
        super().__init__(epoch=epoch, epochs=4)
        self.state_layout = StateBuilder(AUM_COLUMNS, EnvConfig(), trainer).layout
        self.trainer = trainer
        self.batch_sample_ids = np.arange(0)


def aum_rows(env: AumEnv, ids: list[int], aum: list[float]) -> np.ndarray:
    """State rows of samples ``ids`` whose AUM column holds ``tanh(aum / 4)`` (the column's squashing)."""
    env.batch_sample_ids = np.asarray(ids)
    states = np.zeros((len(ids), env.state_layout.width), np.float32)
    states[:, env.state_layout.columns["area_under_margin"]] = np.tanh(np.asarray(aum, np.float32) / 4.0)[:, None]
    return states


def test_aum_filter_zeroes_exactly_the_samples_below_the_threshold_samples_percentile():
    env = AumEnv(epoch=0)
    tutor = make_tutor("aum_filter", env)
    # First tutored epoch: the threshold samples' AUM is read; they get weight 0, every other sample 1.
    threshold_aum = [-4.0, -3.0, -2.0, -2.0, -1.0, -1.0, 0.0, 0.5, 1.0, 1.0]  # samples 10-19; the top two equal
    first = tutor.predict(aum_rows(env, [*range(10, 20), 0, 1], [*threshold_aum, -5.0, 5.0]))[0].reshape(-1)
    assert first.tolist() == [0.0] * 10 + [1.0, 1.0]
    # Second: the 99th percentile of the threshold samples' AUM lies between the two largest, both 1.0: the threshold.
    env.epoch = 1
    weights = tutor.weights(aum_rows(env, [0, 1, 2, 3, 4, 5, 12], [-2.0, 0.9, 1.0, 1.1, 3.0, 0.99, -2.0]), 0.25)
    assert weights.tolist() == [0, 0, 1, 1, 1, 0, 0]  # AUM 1.0 is kept; sample 12 is a threshold sample: 0
    # A threshold sample's latest AUM replaces its earlier one: sample 12 at 4.0 raises the threshold to 91% of the way
    # from 1.0 to 4.0 in the column's units, tanh(AUM / 4): an AUM of 3.6.
    assert tutor.weights(aum_rows(env, [3, 4, 5, 12], [1.1, 3.5, 3.7, 4.0]), 0.25).tolist() == [0, 0, 1, 0]
    # A lower percentile lowers the threshold: the median of the threshold AUM (about -0.5) keeps -0.4, 0.9 and 0.99.
    median = make_tutor("aum_filter", env, percentile=50.0)
    median.set_rng_state(tutor.rng_state())
    assert median.weights(aum_rows(env, [0, 1, 2, 5], [-2.0, 0.9, -0.4, 0.99]), 0.25).tolist() == [0, 1, 1, 1]
    restored = make_tutor("aum_filter", env)  # a run checkpoint keeps the AUM read so far
    restored.set_rng_state(tutor.rng_state())
    states = aum_rows(env, [6, 7, 8], [3.0, 3.7, 3.9])
    assert restored.weights(states, 0.5).tolist() == tutor.weights(states, 0.5).tolist() == [0, 1, 1]


def test_aum_filter_refuses_a_student_without_its_settings():
    with pytest.raises(ValueError, match="percentile must lie in \\(0, 100\\]"):
        make_tutor("aum_filter", AumEnv(), percentile=0.0)
    with pytest.raises(ValueError, match="add it to state_columns"):
        make_tutor("aum_filter", tiny_env(threshold_share=0.5))
    with pytest.raises(ValueError, match="threshold_share > 0"):
        make_tutor("aum_filter", tiny_env(state_columns=AUM_COLUMNS))


def test_threshold_samples_are_flipped_trusted_images_that_leave_the_validation_split():
    plain, env = tiny_env(), tiny_env("aum_filter")
    train, val = plain.splits["train"], plain.splits["val"]
    joined, threshold = env.splits["train"], env.trainer.threshold_ids
    assert threshold.tolist() == list(range(len(train), len(joined))) and len(joined) + len(env.splits["val"]) == len(
        train
    ) + len(val)
    assert torch.equal(joined.images[: len(train)], train.images) and torch.equal(joined.labels[: len(train)], train.labels)
    assert joined.flipped[threshold].all() and torch.equal(joined.labels[threshold], 1 - joined.clean_labels[threshold])
    # Whole videos: half the validation videos leave it, their frames in the training split; the other half stay.
    left, kept = set(joined.groups[threshold].tolist()), set(env.splits["val"].groups.tolist())
    assert not left & kept and left | kept == set(val.groups.tolist()) and len(left) == len(set(val.groups.tolist())) // 2
    moved = torch.isin(val.groups, threshold.new_tensor(sorted(left)))
    assert torch.equal(joined.images[threshold], val.images[moved]) and torch.equal(env.splits["val"].images, val.images[~moved])
    assert not len(plain.trainer.threshold_ids)


def test_aum_filter_acts_on_the_tiny_env_and_survives_save_and_load(tmp_path):
    env = tiny_env("aum_filter")
    tutor = make_tutor("aum_filter", env)
    infos = episode(env, tutor)
    threshold = set(env.trainer.threshold_ids.tolist())
    for info in infos:
        on_threshold = np.isin(info["sample_ids"], list(threshold))
        assert (info["weights"][on_threshold] == 0).all()
    first_epoch = [info for info in infos if info["epoch"] == 0]
    assert all((info["weights"][~np.isin(info["sample_ids"], list(threshold))] == 1).all() for info in first_epoch)
    tutor.save(tmp_path / "aum.json")
    assert load_tutor("aum_filter", tmp_path / "aum.json", env).params == tutor.params


# --- small_loss ---------------------------------------------------------------------------------------------------

P_LABEL = np.array([0.9, 0.2, 0.6, 0.95, 0.4, 0.7, 0.1, 0.8])


def label_rows(p_label: np.ndarray) -> np.ndarray:
    """State rows whose label probability is ``p_label`` (right, p_fake = p, where p >= 0.5; else wrong, p_fake = 1 - p)."""
    correct = p_label >= 0.5
    return rows(p_fake=np.where(correct, p_label, 1.0 - p_label), correct=correct)


def test_small_loss_keeps_the_smallest_losses_at_the_given_rate():
    states = label_rows(P_LABEL)
    tutor = make_tutor("small_loss", LayoutEnv(batch_size=8), noise_rate=0.25)
    assert tutor.noise_rate == 0.25
    assert tutor.weights(states, 0.0).tolist() == [1, 0, 1, 1, 1, 1, 0, 1]  # the losses -log 0.1 and -log 0.2 are dropped
    third = make_tutor("small_loss", LayoutEnv(batch_size=8), noise_rate=0.3)  # ceil(2.4) = 3: Co-teaching keeps int(5.6)
    assert third.weights(states, 0.0).tolist() == [1, 0, 1, 1, 0, 1, 0, 1]
    assert make_tutor("small_loss", LayoutEnv(batch_size=8), noise_rate=0.0).weights(states, 0.0).tolist() == [1] * 8


def test_small_loss_schedule_ramps_the_dropped_share_over_the_first_tutored_epochs():
    tutor = make_tutor("small_loss", LayoutEnv(epochs=4, batch_size=8), noise_rate=0.25, ramp_epochs=2)
    states = label_rows(P_LABEL)
    dropped = {progress: (tutor.weights(states, progress) == 0).sum() for progress in (0.0, 0.25, 0.5, 0.75)}
    assert dropped == {0.0: 0, 0.25: 1, 0.5: 2, 0.75: 2}  # 0, then 0.125 * 8, then 0.25 * 8 from tutored epoch 2 on
    assert (tutor.weights(states, 0.25) == 0).tolist() == (P_LABEL == 0.1).tolist()


class NoisyLayoutEnv(LayoutEnv):
    """A layout env whose dataset flipped 3 of 10 training labels and whose samples have known EMA losses."""

    def __init__(self, ema_loss: np.ndarray, visits: np.ndarray) -> None:
        super().__init__(epochs=4, batch_size=8)
        flipped = torch.tensor([True, False, False, True, False, False, False, True, False, False])
        self.dataset = SimpleNamespace(name="made", knows_label_noise=True, splits={"train": SimpleNamespace(flipped=flipped)})
        self.history = SimpleNamespace(ema_loss=torch.as_tensor(ema_loss), visits=torch.as_tensor(visits))


def test_small_loss_rate_known_or_estimated():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.3, 0.1, 700), rng.normal(2.0, 0.3, 300)]).astype(np.float32)
    assert estimated_noise_rate(losses) == pytest.approx(0.3, abs=0.02)
    assert estimated_noise_rate(np.concatenate([rng.normal(0.3, 0.1, 200), rng.normal(2.0, 0.3, 800)])) == 0.5  # capped
    assert estimated_noise_rate(np.full(50, 0.69)) == 0.0
    visits = np.r_[np.ones(990), np.zeros(10)]
    env = NoisyLayoutEnv(np.where(visits > 0, losses, 9.0), visits)  # unvisited samples (EMA 9) are left out
    assert make_tutor("small_loss", env).noise_rate == pytest.approx(0.3)  # known: 3 of the 10 labels are flipped
    estimated = make_tutor("small_loss", env, noise_rate="estimated")
    assert estimated.noise_rate == estimated_noise_rate(losses[:990])
    env.history.ema_loss[:] = 0.5  # estimated once, at the first tutored batch; a run checkpoint keeps it
    assert estimated.noise_rate == estimated_noise_rate(losses[:990])
    resumed = make_tutor("small_loss", env, noise_rate="estimated")
    resumed.set_rng_state(estimated.rng_state())
    assert resumed.noise_rate == estimated.noise_rate and make_tutor("small_loss", env, noise_rate="estimated").noise_rate == 0
    env.dataset = SimpleNamespace(name="files", knows_label_noise=False)
    with pytest.raises(ValueError, match="'known' needs a dataset that knows its wrong labels, and 'files' does not"):
        make_tutor("small_loss", env)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"noise_rate": 1.0}, "noise_rate must be a number in \\[0, 1\\), 'known' or 'estimated', got 1.0"),
        ({"noise_rate": "guessed"}, "got 'guessed'"),
        ({"ramp_epochs": 1.5}, "ramp_epochs must be a whole number of tutored epochs >= 0"),
        ({"ramp_epochs": -1}, "ramp_epochs must be a whole number"),
    ],
)
def test_small_loss_parameter_errors(params, message):
    with pytest.raises(ValueError, match=message):
        make_tutor("small_loss", LayoutEnv(), **params)


# --- trusted_union ------------------------------------------------------------------------------------------------


def test_trusted_union_trains_on_the_trusted_images_every_epoch(tmp_path):
    plain, env = tiny_env(), tiny_env("trusted_union")
    train, val = len(plain.splits["train"]), len(plain.splits["val"])
    assert len(env.splits["train"]) == train + val and env.steps_per_epoch == (train + val) // env.batch_size
    joined = env.splits["train"]
    assert torch.equal(joined.images[train:], plain.splits["val"].images)
    assert torch.equal(joined.labels[train:], plain.splits["val"].labels) and not joined.flipped[train:].any()
    tutor = make_tutor("trusted_union", env)
    infos = episode(env, tutor)
    for epoch in range(env.config.epochs):
        seen = np.concatenate([info["sample_ids"] for info in infos if info["epoch"] == epoch])
        assert len(seen) == env.steps_per_epoch * env.batch_size > plain.steps_per_epoch * plain.batch_size
        assert (seen >= train).sum() > 0.5 * val  # the trusted images are in the epoch's order (all but a ragged few)
    assert all((info["weights"] == 1).all() for info in infos)
    tutor.save(tmp_path / "union.json")
    assert isinstance(load_tutor("trusted_union", tmp_path / "union.json", env), type(tutor))
    with pytest.raises(ValueError, match="build its Student with train_on_trusted"):
        make_tutor("trusted_union", plain)


def frame_split(prefix: str, labels: list[int], videos: list[int]) -> Split:
    """A split of frame files (never opened here) named ``prefix0.png``, ``prefix1.png``..."""
    n = len(labels)
    store = FrameStore([f"{prefix}{i}.png" for i in range(n)], 16)
    labels_tensor, zeros = torch.tensor(labels), torch.zeros(n, dtype=torch.long)
    return Split(store, labels_tensor, labels_tensor.clone(), torch.tensor(videos), zeros, torch.zeros(n))


def test_trusted_frames_on_disk_join_the_training_split_by_path():
    splits = {
        "train": frame_split("t", [0, 1, 1], [0, 0, 1]),
        "val": frame_split("v", [0, 0, 1, 1, 0, 1], [5, 5, 6, 6, 7, 8]),
        "test": frame_split("s", [0, 1], [9, 10]),
    }
    dataset = Dataset("frames", splits, ())
    joined, threshold_ids = trusted_in_training(dataset, EnvConfig(train_on_trusted=True, threshold_share=0.5, seed=3))
    train, val = joined.splits["train"], joined.splits["val"]
    paths = [train.images.path(i) for i in range(len(train))]
    kept = [val.images.path(i) for i in range(len(val))]
    # The training frames, then the kept trusted frames with their labels, then the threshold frames flipped.
    assert paths[:3] == ["t0.png", "t1.png", "t2.png"] and paths[3 : 3 + len(kept)] == kept
    assert sorted(paths[3:]) == [f"v{i}.png" for i in range(6)] and threshold_ids.tolist() == list(range(3 + len(kept), 9))
    videos_left = set(train.groups[threshold_ids].tolist())
    assert len(videos_left) == 2 and not videos_left & set(val.groups.tolist())  # half of the 4 videos, whole
    assert torch.equal(train.flipped, torch.arange(9) >= 3 + len(kept))
    assert joined.splits["test"] is splits["test"] and train.images.image_size == 16


def test_new_env_settings_are_checked():
    with pytest.raises(TypeError, match="train_on_trusted must be true or false, got 'yes'"):
        EnvConfig(train_on_trusted="yes")
    with pytest.raises(ValueError, match="threshold_share must lie in \\[0, 1\\)"):
        EnvConfig(threshold_share=1.0)
    with pytest.raises(ValueError, match="is no threshold sample; raise threshold_share or val_size"):
        tiny_env(threshold_share=0.01)


# --- probe --------------------------------------------------------------------------------------------------------


def test_fit_linear_probe_separates_a_separable_case():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    features = rng.normal(size=(200, 6)) * [1, 1, 1, 1, 1, 1e-3] + 10.0  # raw features, one nearly constant
    features[:, 0] += 4.0 * labels
    weight, bias = fit_linear_probe(features[:100], labels[:100])
    held_out = features[100:] @ weight + bias
    assert roc_auc_score(labels[100:], held_out) > 0.98
    assert ((held_out > 0) == labels[100:]).mean() > 0.9  # the log-odds of fake: positive for fakes
    assert abs(weight[0]) > 5 * np.abs(weight[1:5]).max()


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory) -> str:
    """A file of Student weights standing in for a pretrained one (the probe only needs them fixed)."""
    path = tmp_path_factory.mktemp("pretrained") / "student.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        torch.save(Student.from_timm(TINY_SETTINGS["backbone"]).state_dict(), path)
    return str(path)


def probe_episode(pretrained_file: str, invert_training_labels: bool = False) -> tuple[DeepfakeCurriculumEnv, list[dict]]:
    env = tiny_env("probe", pretrained_file=pretrained_file)
    if invert_training_labels:
        train = env.trainer.splits["train"]
        env.trainer.splits["train"] = type(train)(
            train.images, 1 - train.labels, train.clean_labels, train.groups, train.families, train.strengths
        )
    return env, episode(env, make_tutor("probe", env))


def test_probe_is_a_linear_classifier_on_the_trusted_split_that_never_reads_a_training_label(pretrained_file, tmp_path):
    env, infos = probe_episode(pretrained_file)
    assert all((info["weights"] == 0).all() for info in infos) and len(infos) == env.steps_per_epoch  # one epoch
    student = env.finished_student
    pretrained = torch.load(pretrained_file, weights_only=True)
    head = student.classifier
    backbone = {name: value for name, value in student.state_dict().items() if not name.startswith("model.fc.")}
    assert all(torch.equal(value, pretrained[name]) for name, value in backbone.items())  # BatchNorm statistics too
    student.eval()
    with torch.no_grad():
        val = env.splits["val"]
        features = student(env.trainer.images_of("val", torch.arange(len(val))))[1].numpy()
    weight, bias = fit_linear_probe(features, (val.labels == FAKE_CLASS).numpy(), val.groups.numpy())
    assert head.weight[FAKE_CLASS].detach().numpy() == pytest.approx(weight, rel=1e-4, abs=1e-6)
    assert head.bias[FAKE_CLASS].item() == pytest.approx(bias, rel=1e-4) and not head.weight[1 - FAKE_CLASS].any()
    # Training labels all inverted: the same classifier, the same test metrics.
    inverted, inverted_infos = probe_episode(pretrained_file, invert_training_labels=True)
    assert torch.equal(inverted.finished_student.classifier.weight, head.weight)
    assert inverted_infos[-1]["test"]["test_seen"]["auc"] == infos[-1]["test"]["test_seen"]["auc"]
    make_tutor("probe", env).save(tmp_path / "probe.json")
    assert load_tutor("probe", tmp_path / "probe.json", env).params == {"folds": 5.0}


def test_probe_refuses_a_student_it_cannot_probe(pretrained_file):
    with pytest.raises(ValueError, match="frozen_backbone and weight_decay 0"):
        make_tutor("probe", tiny_env(pretrained_file=pretrained_file))
    with pytest.raises(ValueError, match="set pretrained or pretrained_file"):
        make_tutor("probe", tiny_env("probe"))
    with pytest.raises(ValueError, match="folds must be a whole number >= 2"):
        make_tutor("probe", tiny_env("probe", pretrained_file=pretrained_file), folds=1)


def test_a_frozen_backbone_trains_the_classifier_alone():
    env = tiny_env(frozen_backbone=True, warmup_epochs=0)
    env.reset(seed=0)
    before = {name: value.clone() for name, value in env.student.state_dict().items()}
    for _ in range(3):
        env.step(np.ones(env.batch_size, np.float32))
    after = env.student.state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved == {"model.fc.weight", "model.fc.bias"}


def test_the_recorder_counts_the_datas_own_training_samples_only():
    from experiments.records.recorder import CurriculumRecorder
    from experiments.records.student_run import StudentRun

    env = tiny_env("aum_filter", train_on_trusted=True)
    own = env.trainer.own_training_size
    assert own < len(env.splits["train"]) and env.trainer.threshold_ids.min() >= own
    run = StudentRun(label="uniform")
    recorder = CurriculumRecorder(run, env)
    states, _ = env.reset(seed=0)
    visited, flipped, terminated = 0, 0, False
    while not terminated:
        next_states, _, terminated, _, info = env.step(np.ones(env.batch_size, dtype=np.float32))
        recorder.step(states, info)
        ids = info["sample_ids"][info["sample_ids"] < own]
        visited, flipped = visited + len(ids), flipped + int(env.splits["train"].flipped[ids].sum())
        states = next_states
    assert sum(run.weight_by_label_noise.counts) == visited, "trusted and threshold samples are not tallied"
    assert run.weight_by_label_noise.counts[1] == flipped, "the threshold samples flipped on purpose are no label noise"
