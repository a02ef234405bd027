"""The package's layers: imports run one way, from the command line down to the settings.

A module may import from its own room and from the rooms on lower floors, never from a room on
its own floor or above. Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mlflow_stack"

#: Floors, highest first; each set is the rooms (top-level modules or packages) on one floor.
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"__main__"}),
    frozenset({"cli"}),
    frozenset({"serve", "backup"}),
    frozenset({"native"}),
    frozenset({"server"}),
    frozenset({"sso"}),
    frozenset({"gc"}),
    frozenset({"stores"}),
    frozenset({"caching"}),
    frozenset({"settings"}),
    frozenset({"waiting"}),
    frozenset({"errors"}),
)
FLOOR_OF = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("mlflow_stack."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            found += [(node.lineno, name) for name in names if name.startswith("mlflow_stack.")]
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_room_has_a_floor() -> None:
    rooms = {p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0] for p in MODULES}
    assert rooms - {"__init__"} == set(FLOOR_OF)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downwards(path: Path) -> None:
    own = path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0]
    upward = [
        f"line {line}: {module}"
        for line, module in imports(path)
        if room_of(module) != own and FLOOR_OF[room_of(module)] <= FLOOR_OF[own]
    ]
    assert not upward, f"{own} imports from its own floor or above: {upward}"


def test_no_private_name_is_imported_across_modules() -> None:
    crossings = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow_stack"):
                crossings += [
                    f"{path.relative_to(PACKAGE)}:{node.lineno} {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert not crossings


def test_every_module_has_its_unit_tests_at_the_mirrored_path() -> None:
    """src/mlflow_stack/server/hosts.py is tested in tests/unit/server/test_hosts.py."""
    unit = PACKAGE.parents[1] / "tests" / "unit"
    missing = []
    for path in MODULES:
        if path.name in {"__init__.py", "__main__.py"}:
            continue
        relative = path.relative_to(PACKAGE)
        expected = unit / relative.parent / f"test_{relative.name}"
        if not expected.is_file():
            missing.append(str(expected.relative_to(unit.parents[1])))
    assert not missing, f"modules without a unit test module: {missing}"
