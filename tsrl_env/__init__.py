"""TSRL environments: the training of a deepfake detector as a Gymnasium environment.

Importing this package registers ``DeepfakeCurriculum-v0`` (the embedded benchmark at demo size) and
``DeepfakeCurriculumTiny-v0`` (a tiny Student and dataset whose episodes end within seconds). Rewards, state columns
and data sources are strategies registered by name (:func:`register_reward`, :func:`register_state_column`,
:func:`register_dataset`); docs/design.md shows a new one of each in about twenty lines.
"""

from __future__ import annotations

import gymnasium as gym

from tsrl_env.config import EnvConfig
from tsrl_env.data import register_dataset
from tsrl_env.env import DeepfakeCurriculumEnv, TrainingListener
from tsrl_env.noise_columns import AreaUnderMargin, KnnLabelDisagreement, TrustedProbe
from tsrl_env.rewards import LateCredit, Reward, register_reward
from tsrl_env.state import DEFAULT_STATE_COLUMNS, StateColumn, register_state_column
from tsrl_env.trainer import StudentTrainer, TrainingBatch
from tsrl_env.vector import PerSampleGymnasiumVectorEnv

TINY_SETTINGS = {
    "backbone": "test_resnet",
    "batch_size": 32,
    "epochs": 2,
    "warmup_epochs": 1,
    "dataset_options": {
        "image_size": 32,
        "train_size": 256,
        "val_size": 64,
        "test_seen_size": 64,
        "test_unseen_size": 64,
        "frames_per_video": 4,
    },
}

gym.register(id="DeepfakeCurriculum-v0", entry_point="tsrl_env.env:DeepfakeCurriculumEnv")
gym.register(id="DeepfakeCurriculumTiny-v0", entry_point="tsrl_env.env:DeepfakeCurriculumEnv", kwargs=TINY_SETTINGS)

__all__ = [
    "AreaUnderMargin",
    "KnnLabelDisagreement",
    "TrustedProbe",
    "DEFAULT_STATE_COLUMNS",
    "TINY_SETTINGS",
    "DeepfakeCurriculumEnv",
    "EnvConfig",
    "LateCredit",
    "PerSampleGymnasiumVectorEnv",
    "Reward",
    "StateColumn",
    "StudentTrainer",
    "TrainingBatch",
    "TrainingListener",
    "register_dataset",
    "register_reward",
    "register_state_column",
]
