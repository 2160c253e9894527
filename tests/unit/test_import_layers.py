"""The package's layers import downwards only (no md <-> analysis circle).

data/ reads and writes files, md/ runs simulations, analysis/ reads trajectories,
workflows/ combines md/ and analysis/. Function-local imports count too.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "equiforce"

#: package -> packages it must never import
FORBIDDEN = {
    "data": ("md", "analysis", "workflows"),
    "analysis": ("md", "workflows"),
    "md": ("analysis", "workflows"),
}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upper_layers(package):
    banned = tuple(f"equiforce.{name}" for name in FORBIDDEN[package])
    bad = [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for path in sorted((SRC / package).rglob("*.py"))
        for line, module in _imported_modules(path)
        if any(module == b or module.startswith(b + ".") for b in banned)
    ]
    assert not bad, "\n".join(bad)
