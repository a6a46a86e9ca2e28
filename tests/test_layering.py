"""House rule 1: imports flow one way (architecture spec, "Rooms")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("server", "models", "dicom_node", "reports")
#: What each room may import from the project besides itself.
ALLOWED: dict[str, set[str]] = {
    "server": {"dicom_node", "models", "reports"},
    "models": set(),
    "dicom_node": set(),
    "reports": {"models.findings"},
}


def _project_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return [(line, name) for line, name in found if name.split(".")[0] in ROOMS]


def _allowed(room: str, name: str) -> bool:
    if name.split(".")[0] == room:
        return True
    return any(name == a or name.startswith(a + ".") for a in ALLOWED[room])


@pytest.mark.parametrize("room", ROOMS)
def test_imports_flow_one_way(room: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / room).rglob("*.py"))
        for line, name in _project_imports(path)
        if not _allowed(room, name)
    ]
    assert not violations, "\n".join(violations)


def test_checker_detects_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from server.crud import index_instance\nimport reports.sr\n")
    names = [name for _, name in _project_imports(bad)]
    assert names == ["server.crud.index_instance", "reports.sr"]
    assert not _allowed("models", names[0]) and not _allowed("dicom_node", names[1])
    assert _allowed("reports", "models.findings.Findings")
