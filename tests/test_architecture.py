"""Imports run one way: helpdesk_app -> jobs -> mail -> core (DESIGN.md §2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "core": {"helpdesk_app", "jobs", "mail", "flask", "rq", "redis", "imapclient"},
    "mail": {"helpdesk_app", "jobs", "flask", "rq", "redis"},
    "jobs": {"helpdesk_app", "flask"},
}
PURE = {"core/policy", "core/playbooks.py", "core/domain.py", "core/errors.py", "core/settings.py"}
IO_LIBRARIES = {"sqlalchemy", "stripe", "requests", "redis", "imapclient", "smtplib", "socket"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_roots(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_policy_and_playbooks_do_no_io():
    offenders = {}
    for entry in PURE:
        for path in [ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"):
            bad = imported_roots(path) & IO_LIBRARIES
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
