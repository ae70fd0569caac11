"""A tutor saved by an earlier run (``--tutor-checkpoint``, a ``tutor.zip``), loaded to act on a new Student: the file
and what it was saved by and on are checked, and anything wrong is said in one line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents import load_tutor
from tsrl_env import DeepfakeCurriculumEnv


def load_tutor_checkpoint(name: str, path: Path, env: DeepfakeCurriculumEnv) -> Any:
    """The ``name`` tutor saved at ``path``, acting on ``env``, or an error naming the file and what is wrong with it.

    A missing file raises FileNotFoundError; a corrupted one, one that does not load as ``name`` (another kind of
    tutor saved it; PPO and A2C share a policy and load as each other), or one saved on an environment with other
    state rows (another backbone, ``state_feature_dim`` or ``state_counters``) raises ValueError. Nothing is returned
    half-loaded.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"tutor checkpoint {str(path)!r} does not exist or is not a file; "
            "give the tutor.zip a run saved (RUN_DIR/ppo/tutor.zip)"
        )
    try:
        return load_tutor(name, path, env)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        if isinstance(error, ValueError) and "spaces do not match" in str(error):
            # SB3's check_for_correct_spaces: "... spaces do not match: <saved> != <this environment's>".
            raise ValueError(
                f"tutor checkpoint {str(path)!r} does not fit this run ({reason}; saved != this run's): it was saved by "
                f"another tutor than {name!r} (name it with --tutor) or on an environment with other state rows; use "
                "the env settings of the run that saved it (backbone, state_feature_dim, state_counters, batch_size)"
            ) from error
        raise ValueError(
            f"cannot load tutor checkpoint {str(path)!r} as the {name!r} tutor ({reason}): the file is corrupted or "
            "another tutor saved it; give the tutor.zip a run saved, with --tutor naming the tutor that saved it"
        ) from error
