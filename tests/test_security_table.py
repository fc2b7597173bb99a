"""SECURITY.md's endpoint table cannot drift: every route and method of the app has its row,
every row is a route of the app, and every test the document cites is collected by pytest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECURITY = ROOT / "SECURITY.md"
SECTION = "## HTTP endpoints"
# | `GET` | `/tickets/<int:ticket_id>` | ... | tests |
ROW = re.compile(r"^\|\s*`(?P<method>[A-Z]+)`\s*\|\s*`(?P<rule>/[^`]*)`\s*\|(?P<rest>.*)\|\s*$")
NODE_ID = re.compile(r"`(tests/[\w/]+\.py::\w+)`")
IMPLIED = {"HEAD", "OPTIONS"}  # werkzeug answers these for every GET route itself


def _text() -> str:
    return SECURITY.read_text(encoding="utf-8")


def _table() -> dict[tuple[str, str], str]:
    """(method, rule) -> the rest of its row, for each row of the endpoint table."""
    text = _text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    rows: dict[tuple[str, str], str] = {}
    for line in text[start : end if end != -1 else None].splitlines():
        match = ROW.match(line)
        if match:
            key = (match["method"], match["rule"])
            assert key not in rows, f"two rows for {key}"
            rows[key] = match["rest"]
    return rows


def _routes(app) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in IMPLIED
    }


def test_the_table_has_a_row_for_every_route_and_method_of_the_app(app):
    missing = _routes(app) - set(_table())
    assert not missing, f"routes with no row in SECURITY.md: {sorted(missing)}"


def test_every_row_of_the_table_is_a_route_of_the_app(app):
    stale = set(_table()) - _routes(app)
    assert not stale, f"rows in SECURITY.md for no route of the app: {sorted(stale)}"


def test_every_row_cites_at_least_one_test():
    bare = [key for key, rest in _table().items() if not NODE_ID.search(rest)]
    assert not bare, f"rows citing no test: {bare}"


def _collected(files: set[str]) -> set[str]:
    """The node IDs pytest collects from these files, parameters dropped."""
    found = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]
    return {line.split("[", 1)[0] for line in found.stdout.splitlines() if "::" in line}


def test_every_test_the_document_cites_exists():
    cited = set(NODE_ID.findall(_text()))
    assert len(cited) > 50  # the table and the sections below it cite real tests
    files = {node.split("::", 1)[0] for node in cited}
    absent = [f for f in files if not (ROOT / f).is_file()]
    assert not absent, f"cited test files that do not exist: {absent}"
    unknown = cited - _collected(files)
    assert not unknown, f"cited tests pytest does not collect: {sorted(unknown)}"
