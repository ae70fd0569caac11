"""Saved tutors: tutors that ``tsrl teach`` taught, registered by name, acting frozen on the state they were taught on.

A saved tutor is a pair of files written together: ``NAME.zip`` (the model) and ``NAME.json``, which names the
algorithm that saved it and the env settings of the state rows it reads, e.g. ``{"algorithm": "ppo", "env":
{"state_columns": [...], "state_counters": ["learned"]}}``. :func:`read_saved_tutor` checks a pair whole (both files,
the algorithm, the env settings, the model's archive) before anything uses it, and refuses it in one line naming the
file. A saved tutor acts as taught (its outputs are the weights) unless made with ``decision="rank_cut"``
(:data:`DECISIONS`).

:class:`TutorRegistry` (``agents.TUTORS``) holds every tutor by name. Besides those registered in code it reads the
tutors shipped with the package, in ``experiments/tutors`` (package data, so a wheel has them too), the first time a
tutor is looked up or listed: reading files is no side effect of ``import agents``, and this layer locates that folder
without importing ``experiments``, the application above it. A broken pair there is skipped with a warning where tutors
are listed, and refused, naming its file, where its name is used; a saved tutor never takes the name of a tutor
registered in code (a ``uniform.zip`` cannot replace the uniform baseline).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import zipfile
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsrl_env.config import EnvConfig
from tsrl_env.validation import did_you_mean

SHIPPED_PACKAGE = "experiments"
SHIPPED_FOLDER = "tutors"
"""The shipped saved tutors are the package data ``experiments/tutors/NAME.zip`` and ``NAME.json``."""

SETTINGS_KEYS = ("algorithm", "env")
MODEL_MEMBER = "data"
"""The member every Stable-Baselines3 model archive holds (its hyperparameters and spaces)."""

DECISIONS = ("mean", "rank_cut")
"""How a saved tutor's outputs become weights. ``mean``: as taught, the output itself (a tutor taught by imitating
0/1 weights with a squared loss outputs their mean given the state, a soft weight). ``rank_cut``: a per-batch
decision, 0 for the batch's lowest outputs and 1 for the rest, dropping the share the tutor's own outputs give
(:func:`rank_cut`)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedTutor:
    """A checked pair of saved-tutor files: its ``model`` (``.zip``), its ``settings`` (``.json``), the algorithm that
    saved it and the env settings of the state rows it reads."""

    name: str
    model: Path
    settings: Path
    algorithm: str
    env_settings: Mapping[str, Any]

    @property
    def paths(self) -> tuple[Path, Path]:
        """Both files, the model first: what decides how the tutor weighs (a fingerprint hashes them)."""
        return self.model, self.settings

    def check_observes(self, env: Any) -> None:
        """Refuse an environment whose state rows are not those this tutor was taught on, naming the settings that
        differ and how to build a fitting one. An env whose settings cannot be read is left to the model's own check."""
        config = env_config_of(env)
        if config is None:
            return
        wanted = {key: _plain(value) for key, value in self.env_settings.items()}
        differing = {key: value for key, value in wanted.items() if _plain(getattr(config, key)) != value}
        if differing:
            given = {key: _plain(getattr(config, key)) for key in differing}
            raise ValueError(
                f"the saved tutor {self.name!r} reads the state rows of the env settings {differing}, but this "
                f"environment has {given}: build one with agents.make_env_for({self.name!r}, ...), or give those "
                f"settings to DeepfakeCurriculumEnv or gym.make"
            )

    def load(self, loader: Callable[..., Any], env: Any = None) -> Any:
        """The model loaded by its algorithm's ``loader`` and acting on ``env``, once ``env`` fits it; a file that does
        not load is refused naming it."""
        if env is not None:
            self.check_observes(env)
        try:
            return loader(self.model, env=env)
        except Exception as error:  # SB3's loaders raise many kinds for a damaged or foreign archive
            reason = str(error).splitlines()[0] if str(error) else ""
            raise ValueError(
                f"the saved tutor {self.name!r} cannot be loaded from {str(self.model)!r} ({type(error).__name__}: "
                f"{reason}); restore the tutor.zip that tsrl teach wrote"
            ) from error


