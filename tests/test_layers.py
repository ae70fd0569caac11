"""The layout holds: imports point one way (experiments -> agents -> tsrl_env), no module imports itself back through
others (type hints aside), and ``tsrl --help`` starts without torch, Stable-Baselines3 or timm."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("tsrl_env", "agents", "experiments")
"""The packages from the bottom floor up: each may import only the ones before it."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the three packages and the project modules it imports at run time (``if TYPE_CHECKING:``
    blocks left out), each import resolved to the deepest module it names."""
    modules = {_module_name(path): path for layer in LAYERS for path in (ROOT / layer).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        type_only = {
            id(node)
            for statement in ast.walk(tree)
            if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test)
            for child in statement.body
            for node in ast.walk(child)
        }
        imported = set()
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        graph[name] = set()
        for target in imported:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                    if len(component) > 1:
                        found.append(sorted(component))
            elif successor not in index:
                index[successor] = low[successor] = len(index)
                stack.append(successor)
                work.append((successor, iter(sorted(graph[successor]))))
            elif successor in stack:
                low[node] = min(low[node], index[successor])
    return found


def test_a_cycle_of_modules_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph()) == []


def test_imports_point_from_the_application_down_to_the_environment():
    floor = {layer: number for number, layer in enumerate(LAYERS)}
    upward = [
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if floor[target.split(".")[0]] > floor[module.split(".")[0]]
    ]
    assert upward == []


def test_tsrl_help_imports_no_torch_stable_baselines3_or_timm():
    script = (
        "import contextlib, io, sys\n"
        "from experiments.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(name for name in ('torch', 'stable_baselines3', 'timm') if name in sys.modules))\n"
    )
    shown = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"
