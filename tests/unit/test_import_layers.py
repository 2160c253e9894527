"""The package's layers import downwards only, with no circle, in small modules.

Bottom up: keys/units/atomic/version, data/, nn/, accel/, energy, models/,
uncertainty/ (ensembles of models), potential and calculator, train/ and md/, analysis/ (reads trajectories),
workflows/ (studies combining them), config and the CLIs. Function-local imports
count too; imports under ``if TYPE_CHECKING:`` (type hints only) do not.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "equiforce"

#: what the front ends and upper layers are: nothing below them may import them
UPPER = (
    "equiforce.calculator",
    "equiforce.potential",
    "equiforce.engines",
    "equiforce.train",
    "equiforce.md",
    "equiforce.analysis",
    "equiforce.workflows",
    "equiforce.cli",
    "equiforce.config",
    "equiforce.config_errors",
)

#: package -> modules it must never import
FORBIDDEN = {
    "data": (*UPPER, "equiforce.models", "equiforce.accel", "equiforce.nn"),
    "nn": (*UPPER, "equiforce.models", "equiforce.accel"),
    "accel": (*UPPER, "equiforce.models"),
    "models": (*UPPER, "equiforce.uncertainty"),
    "uncertainty": UPPER,  # ensembles of models, used by the front ends
    "analysis": ("equiforce.md", "equiforce.workflows", "equiforce.train"),
    "md": ("equiforce.analysis", "equiforce.workflows", "equiforce.train"),
}

#: the longest module allowed, lines
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every equiforce module ``path`` imports at run time."""
    tree = ast.parse(path.read_text())
    hints = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            hints |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            subs = [s for s in subs if s in MODULES]  # `from pkg import module`
            out += [(node.lineno, s) for s in subs] or [(node.lineno, node.module)]
    return [(line, m) for line, m in out if m.startswith("equiforce")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upper_layers(package):
    banned = FORBIDDEN[package]
    bad = [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for path in sorted((SRC / package).rglob("*.py"))
        for line, module in _imports(path)
        if any(module == b or module.startswith(b + ".") for b in banned)
    ]
    assert not bad, "\n".join(bad)


def test_nothing_below_the_cli_imports_the_package_init():
    """``from equiforce import X`` of a name (not a module) would load the API."""
    bad = [
        f"{path.relative_to(SRC)}:{line}"
        for name, path in MODULES.items()
        if name not in ("equiforce", "equiforce.cli")
        for line, module in _imports(path)
        if module == "equiforce"
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph = defaultdict(set)
    for name, path in MODULES.items():
        graph[name] |= {m for _, m in _imports(path) if m in MODULES and m != name}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def test_modules_are_small():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