def read_saved_tutor(name: str, model: str | Path, algorithms: Mapping[str, Any]) -> SavedTutor:
    """The saved tutor ``name`` whose model is ``model`` (a ``.zip``, its ``.json`` beside it), once both files are
    checked; ``algorithms`` are the tutors that may have saved it. Anything wrong raises a one-line ValueError naming
    the file."""
    model = Path(model)
    settings = model.with_suffix(".json")

    def refused(path: Path, problem: str) -> ValueError:
        return ValueError(
            f"the saved tutor {name!r} cannot be used: {str(path)!r} {problem}; restore the pair of files tsrl teach wrote "
            "(OUT/tutor.zip and OUT/tutor.json), or remove both"
        )

    for path, other in ((model, settings), (settings, model)):
        if not path.is_file():
            raise refused(path, f"is missing (a saved tutor is {other.name} and {path.name} together)")
    try:
        saved = json.loads(settings.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise refused(settings, f"cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(saved, dict) or sorted(saved) != sorted(SETTINGS_KEYS):
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise refused(settings, f"must hold exactly the keys {', '.join(SETTINGS_KEYS)}, found {found}")
    if saved["algorithm"] not in algorithms:
        accepted = ", ".join(algorithms)
        raise refused(settings, f"names the algorithm {saved['algorithm']!r}, not one that saves a tutor ({accepted})")
    if not isinstance(saved["env"], dict):
        raise refused(settings, f"must hold its env settings as a mapping, got {saved['env']!r}")
    try:
        EnvConfig.from_dict(saved["env"])
    except (TypeError, ValueError) as error:
        raise refused(settings, f"holds env settings that do not exist ({error})") from None
    if not zipfile.is_zipfile(model) or MODEL_MEMBER not in zipfile.ZipFile(model).namelist():
        raise refused(model, f"is not a saved model (not a zip archive holding {MODEL_MEMBER!r})")
    return SavedTutor(name, model, settings, saved["algorithm"], dict(saved["env"]))


def shipped_tutors_directory() -> Path | None:
    """The folder of the saved tutors shipped with the package (``experiments/tutors``), found without importing
    ``experiments``; None where that package is not installed."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)  # locates a top-level package without running it
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / SHIPPED_FOLDER).is_dir():
            return Path(location) / SHIPPED_FOLDER
    return None


def env_config_of(env: Any) -> EnvConfig | None:
    """The settings of the curriculum environment behind ``env`` (the environment itself, a Gymnasium wrapper of it, or
    an SB3 view of it); None for an environment that does not say."""
    inner = getattr(env, "env", env)  # an SB3 view holds the environment it shows
    config = getattr(getattr(inner, "unwrapped", inner), "config", None)
    return config if isinstance(config, EnvConfig) else None


class TutorRegistry(MutableMapping[str, Any]):
    """The tutors by name (each a :class:`~agents.TutorSpec`): those registered in code and the saved tutors.

    The shipped saved tutors (:func:`shipped_tutors_directory`) are read at the first lookup or listing. The name of a
    broken saved tutor is taken (``in`` says so) but looking it up raises the ValueError that names its file; listings
    skip it.
    """

    def __init__(self, tutors: Mapping[str, Any]) -> None:
        self._tutors = dict(tutors)
        self._saved: dict[str, SavedTutor] = {}
        self._broken: dict[str, str] = {}
        self._shipped_read = False

    def __getitem__(self, name: str) -> Any:
        self._read_shipped()
        if name in self._broken and name not in self._tutors:
            raise ValueError(self._broken[name])
        return self._tutors[name]

    def __contains__(self, name: object) -> bool:
        self._read_shipped()
        return name in self._tutors or name in self._broken

    def __iter__(self) -> Iterator[str]:
        self._read_shipped()
        return iter(list(self._tutors))

    def __len__(self) -> int:
        self._read_shipped()
        return len(self._tutors)

    def __setitem__(self, name: str, spec: Any) -> None:
        self._tutors[name] = spec
        self._saved.pop(name, None)

    def __delitem__(self, name: str) -> None:
        del self._tutors[name]
        self._saved.pop(name, None)

    def register_saved(self, name: str, model: str | Path) -> SavedTutor:
        """Check the saved tutor at ``model`` (a ``.zip`` with its ``.json``) and register it as ``name``; a name of a
        tutor registered in code is refused, another saved tutor's is taken over with a warning."""
        self._read_shipped()
        if not isinstance(name, str) or not name:
            raise TypeError(f"a saved tutor's name must be a non-empty string, got {name!r}")
        if name in self._tutors and name not in self._saved:
            raise ValueError(
                f"the saved tutor {str(Path(model))!r} cannot take the name {name!r} of a built-in tutor; save it under "
                "another name"
            )
        algorithms = {key: spec for key, spec in self._tutors.items() if key not in self._saved and spec.learns}
        saved = read_saved_tutor(name, model, algorithms)
        if name in self._saved and self._saved[name].paths != saved.paths:
            logger.warning("the saved tutor %r (%s) replaces the one from %s", name, saved.model, self._saved[name].model)
        self._tutors[name] = _saved_spec(saved, algorithms[saved.algorithm])
        self._saved[name] = saved
        self._broken.pop(name, None)
        return saved

    def load_saved(self, directory: str | Path) -> list[str]:
        """Register every saved tutor of ``directory`` (each ``NAME.zip`` with its ``NAME.json``) as ``NAME``; returns
        the names registered. A broken pair is skipped with a warning, and its name refused where it is used."""
        directory = Path(directory)
        names = sorted({path.stem for pattern in ("*.zip", "*.json") for path in directory.glob(pattern)})
        registered = []
        for name in names:
            try:
                self.register_saved(name, directory / f"{name}.zip")
            except (TypeError, ValueError) as error:
                logger.warning("skipping a saved tutor: %s", error)
                self._broken[name] = str(error)
            else:
                registered.append(name)
        return registered

    def saved(self, name: str) -> SavedTutor:
        """The files of the saved tutor ``name``; a ValueError for a name that is not a saved tutor."""
        self._read_shipped()
        if name in self._broken and name not in self._tutors:
            raise ValueError(self._broken[name])
        if name not in self._saved:
            raise ValueError(f"{name!r} is not a saved tutor; the saved tutors: {', '.join(self._saved) or 'none'}")
        return self._saved[name]

    def _read_shipped(self) -> None:
        if self._shipped_read:
            return
        self._shipped_read = True
        directory = shipped_tutors_directory()
        if directory is not None:
            self.load_saved(directory)


def _saved_spec(saved: SavedTutor, algorithm: Any) -> Any:
    """The spec of a saved tutor: its algorithm's, acting frozen (no learning; its one keyword, ``decision``) on the
    state it was taught on, which the Student it teaches is trained under."""

    def make(env: Any, seed: int | None = None, decision: str = "mean", **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(
                f"the saved tutor {saved.name!r} acts as taught and takes only the keyword decision, got "
                f"{sorted(kwargs)}; drop them (its settings were fixed when it was taught)"
            )
        if decision not in DECISIONS:
            raise ValueError(
                f"the saved tutor {saved.name!r} has no decision {decision!r}{did_you_mean(decision, DECISIONS)}; "
                f"accepted: {', '.join(DECISIONS)}"
            )
        model = saved.load(algorithm.load, env)
        return model if decision == "mean" else RankCutTutor(model)

    make.__doc__ = (
        f"The {saved.algorithm} tutor saved at {saved.model.name}, acting frozen on the state it was taught on; "
        "``decision`` (see :data:`DECISIONS`) says how its outputs become weights."
    )
    return dataclasses.replace(
        algorithm, make=make, learns=False, env_settings=dict(saved.env_settings), kind="taught", files=saved.paths
    )


def rank_cut(weights: np.ndarray) -> np.ndarray:
    """A batch's weights as a decision: 0 for its ``ceil(B * share)`` lowest weights, 1 for the rest, where ``share``
    is the batch's mean of ``1 - weight``, the share of the batch the weights themselves distrust. Ties go to the
    earlier rows. The cut of :func:`agents.heuristics._highest`, with the tolerance the check's Students ran with."""
    flat = np.asarray(weights, dtype=np.float32).reshape(-1)
    if not np.isfinite(flat).all():
        raise ValueError(f"rank_cut needs finite weights, got {flat[~np.isfinite(flat)][:3].tolist()}")
    # B * share is a whole number where the weights are 0/1: the float32 mean's rounding must not make it one more.
    # (check_v1_decision's Students were trained with exactly this computation; keep it so that they reproduce.)
    count = math.ceil(float(np.mean(1.0 - flat)) * flat.size - 1e-6)
    decided = np.ones_like(flat)
    decided[np.argsort(flat, kind="stable")[:count]] = 0.0
    return decided.reshape(np.shape(weights))


class RankCutTutor:
    """A frozen tutor acting by :func:`rank_cut` on each batch of its outputs instead of by the outputs themselves."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        weights, state = self.model.predict(observation, state, episode_start, deterministic)
        return rank_cut(weights), state


def _plain(value: Any) -> Any:
    """Tuples as lists, so that settings read from JSON compare with those of a config."""
    return list(value) if isinstance(value, tuple) else value
