"""The Tutor-Student loop as a picture: what one environment step does, stage by stage.

``python -m experiments.studies.diagram OUT_PNG`` writes it (the docs' ``docs/images/tutor_student_loop.png``), drawn with
matplotlib from the stages below so that the picture changes only with them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.text import Text

# Who does a stage: its box's fill and edge, and its legend entry.
ROLES = {
    "student": ("#dbe4f3", "#3c5488", "the Student (the deepfake detector)"),
    "tutor": ("#f8d7d7", "#d62728", "the tutor (the agent)"),
    "data": ("#f2f2f2", "#7f7f7f", "what passes between them"),
}
# The stages of one step, clockwise from the upper left: (role, text). The last leads back to the first.
STAGES = (
    ("student", "Student\ntrains on a mini-batch\n(training forward)"),
    ("data", "state rows\none per sample: features, EMA loss,\ncounters, p_fake, correct, ..."),
    ("tutor", "Tutor\nPPO, SAC, a heuristic, ...\n(the observation is the rows)"),
    ("data", "per-sample weights\nwᵢ ∈ [0, 1]\n(the action)"),
    ("student", "weighted update\nthe Student steps on Σ wᵢ ℓᵢ,\nthen predicts again"),
    ("data", "reward\nper sample, before vs after the update:\nwrong→right +1, right→wrong −1"),
)


def draw_loop() -> Figure:
    """The loop: the stages of :data:`STAGES` on a ring, each arrow one hand-over, the ring closed by the next
    mini-batch, and the reward's second path, back to the tutor that learns from it."""
    figure = Figure(figsize=(11, 6.4), layout="constrained")
    axis = figure.subplots()
    axis.set(xlim=(0, 12), ylim=(0, 7), aspect="equal")
    axis.axis("off")
    boxes: list[Text] = []
    for index, (role, text) in enumerate(STAGES):
        angle = math.radians(150 - 60 * index)
        fill, edge, _ = ROLES[role]
        title, rest = text.split("\n", 1)
        box = axis.text(
            6 + 4.4 * math.cos(angle),
            3.5 + 2.55 * math.sin(angle),
            f"{_bold(title)}\n{rest}",
            ha="center",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "round,pad=0.6", "facecolor": fill, "edgecolor": edge, "linewidth": 1.8},
        )
        boxes.append(box)
    for start, end in zip(boxes, boxes[1:] + boxes[:1], strict=True):
        _arrow(axis, start, end, connectionstyle="arc3,rad=-0.12")
    axis.text(0.35, 3.5, "next\nmini-batch", ha="center", va="center", fontsize=9, style="italic")
    _arrow(axis, boxes[5], boxes[2], linestyle="--", color=ROLES["tutor"][1])
    (x0, y0), (x1, y1) = boxes[5].get_position(), boxes[2].get_position()
    axis.text(
        (x0 + x1) / 2,
        (y0 + y1) / 2 - 0.3,
        "the reward trains the tutor (RL)",
        ha="center",
        va="center",
        fontsize=9,
        style="italic",
        rotation=math.degrees(math.atan2(y1 - y0, x1 - x0)),
        rotation_mode="anchor",
        color=ROLES["tutor"][1],
    )
    axis.text(6.0, 4.35, "one environment step = one mini-batch", ha="center", va="center", fontsize=10, color="#555555")
    handles = [Patch(facecolor=fill, edgecolor=edge, label=label) for fill, edge, label in ROLES.values()]
    axis.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False, fontsize=9)
    figure.suptitle("The Tutor-Student loop: DeepfakeCurriculum-v0, one step", fontsize=13)
    return figure


def _arrow(axis: Axes, start: Text, end: Text, **style: Any) -> None:
    """An arrow from box ``start`` to box ``end``, from edge to edge."""
    props = {"arrowstyle": "-|>,head_width=0.35,head_length=0.6", "color": "#333333", "linewidth": 1.6}
    props |= {"patchA": start.get_bbox_patch(), "patchB": end.get_bbox_patch(), **style}
    axis.annotate("", xy=end.get_position(), xytext=start.get_position(), arrowprops=props)


def _bold(words: str) -> str:
    """``words`` in bold within a line of normal text (mathtext: spaces and hyphens kept as written)."""
    return "$\\bf{" + words.replace(" ", "~").replace("-", "\\text{-}") + "}$"


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.studies.diagram OUT_PNG``: write the loop picture."""
    parser = argparse.ArgumentParser(prog="python -m experiments.studies.diagram", description="Draw the Tutor-Student loop.")
    parser.add_argument("out", type=Path, help="the PNG file to write, e.g. docs/images/tutor_student_loop.png")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw_loop().savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
