"""Several `billing-desk web` instances on one host: each with its own runtime directory.

gunicorn's default control socket is one path per user (``~/.gunicorn/gunicorn.ctl``, or
``$XDG_RUNTIME_DIR/gunicorn.ctl``), which a second instance would take from the first. Real
web processes are started with one HOME between them and no XDG_RUNTIME_DIR.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from core.db import session_scope
from core.db.models import InboundEmail
from helpdesk_app.demo import servers

pytestmark = pytest.mark.e2e

CONTROL_SOCKET_LINE = re.compile(r"Control socket listening at (\S+)")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def web_env(settings, db_engine, home: Path) -> dict[str, str]:
    """The environment of a web process, sharing one HOME with every other instance."""
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    env.update(settings.to_env())
    env.update({"HOME": str(home), "LOG_FORMAT": "text"})
    return env


class Web:
    """A `billing-desk web` child process on a port of its own."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.port = servers.free_port()
        self.log_path = directory / f"{name}.log"
        argv = [sys.executable, "-m", "helpdesk_app", "web", "--port", str(self.port)]
        self.server = servers.spawn(name, [*argv, "--workers", "1"], self.log_path, env=env)

    def wait_until_serving(self) -> None:
        servers.wait_for_port(self.port, self.server.process, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def control_socket(self) -> Path:
        match = CONTROL_SOCKET_LINE.search(self.log())
        assert match, self.log()
        return Path(match.group(1))

    def stop(self) -> int | None:
        self.server.stop(timeout=15)
        return self.server.process.returncode


@pytest.fixture
def start_web(web_env, tmp_path) -> Iterator:
    started: list[Web] = []

    def start(name: str, **extra: str) -> Web:
        web = Web(name, {**web_env, **extra}, tmp_path)
        started.append(web)
        return web

    yield start
    for web in started:
        web.stop()


def wait_for_control_socket(web: Web) -> Path:
    """The control socket's path, once gunicorn has said it listens there (bounded wait)."""
    web.wait_until_serving()
    deadline = time.monotonic() + 30
    while not CONTROL_SOCKET_LINE.search(web.log()):
        assert web.server.process.poll() is None, web.log()
        assert time.monotonic() < deadline, f"no control socket line in\n{web.log()}"
        time.sleep(0.05)
    return web.control_socket()


def test_two_instances_with_one_home_both_answer_and_write_nothing_under_home(start_web, home):
    first, second = start_web("first"), start_web("second")
    for web in (first, second):
        web.wait_until_serving()

    for web in (first, second):
        response = requests.get(f"http://127.0.0.1:{web.port}/login", timeout=10)
        assert response.status_code == 200, web.log()
        # Database, Redis and a Stripe call: what a library might keep a file for, too.
        response = requests.get(f"http://127.0.0.1:{web.port}/readyz", timeout=10)
        assert response.status_code == 200, web.log()
    sockets = [wait_for_control_socket(web) for web in (first, second)]
    assert sockets[0] != sockets[1]
    assert all(path.is_socket() for path in sockets)
    assert not any(home in path.parents for path in sockets)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []

    run_dirs = [path.parent for path in sockets]
    assert first.stop() == 0
    assert not run_dirs[0].exists()  # removed by the instance that made it
    assert run_dirs[1].exists()  # and only that one
    response = requests.get(f"http://127.0.0.1:{second.port}/login", timeout=10)
    assert response.status_code == 200
    assert second.stop() == 0
    assert not run_dirs[1].exists()


def test_run_dir_puts_the_control_socket_there_and_a_second_instance_may_not_share_it(
    start_web, tmp_path
):
    run_dir = tmp_path / "run" / "web-1"
    first = start_web("first", RUN_DIR=str(run_dir))
    assert wait_for_control_socket(first) == run_dir / "gunicorn.ctl"

    second = start_web("second", RUN_DIR=str(run_dir))
    assert second.server.process.wait(60) == 2
    assert "configuration error: RUN_DIR:" in second.log()
    assert (run_dir / "gunicorn.ctl").is_socket()  # the first instance's socket is untouched
    response = requests.get(f"http://127.0.0.1:{first.port}/login", timeout=10)
    assert response.status_code == 200

    assert first.stop() == 0
    assert run_dir.is_dir()  # a directory it was given is left for its owner (systemd)


def test_the_procfile_processes_share_only_the_database_and_redis(
    settings, db_engine, rt, mailbox_client, tmp_path
):
    """web, a worker and the poller, each with a directory, HOME and TMPDIR of its own (as on
    three machines): an email appended becomes a triaged ticket, and the web is ready."""
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    env.update(settings.to_env())
    env.update({"LOG_FORMAT": "text", "MAIL_LEASE_SECONDS": "6"})
    port = servers.free_port()
    commands = {
        "web": ["web", "--port", str(port), "--workers", "1"],
        "worker": ["worker", "--processes", "1"],
        "mailpoll": ["poll-mail"],
    }
    places: dict[str, Path] = {}
    children = []
    for name, args in commands.items():
        place = tmp_path / name
        for sub in ("home", "tmp"):
            (place / sub).mkdir(parents=True)
        places[name] = place
        own = {**env, "HOME": str(place / "home"), "TMPDIR": str(place / "tmp")}
        argv = [sys.executable, "-m", "helpdesk_app", *args]
        process = subprocess.Popen(
            argv,
            env=own,
            cwd=place,
            stdout=open(place / "log", "wb"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
        )
        children.append(process)
    try:
        servers.wait_for_port(port, children[0], timeout=60)
        mailbox_client.append(
            "INBOX",
            b"From: Pat <pat@example.com>\r\nTo: billing@example.com\r\n"
            b"Subject: Where is my invoice?\r\nMessage-ID: <procfile-1@example.com>\r\n\r\n"
            b"Hello, where can I download last month's invoice?\r\n",
        )
        deadline = time.monotonic() + 120
        while not _triaged(rt):
            for name, process in zip(commands, children, strict=True):
                assert process.poll() is None, (places[name] / "log").read_text()
            assert time.monotonic() < deadline, "the email was not triaged within 120 s"
            time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    finally:
        for process in children:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(60) for process in children]
    assert codes == [0, 0, 0], {n: (places[n] / "log").read_text()[-2000:] for n in commands}
    # Nothing under any HOME, but for onnxruntime's own telemetry ID and queue (a native
    # library's ~/.cache/Microsoft/DeveloperTools/.onnxruntime, locked for several processes;
    # it runs as well without a writable HOME), written where the classifier loads.
    onnxruntime_cache = Path(".cache/Microsoft/DeveloperTools/.onnxruntime")
    for name, place in places.items():
        home = place / "home"
        written = [
            path.relative_to(home)
            for path in home.rglob("*")
            if path.is_file() and onnxruntime_cache not in path.relative_to(home).parents
        ]
        assert written == [], name


def _triaged(rt) -> bool:
    with session_scope(rt.session_factory) as session:
        email = session.scalar(select(InboundEmail))
        return email is not None and email.ticket_id is not None and email.status == "processed"


def test_an_installed_copy_finds_the_email_templates_it_was_installed_with(tmp_path, monkeypatch):
    """Without a checkout around it, the templates are the ones pip put under the prefix."""
    import tomllib

    from core import settings as settings_module

    project = settings_module.PROJECT_ROOT
    data_files = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    shipped = {
        path.name
        for pattern in data_files["share/billing-desk/templates"]
        for path in project.glob(pattern)
    }
    assert shipped == {path.name for path in (project / "templates").iterdir() if path.is_file()}

    monkeypatch.setattr(settings_module, "PROJECT_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(settings_module.sys, "prefix", str(tmp_path / "venv"))
    assert settings_module.default_email_templates_dir() == str(
        tmp_path / "venv" / "share" / "billing-desk" / "templates"
    )
