"""The rooms of dissectors/ import only through the doors docs/architecture.md lists (its table is the rule)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "dissectors"


def doors() -> dict[str, set[str] | None]:
    """room -> rooms it may import (None: every room), from the table of docs/architecture.md."""
    out: dict[str, set[str] | None] = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        m = re.match(r"^\| `(\w+)` \| .* \| (.*) \|$", line)
        if m:
            allowed = m.group(2)
            out[m.group(1)] = None if allowed.strip() == "every room" else set(re.findall(r"`(\w+)`", allowed))
    return out


def rooms() -> list[str]:
    return sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def imports(room: str) -> dict[str, list[str]]:
    """room imported -> files of ``room`` that import it (absolute ``dissectors.X`` and relative ``..X``)."""
    found: dict[str, list[str]] = {}
    for path in (PKG / room).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module:
                    names = [node.module]
                elif node.level == 2 and node.module:
                    names = ["dissectors." + node.module]
                elif node.level == 2:
                    names = ["dissectors." + a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "dissectors" and len(parts) > 1 and parts[1] != room and parts[1] != "__init__":
                    found.setdefault(parts[1], []).append(str(path.relative_to(ROOT)))
    return found


def test_every_room_is_in_the_table():
    assert set(rooms()) == set(doors()), (rooms(), sorted(doors()))


def test_imports_go_through_the_documented_doors():
    table = doors()
    wrong = []
    for room in rooms():
        allowed = table[room]
        if allowed is None:
            continue
        for target, files in imports(room).items():
            if target not in allowed:
                wrong.append(f"{room} imports {target} ({', '.join(sorted(set(files))[:3])})")
    assert not wrong, "imports through a door docs/architecture.md does not list:\n  " + "\n  ".join(wrong)


def test_the_door_check_sees_imports():
    assert "layers" in imports("channels") and {"channels", "tcp"} <= set(imports("analysis"))
    assert "errors" in imports("capture")          # the relative ``from ..errors import`` form
