"""A grid's plan: the seeds and datasets fixed before its first cell ran, and every extension made after.

Seeing a grid's results and then adding seeds until a difference turns significant inflates false positives, so a
benchmark directory keeps ``plan.json``: the Student seeds, datasets, tutors and variants that its config listed when
the directory got its first cell, the protocol, and a history of what was added since. Adding Student seeds or
datasets to a directory that holds finished cells needs ``tsrl benchmark --extend``, and the summary says that the
grid was extended, from what and when. Adding a tutor or a variant is recorded too (it changes no finished cell).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tsrl_env.files import write_atomically

PLAN_NAME = "plan.json"
EXTENDED_BY_FLAG = ("seeds", "datasets")
"""What only ``--extend`` may add to a grid with finished cells."""
RECORDED_ADDITIONS = ("tutors", "variants")


class GridExtended(ValueError):
    """A run would add seeds or datasets to a grid whose cells were already seen, without ``--extend``."""


def planned(
    protocol: str | None, seeds: Sequence[int], datasets: Sequence[str], tutors: Sequence[str], variants: Sequence[str]
) -> dict[str, Any]:
    """What a grid's config file fixes (not a run-time selection of it such as ``--seeds`` or ``--tutors``)."""
    return {
        "protocol": protocol or "legacy",
        "seeds": sorted(int(seed) for seed in seeds),
        "datasets": list(datasets),
        "tutors": list(tutors),
        "variants": list(variants),
    }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def read_plan(out: Path) -> dict[str, Any] | None:
    path = out / PLAN_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"the grid plan {str(path)!r} cannot be read ({error}); restore it from version control") from None


def check_plan(out: Path, now: dict[str, Any], has_finished_cells: bool, extend: bool) -> None:
    """Write ``out``'s plan on its first run; later, refuse seeds or datasets beyond it unless ``extend`` (which
    records the extension), and record added tutors and variants. Call it while holding the directory's lock."""
    plan = read_plan(out)
    if plan is None:
        plan = {**now, "first_run": _now(), "history": []}
        if has_finished_cells:
            plan["history"].append({"when": plan["first_run"], "note": "plan written after cells had run (an older grid)"})
        _write(out, plan)
        return
    added = {key: [item for item in now[key] if item not in plan[key]] for key in (*EXTENDED_BY_FLAG, *RECORDED_ADDITIONS)}
    beyond = {key: added[key] for key in EXTENDED_BY_FLAG if added[key]}
    if beyond and has_finished_cells and not extend:
        listed = "; ".join(f"{key} {values} (planned: {plan[key]})" for key, values in beyond.items())
        raise GridExtended(
            f"the grid under {out} already has finished cells and this run adds {listed}. Its seeds and datasets were "
            "fixed before it ran: add --extend to extend it (the results will say so), or give another --out"
        )
    if not any(added.values()):
        return
    entry = {"when": _now(), **{f"added_{key}": values for key, values in added.items() if values}}
    entry["extension"] = bool(beyond) and has_finished_cells
    for key, values in added.items():
        plan[key] = list(plan[key]) + values
    plan["history"].append(entry)
    _write(out, plan)


def _write(out: Path, plan: dict[str, Any]) -> None:
    write_atomically(out / PLAN_NAME, json.dumps(plan, indent=1).encode())


def plan_report(out: Path, protocol: str | None = None) -> str:
    """Markdown lines: the protocol the grid was measured under (its plan's, else ``protocol``) and, if it was
    extended, from what and when."""
    plan = read_plan(out) or {"protocol": protocol or "legacy", "history": []}
    protocol = plan["protocol"]
    lines = [
        f"Protocol: {protocol}."
        + (
            " Measured before the evaluation protocol: teaching and evaluation Students shared their dataset"
            " (images and flipped labels), so a taught tutor's numbers here are not held out (docs/protocol.md)."
            if protocol == "legacy"
            else " Teaching and evaluation use disjoint data and seeds (docs/protocol.md)."
        )
    ]
    for entry in plan.get("history", []):
        if "note" in entry:
            continue
        added = ", ".join(f"{key.removeprefix('added_')} {value}" for key, value in entry.items() if key.startswith("added_"))
        when = entry["when"]
        lines.append(
            f"Extended after cells had been seen, on {when}: added {added}."
            if entry.get("extension")
            else f"Added on {when}: {added}."
        )
    return "\n".join(lines) + "\n"
