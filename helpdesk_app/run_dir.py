"""Each web process's own directory for runtime files, so instances on one host never collide.

gunicorn puts its control socket at ``$XDG_RUNTIME_DIR/gunicorn.ctl`` or
``~/.gunicorn/gunicorn.ctl`` unless told otherwise: one path for every instance a user runs,
where a second instance unlinks the first one's socket and the first, stopping, removes the
second's. So ``billing-desk web`` gives gunicorn a directory of its own for the socket and its
workers' heartbeat files: ``RUN_DIR`` when set (systemd's ``RuntimeDirectory=``, for people
who use ``gunicornc``), else a fresh private temporary directory, removed when the process
stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.errors import ConfigError

CONTROL_SOCKET = "gunicorn.ctl"


@contextlib.contextmanager
def instance_run_dir(configured: str | None) -> Iterator[Path]:
    """``configured`` (created if missing, refused if a live instance uses it), else a fresh
    temporary directory that the process which made it removes on the way out."""
    if configured:
        path = Path(configured)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _refuse_if_in_use(path / CONTROL_SOCKET)
        yield path
        return
    owner = os.getpid()
    path = Path(tempfile.mkdtemp(prefix="billing-desk-web-"))
    try:
        yield path
    finally:
        # gunicorn forks its workers inside the server's run(): they leave through here too.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)


def _refuse_if_in_use(control_socket: Path) -> None:
    """Fail if a running instance answers on this control socket (a stale one is harmless)."""
    if not control_socket.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(control_socket))
        except OSError:
            return  # left behind by an instance that died: gunicorn replaces it
    raise ConfigError(
        "RUN_DIR",
        f"{control_socket.parent} is in use by another running instance; "
        "give each instance its own",
    )
