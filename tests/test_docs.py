"""The README and the documentation site: their Python examples run as written, the site's navigation holds every
page, the registry tables are written from the code, and the README stays short with its two commands first.

``mkdocs build --strict`` itself runs in CI after the test suite (``.ci/run``); nothing here needs MkDocs installed.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# docs/design.md's examples are run by tests/test_design_examples.py.
PAGES = [README, *sorted(path for path in DOCS.rglob("*.md") if path.name != "design.md")]
README_COMMANDS = [
    "scripts/setup.sh && .venv/bin/tsrl train",
    "scripts/setup.sh && .venv/bin/python -m pytest",
]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


# Each distinct example once, named by the first page that shows it (the README's example is also Getting started's).
EXAMPLES: dict[str, str] = {}
for _page in PAGES:
    for _number, _block in enumerate(python_blocks(_page)):
        if _block not in EXAMPLES.values():
            EXAMPLES[f"{_page.relative_to(ROOT)}[{_number}]"] = _block


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_page_with_python_has_its_examples_collected():
    assert "README.md[0]" in EXAMPLES
    assert {name.split("[")[0] for name in EXAMPLES} >= {
        "README.md",
        "docs/environment.md",
        "docs/tutors.md",
        "docs/state-columns.md",
        "docs/benchmark.md",
    }
    assert python_blocks(README)[0] in python_blocks(DOCS / "getting-started.md"), "Getting started shows the README's example"


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_docs_example_runs_and_prints(name, one_torch_thread, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # examples read committed results by their path in the repository
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exec(compile(EXAMPLES[name], name, "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.strip(), "every example prints what it shows"
    assert not list(tmp_path.glob("SB3-*")), "an example leaves an SB3 log folder in the temporary directory"


def test_readme_is_short_and_starts_with_its_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == README_COMMANDS
    assert "\n## Where the results stand\n" in text
    assert len(python_blocks(README)[0].strip().splitlines()) <= 20


def test_ci_runs_the_readme_test_command_then_builds_the_docs_strictly():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    test_line = lines.index("scripts/setup.sh && .venv/bin/python -m pytest")
    assert any("mkdocs build --strict" in line for line in lines[test_line + 1 :])


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_site_navigation_holds_every_page_and_only_existing_ones():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    on_disk = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(nav) == on_disk
    for page in ("design.md", "changelog.md", "api/tsrl_env.md", "api/agents.md", "api/experiments.md"):
        assert page in nav


def test_readme_links_point_at_files_in_the_repository():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_registry_tables_list_every_registered_name():
    import agents
    from tsrl_env.rewards import REWARDS
    from tsrl_env.state import STATE_COLUMNS

    hooks = _hooks()
    for marker, names in (
        ("tutors", agents.TUTORS),
        ("rewards", REWARDS),
        ("state_columns", STATE_COLUMNS),
        ("configs", [path.stem for path in (ROOT / "experiments" / "configs").glob("*.yaml")]),
    ):
        table = hooks.render(f"<!-- registry: {marker} -->")
        rows = [line for line in table.splitlines() if line.startswith("| `")]
        assert sorted(row.split("`")[1] for row in rows) == sorted(names), marker
        assert all(row.count(" | ") == table.splitlines()[0].count(" | ") for row in rows), "a cell broke the table"
    used = {marker for path in DOCS.rglob("*.md") for marker in hooks.MARKER.findall(path.read_text())}
    assert used == set(hooks.TABLES)


def test_nothing_cites_the_design_by_a_section_sign():
    cited = [
        str(path.relative_to(ROOT))
        for pattern in ("tsrl_env/**/*.py", "agents/*.py", "experiments/**/*.py", "experiments/configs/*.yaml")
        for path in ROOT.glob(pattern)
        if "DESIGN §" in path.read_text()
    ]
    assert not cited


def test_each_tutor_has_one_colour_in_every_figure():
    from experiments.analysis.figure_style import TUTOR_COLOURS, tutor_colour

    assert tutor_colour("uniform") == "#7f7f7f"
    assert len(set(TUTOR_COLOURS.values())) == len(TUTOR_COLOURS)
    assert tutor_colour("ppo") != tutor_colour("uniform")
    assert tutor_colour("ppo@next_visit") == tutor_colour("ppo")
    assert tutor_colour("a_tutor_not_listed") == tutor_colour("a_tutor_not_listed")
