"""What `make test` needs beyond Python: Debian's Chromium and Dovecot. Install or name them.

The browser tests drive Debian's Chromium (tests/test_browser_sidebar.py) and the mail
reliability tests run against Dovecot as well as pymap (tests/test_mail_reliability.py). Where
either is missing and this runs as root on a machine with apt-get, it installs the package
(Dovecot without letting the package start the system's own service); otherwise it stops at once
with one line saying what is missing and how to get it. Nothing is skipped: a suite that quietly
left out its browser or its second IMAP server would pass while testing less.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@dataclass(frozen=True)
class Need:
    """A program the suite runs, and the Debian package it comes in."""

    name: str
    program: str
    package: str
    used_by: str

    def present(self) -> bool:
        """Whether the program is on this machine."""
        if Path(self.program).is_absolute():
            return os.access(self.program, os.X_OK)
        search = f"{os.environ.get('PATH', '')}:/usr/sbin"  # Dovecot lives in sbin
        return shutil.which(self.program, path=search) is not None


NEEDS = (
    Need("Chromium", "/usr/bin/chromium", "chromium", "the browser tests"),
    Need("Dovecot", "dovecot", "dovecot-imapd", "the mail reliability tests"),
)


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _install(packages: list[str]) -> None:
    """apt-get install, with services kept from starting (policy-rc.d answers 101: not allowed)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    placed = not POLICY_RC_D.exists()
    if placed:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if placed:
            POLICY_RC_D.unlink(missing_ok=True)


def main() -> int:
    """Install what is missing where we can; else one line naming it, and a failing status."""
    missing = [need for need in NEEDS if not need.present()]
    if not missing:
        return 0
    if _can_install():
        names = ", ".join(need.name for need in missing)
        print(f"preflight: installing {names} from Debian's packages for the tests")
        try:
            _install([need.package for need in missing])
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"preflight: apt-get could not install them ({exc})", file=sys.stderr)
        missing = [need for need in missing if not need.present()]
    for need in missing:
        print(
            f"make test needs {need.name} for {need.used_by}: "
            f"sudo apt-get install {need.package} (Debian/Ubuntu), then run make test again",
            file=sys.stderr,
        )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
