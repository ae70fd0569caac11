"""What a user watches while a Student trains: the samples counted over warm-up and tutored epochs, each epoch's row
printed as that epoch ends, plain lines where the output is not a terminal, and no SB3 warning the user cannot act on."""

from __future__ import annotations

import io
import warnings

import numpy as np

from agents import make_tutor
from experiments.records.recorder import CurriculumRecorder
from experiments.records.student_run import StudentRun
from experiments.training.progress import StudentProgress
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv


def test_each_epoch_is_printed_as_it_ends_and_every_sample_is_counted():
    env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "warmup_epochs": 2, "epochs": 2})
    per_epoch = env.steps_per_epoch * env.batch_size
    stream, rows = io.StringIO(), io.StringIO()
    progress = StudentProgress("uniform", 4 * per_epoch, epochs=4, stream=stream, rows=rows, interval_s=3600)
    recorder = CurriculumRecorder(StudentRun("uniform"), env, on_epoch=progress.epoch_finished)
    env.listeners.append(progress)

    def step(states: np.ndarray) -> np.ndarray:  # as a run drives the env: the recorder sees every step
        next_states, _, _, _, info = env.step(np.ones(env.batch_size, np.float32))
        recorder.step(states, info)
        return next_states

    states, _ = env.reset(seed=0)
    assert progress.done == 2 * per_epoch, "the warm-up's samples count before the first tutored step"
    assert [line.split("  ")[0] for line in rows.getvalue().splitlines()] == [
        "uniform: epoch 1/4 (warm-up)",
        "uniform: epoch 2/4 (warm-up)",
    ]
    for _ in range(env.steps_per_epoch - 1):
        states = step(states)
    assert len(rows.getvalue().splitlines()) == 2, "no row before the tutored epoch ends"
    step(states)
    last = rows.getvalue().splitlines()[-1]
    assert last.startswith("uniform: epoch 3/4 (tutored)  val AUC ") and "mean weight 1.000" in last
    assert progress.done == 3 * per_epoch

    progress.close()
    assert stream.getvalue().startswith(f"uniform: {3 * per_epoch:,}/{4 * per_epoch:,} samples (75%), ")
    assert len(stream.getvalue().splitlines()) == 1, "one plain line at the end, none before the interval passed"


def test_without_a_terminal_a_plain_line_comes_every_interval():
    stream, rows = io.StringIO(), io.StringIO()
    progress = StudentProgress("ppo", 1000, done=200, stream=stream, rows=rows, interval_s=0.0)
    progress.batch_trained(300)
    progress.batch_trained(500)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["ppo: 500/1", "ppo: 1", "ppo: 1"]
    assert lines[0].startswith("ppo: 500/1,000 samples (50%)") and "left" in lines[0]
    assert lines[-1].startswith("ppo: 1,000/1,000 samples (100%)") and "left" not in lines[-1]
    assert rows.getvalue() == ""


def test_the_ppo_tutor_raises_no_minibatch_warning():
    env = DeepfakeCurriculumEnv(**TINY_SETTINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_tutor("ppo", env, seed=0, batch_size=7)
    assert not [warning for warning in caught if "mini-batch" in str(warning.message)]
