"""The Student: a deepfake detector that returns logits and pre-logit features from one forward pass."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from torch import nn

NUM_CLASSES = 2
FAKE_CLASS = 1


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_pretrained_file(model: nn.Module, path: Path) -> None:
    """Load the weights in ``path`` into the timm ``model``, all but its classifier, which stays new.

    The file holds a state dict (or a checkpoint with one under ``state_dict``) with timm's key names, a Student's
    ``student.pt`` as ``tsrl train`` saves it, or DeepfakeBench's names: its detectors' ``backbone.`` prefix and
    Xception's ``last_linear`` head are mapped to timm's names, and 1x1 convolution weights stored as matrices (the
    ``pointwise`` layers of the Xception file DeepfakeBench starts from) are given their two unit dimensions. Anything
    else that does not match is refused, named.
    """
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_file {str(path)!r} does not exist; give the path of a saved state dict")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    own = model.state_dict()
    head = _classifier_name(model)
    kept = {name: value for name, value in timm_key_names(state, own).items() if not name.startswith(f"{head}.")}
    wanted = [name for name in own if not name.startswith(f"{head}.")]
    problems = {
        "missing": [name for name in wanted if name not in kept],
        "unexpected": [name for name in kept if name not in own],
        "of another shape": [name for name in kept if name in own and kept[name].shape != own[name].shape],
    }
    found = [
        f"{len(names)} {kind} ({', '.join(names[:3])}{', ...' * (len(names) > 3)})" for kind, names in problems.items() if names
    ]
    if found:
        raise ValueError(
            f"the weights in {str(path)!r} do not fit the backbone {type(model).__name__}: keys {'; '.join(found)}; give a "
            "file saved from the same timm model (or DeepfakeBench's Xception for legacy_xception)"
        )
    model.load_state_dict(kept, strict=False)


def timm_key_names(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with DeepfakeBench's key names turned into timm's where they differ (see :func:`load_pretrained_file`)."""
    mapped = {}
    for key, value in state.items():
        name = key.removeprefix("module.").removeprefix("backbone.")
        if name not in own and name.removeprefix("model.") in own:  # a Student's student.pt: its timm model is .model
            name = name.removeprefix("model.")
        if name.startswith("last_linear."):
            name = "fc." + name.removeprefix("last_linear.")
        if name in own and value.ndim == 2 and own[name].ndim == 4 and own[name].shape[2:] == (1, 1):
            value = value[:, :, None, None]
        mapped[name] = value
    return mapped


def _classifier_name(model: nn.Module) -> str:
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)


def available_devices() -> list[str]:
    """The devices this machine can train on, as the ``device`` setting names them."""
    cuda = [f"cuda:{index}" for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = ["mps"] if torch.backends.mps.is_available() else []
    return ["cpu", *cuda, *mps]


class Student(nn.Module):
    """A binary real/fake classifier whose forward returns ``(logits, features)``.

    ``features`` are the penultimate (pre-logit) activations the tutor's state is built from. Build one from a
    timm model name with :meth:`from_timm`, or wrap any ``nn.Module`` classifier by naming its final layer:
    the features are then that layer's input, captured by a hook during the same forward pass.
    """

    def __init__(self, model: nn.Module, classifier_layer: str | None = None) -> None:
        super().__init__()
        self.model = model
        self._captured: torch.Tensor | None = None
        self._uses_timm_head = classifier_layer is None
        # The name, not the module: a second reference would register the layer twice (duplicate state_dict keys).
        self._classifier_layer = classifier_layer
        if self._uses_timm_head:
            if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
                raise TypeError(
                    f"{type(model).__name__} is not a timm model; pass classifier_layer= naming its final layer "
                    "(its input is taken as the features)"
                )
            self.num_features = int(model.num_features)
        else:
            layers = dict(model.named_modules())
            if classifier_layer not in layers:
                raise ValueError(
                    f"{type(model).__name__} has no layer {classifier_layer!r}; its layers include "
                    f"{', '.join(name for name in list(layers)[-8:] if name)}"
                )
            layer = layers[classifier_layer]
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"layer {classifier_layer!r} is a {type(layer).__name__}; it must be the final nn.Linear")
            layer.register_forward_pre_hook(self._capture_input)
            self.num_features = layer.in_features

    @classmethod
    def from_timm(cls, name: str, pretrained: bool | str | Path = False) -> Student:
        """A two-class timm backbone, from scratch by default.

        ``pretrained=True`` loads timm's published weights (needs the network); a path loads a local file of weights
        instead (see :func:`load_pretrained_file`). Either way the classifier is a new two-class head.
        """
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() for the names"
            raise ValueError(f"unknown backbone {name!r}{hint}")
        if isinstance(pretrained, (str, Path)):
            model = timm.create_model(name, num_classes=NUM_CLASSES)
            load_pretrained_file(model, Path(pretrained))
            return cls(model)
        try:
            return cls(timm.create_model(name, pretrained=bool(pretrained), num_classes=NUM_CLASSES))
        except OSError as error:  # network, proxy and Hugging Face Hub failures are all OSErrors
            raise RuntimeError(
                f"cannot download timm's pretrained weights of {name!r} ({type(error).__name__}: {error}); without "
                f"network access, fetch them where there is one (timm.create_model({name!r}, pretrained=True) saves "
                "them under ~/.cache/huggingface) and set the env setting pretrained_file: PATH to the file, or set "
                "pretrained: false to train from scratch"
            ) from error

    @property
    def classifier(self) -> nn.Linear:
        """The final nn.Linear, mapping the features to the logits: timm's ``get_classifier()``, or ``classifier_layer``.

        Raises a TypeError when it is not one ``nn.Linear`` (some timm models have none, a convolution, or two heads):
        what needs it (the ``val_alignment`` reward) relies on the head being linear.
        """
        if self._uses_timm_head:
            head = self.model.get_classifier()
            fix = "pick a backbone whose timm head is linear, or wrap the model with classifier_layer= naming its final nn.Linear"
        else:
            head = self.model.get_submodule(self._classifier_layer)
            fix = f"layer {self._classifier_layer!r} was replaced since the Student was built; put an nn.Linear back"
        if not isinstance(head, nn.Linear):
            raise TypeError(f"the classifier of {type(self.model).__name__} ({type(head).__name__}) is not an nn.Linear; {fix}")
        return head

    def _capture_input(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured = inputs[0]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._uses_timm_head:
            features = self.model.forward_head(self.model.forward_features(images), pre_logits=True)
            return self.model.get_classifier()(features), features
        logits = self.model(images)
        features, self._captured = self._captured, None
        return logits, features.flatten(1)

    @contextmanager
    def frozen_batch_statistics(self) -> Iterator[None]:
        """Forward in training mode without moving BatchNorm running statistics.

        The tutor's rewards compare predictions before and after an update; both must come from the same
        normalisation mode, and the second, no-grad pass must leave no trace in the model.

        A BatchNorm layer in training mode with ``track_running_stats`` off normalises with the batch's statistics
        and neither reads nor writes its running statistics or batch counter, so switching that flag is all it
        takes: no tensor is copied or restored (this runs on every step of the after-update rewards).
        """
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        for m in norms:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m in norms:
                m.track_running_stats = True
