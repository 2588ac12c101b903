"""The house's rules, checked on the code: the pure core imports no I/O, and all SQL lives in storage/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bastion"
PURE = [
    *sorted((ROOT / "masking").glob("*.py")),
    ROOT / "audit" / "chain.py",
    ROOT / "control" / "actions.py",
    ROOT / "control" / "patterns.py",
    ROOT / "control" / "policy.py",
    ROOT / "control" / "command_line.py",
    ROOT / "control" / "opaque.py",
    ROOT / "control" / "exec_match.py",
    ROOT / "control" / "approvals.py",
    ROOT / "shell" / "screen.py",
    ROOT / "shell" / "keys.py",
    ROOT / "shell" / "tracker.py",
]
IO_MODULES = {"asyncio", "asyncssh", "sqlite3", "sqlite_utils", "threading", "socket"}


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pure_core_imports_no_io(path: Path) -> None:
    found = {name for name in imported(path) if name.split(".")[0] in IO_MODULES}
    found |= {name for name in imported(path) if name.startswith(("bastion.storage", "bastion.ssh"))}
    assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"


def test_only_storage_talks_to_the_database() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted(ROOT.rglob("*.py"))
        if "storage" not in path.relative_to(ROOT).parts[:1]
        and {name.split(".")[0] for name in imported(path)} & {"sqlite3", "sqlite_utils"}
    ]
    assert offenders == []
