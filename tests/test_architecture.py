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
PURE = {
    "core/policy",
    "core/playbooks.py",
    "core/plans.py",
    "core/domain.py",
    "core/errors.py",
    "core/settings.py",
}
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


def python_files(*packages: str):
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            # Hidden folders are scratch (bench/.peers holds a peer's own virtualenv), not ours.
            if not any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                yield path


def test_no_module_outside_policy_builds_a_decision():
    """Policy returns the decision; nothing else invents one (no Decision(...) and no copy of
    one with changes, anywhere but core/policy)."""
    offenders = []
    for path in python_files("core", "mail", "jobs", "helpdesk_app", "bench"):
        if (ROOT / "core" / "policy") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            copies = name == "replace" and any(
                "decision" in ast.unparse(arg).lower() for arg in node.args
            )
            if name == "Decision" or copies:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_every_action_kind_has_its_module():
    """One module per action kind, behind one registry."""
    from core.actions.registry import registered
    from core.domain import ActionKind

    assert registered() == frozenset(ActionKind)
