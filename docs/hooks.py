"""MkDocs hook: the registries' tables, written from the code at build time so that they never go stale.

A page asks for one with a marker on a line of its own: ``<!-- registry: tutors -->``, ``rewards``,
``state_columns`` or ``configs``. Each row is a registered name and the first paragraph of its docstring (for a
config, its leading comment), so a tutor, reward, state column or config added to the code appears in the docs
without any edit here. ``tests/test_docs.py`` renders every table.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

MARKER = re.compile(r"^<!-- registry: (\w+) -->$", flags=re.MULTILINE)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def _summary(text: str | None) -> str:
    """The first paragraph of a docstring or comment as one Markdown table cell."""
    paragraph = (text or "").strip().split("\n\n")[0]
    paragraph = " ".join(line.strip() for line in paragraph.splitlines())
    paragraph = re.sub(r":(?:class|func|meth|mod|data|attr):`~?([^`]+)`", r"`\1`", paragraph)
    return paragraph.replace("``", "`").replace("|", "\\|")


def _qualified(cls: type) -> str:
    return f"`{cls.__module__}.{cls.__qualname__}`"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def tutors_table() -> str:
    import agents

    rows = [(f"`{name}`", spec.kind, _summary(inspect.getdoc(spec.make))) for name, spec in agents.TUTORS.items()]
    return _table(("name", "kind", "what it does (its docstring)"), rows)


def rewards_table() -> str:
    from tsrl_env.rewards import REWARDS

    rows = [(f"`{name}`", _qualified(cls), _summary(inspect.getdoc(cls))) for name, cls in REWARDS.items()]
    return _table(("name", "class", "what it pays (its docstring)"), rows)


def state_columns_table() -> str:
    from tsrl_env.state import DEFAULT_STATE_COLUMNS, STATE_COLUMNS

    rows = [
        (
            f"`{name}`",
            "yes" if name in DEFAULT_STATE_COLUMNS else "",
            f"`{cls.__module__}.{cls.__qualname__}`",
            _summary(inspect.getdoc(cls)),
        )
        for name, cls in STATE_COLUMNS.items()
    ]
    return _table(("name", "default", "class", "what it holds (its docstring)"), rows)


def configs_table() -> str:
    rows = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        rows.append((f"`{path.stem}`", _summary("\n".join(comment))))
    return _table(("config", "what it is (its leading comment)"), rows)


TABLES: dict[str, Callable[[], str]] = {
    "tutors": tutors_table,
    "rewards": rewards_table,
    "state_columns": state_columns_table,
    "configs": configs_table,
}


def render(markdown: str) -> str:
    """``markdown`` with every registry marker replaced by its table; an unknown marker raises a KeyError."""
    return MARKER.sub(lambda match: TABLES[match.group(1)](), markdown)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return render(markdown)
