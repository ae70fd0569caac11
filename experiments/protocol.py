"""Evaluation protocols: which data and seeds a teaching run may use, and which an evaluation grid may.

A tutor is taught on some Students and evaluated on others. A result a user can trust on their own data needs the two
apart in **data**, not only in Student seeds: other images, other flipped labels, and a pretrained starting point that
never saw an evaluation image. A protocol is a named, versioned set of such rules; a config opts in with
``protocol: v1`` and ``tsrl benchmark`` / ``tsrl teach`` refuse any setting that breaks it, before any work
(``docs/protocol.md``).

Protocol ``v1`` (embedded benchmark):

- The tile split is fixed (``tiles: fixed``): a validation or test tile is never a training tile of any dataset
  seed, and the pretraining tiles (``content: pretraining``) are used by no benchmark split.
- Seeds from 1000 to 1999 are **teaching** seeds, seeds from 0 to 999 **evaluation** seeds. That holds for the
  dataset's content seed (``seed``), its flip seed (``noise_seed``, which must be given) and the Student seed: a
  teaching run uses teaching seeds only, an evaluation grid evaluation seeds only.
- An evaluation grid covers at least 3 datasets (``datasets:``, each its own content and flip seed) times at least
  8 Student seeds, fixed in the config before it runs (adding more later needs ``tsrl benchmark --extend``, and the
  report says so).
- A pretrained Student starts from weights trained on ``content: pretraining`` data only (its run's config is
  checked where the weights file has one beside it).

Results measured before a config named a protocol are "legacy": reproducible, but teaching and evaluation shared
their data; every such table says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import read_yaml_config
from tsrl_env.config import EnvConfig
from tsrl_env.data import EmbeddedConfig
from tsrl_env.validation import registered

LEGACY = "legacy"
"""What a config that names no protocol was measured under."""


@dataclass(frozen=True)
class Protocol:
    """The rules of one protocol version (see the module docstring)."""

    name: str
    teaching_seeds: range
    evaluation_seeds: range
    min_datasets: int
    min_student_seeds: int
    required_dataset_options: Mapping[str, Any]

    def role(self, seed: int) -> str | None:
        """``"teaching"``, ``"evaluation"`` or None (neither: no run under this protocol may use it)."""
        if seed in self.teaching_seeds:
            return "teaching"
        if seed in self.evaluation_seeds:
            return "evaluation"
        return None

    def describe_seeds(self, role: str) -> str:
        seeds = self.teaching_seeds if role == "teaching" else self.evaluation_seeds
        return f"{role} seeds are {seeds.start}-{seeds.stop - 1}"


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    if protocol.name in PROTOCOLS or protocol.name == LEGACY:
        raise ValueError(f"a protocol named {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


register_protocol(
    Protocol(
        name="v1",
        teaching_seeds=range(1000, 2000),
        evaluation_seeds=range(0, 1000),
        min_datasets=3,
        min_student_seeds=8,
        required_dataset_options={"tiles": "fixed", "content": "benchmark"},
    )
)


def protocol_named(name: Any) -> Protocol | None:
    """The registered protocol ``name`` (None for ``legacy`` or no protocol); another name raises a ValueError."""
    if name is None or name == LEGACY:
        return None
    if not isinstance(name, str):
        raise TypeError(f"protocol must be a protocol name such as 'v1', got {name!r}")
    return registered(PROTOCOLS, name, "protocol")


class ProtocolViolation(ValueError):
    """A config breaks the rules of the protocol it names."""


def check_dataset(protocol: Protocol, role: str, env: EnvConfig, where: str, pretrain: str | None = None) -> None:
    """Refuse an environment whose data breaks ``protocol`` for a run of ``role`` (``teaching`` or ``evaluation``);
    ``pretrain`` is the run config that builds its pretrained weights where they are missing (see
    :mod:`experiments.training.pretrain`), checked in their place."""
    if env.dataset != "embedded":
        return  # files on disk: their split is the user's; only Student seeds are checked
    options = env.dataset_options
    for key, wanted in protocol.required_dataset_options.items():
        if options.get(key) != wanted:
            raise ProtocolViolation(
                f"protocol {protocol.name}: {where} needs dataset_options {key}: {wanted} (it has {options.get(key)!r})"
            )
    flips = options.get("label_noise", EmbeddedConfig.label_noise) > 0
    for key, seed in (("seed", options.get("seed", 0)), ("noise_seed", options.get("noise_seed"))):
        if seed is None:
            if key == "noise_seed" and not flips:
                continue
            raise ProtocolViolation(
                f"protocol {protocol.name}: {where} must give dataset_options {key} ({protocol.describe_seeds(role)})"
            )
        if protocol.role(seed) != role:
            article = "an" if role[0] in "aeiou" else "a"
            raise ProtocolViolation(
                f"protocol {protocol.name}: {where} uses dataset {key} {seed}, not {article} {role} seed "
                f"({protocol.describe_seeds(role)})"
            )
    _check_pretrained(protocol, env, where, pretrain)


def check_student_seeds(protocol: Protocol, role: str, seeds: Iterable[int], where: str) -> None:
    """Refuse Student seeds of the other role."""
    wrong = [seed for seed in seeds if protocol.role(seed) != role]
    if wrong:
        raise ProtocolViolation(
            f"protocol {protocol.name}: {where} uses Student seed(s) {wrong}, not {role} seeds ({protocol.describe_seeds(role)})"
        )


def check_grid(
    protocol: Protocol,
    role: str,
    envs: Mapping[str, EnvConfig],
    datasets: int,
    seeds: Iterable[int],
    where: str,
    pretrain: str | None = None,
) -> None:
    """Refuse a grid that breaks ``protocol``: ``envs`` maps each (variant, dataset) label to the environment of its
    cells, ``datasets`` is the number of datasets, ``seeds`` the Student seeds. An ``evaluation`` grid measures tutors
    on evaluation data, with at least the protocol's datasets and seeds; a ``teaching`` grid (a search of a baseline's
    settings) keeps to teaching data and seeds, so that no setting is chosen on evaluation data. ``pretrain`` as for
    :func:`check_dataset`."""
    seeds = list(seeds)
    if role == "evaluation" and datasets < protocol.min_datasets:
        raise ProtocolViolation(
            f"protocol {protocol.name}: {where} lists {datasets} evaluation dataset(s); it needs at least "
            f"{protocol.min_datasets} under datasets: (each with its own seed and noise_seed)"
        )
    if role == "evaluation" and len(seeds) < protocol.min_student_seeds:
        raise ProtocolViolation(
            f"protocol {protocol.name}: {where} lists {len(seeds)} Student seed(s); it needs at least "
            f"{protocol.min_student_seeds}, fixed before the grid runs"
        )
    check_student_seeds(protocol, role, seeds, where)
    for label, env in envs.items():
        check_dataset(protocol, role, env, f"{where}, {label}", pretrain)


def _check_pretrained(protocol: Protocol, env: EnvConfig, where: str, pretrain: str | None) -> None:
    """Pretrained weights of a ``tsrl train`` run (its ``config.yaml`` beside them or two folders up; where the file is
    not built yet, the ``pretrain`` config that will build it) must come from pretraining content, on none of the
    families the evaluation data holds out as unseen. A bare weights file cannot be checked; the protocol's docs say
    the user answers for it."""
    if not env.pretrained_file:
        return
    path = Path(env.pretrained_file)
    if not path.is_file() and pretrain is not None:
        found: list[str | Path] = [pretrain]
    else:
        found = [
            candidate for candidate in (path.parent / "config.yaml", path.parent.parent / "config.yaml") if candidate.is_file()
        ]
    if not found:
        return
    pretraining = read_yaml_config(found[0]).get("env") or {}
    if pretraining.get("dataset", "embedded") != "embedded":
        return
    options = EmbeddedConfig.filled(pretraining.get("dataset_options") or {})
    if options["content"] != "pretraining":
        raise ProtocolViolation(
            f"protocol {protocol.name}: {where} starts from {str(path)!r}, whose run ({found[0]}) trained on benchmark "
            "content; pretrain on dataset_options content: pretraining (experiments/configs/pretrain_v1.yaml)"
        )
    evaluated = EmbeddedConfig.filled(env.dataset_options)
    if options["seed"] == evaluated["seed"]:
        # Texture shots draw from (seed, split, video) alone, whatever the tiles: the same seed renders the same ones.
        raise ProtocolViolation(
            f"protocol {protocol.name}: {where} starts from {str(path)!r}, pretrained at dataset seed {options['seed']}, "
            "the seed of this data too (its texture videos would be the same); pretrain at another seed"
        )
    unseen = evaluated["unseen_families"]
    shown = sorted(set(options["train_families"]) & set(unseen))
    if shown:
        raise ProtocolViolation(
            f"protocol {protocol.name}: {where} starts from {str(path)!r}, whose run ({found[0]}) trained on {shown}, "
            "which the evaluation data holds out as unseen families; pretrain on other families"
        )
