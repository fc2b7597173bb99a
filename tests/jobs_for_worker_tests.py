"""Jobs for tests/test_worker_model.py, run by real worker processes (tests/ on PYTHONPATH).

Each leaves files in the directory the test names, so the test sees what ran, in which
process and how often.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _note(directory: str, name: str, suffix: str) -> None:
    with Path(directory, f"{name}.{suffix}").open("a") as marker:
        marker.write(f"{os.getpid()}\n")


def pids(directory: str, name: str, suffix: str) -> list[int]:
    """The process IDs a job wrote to one of its markers, in order (empty if none)."""
    path = Path(directory, f"{name}.{suffix}")
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def record(directory: str, name: str) -> int:
    """Finish at once, noting this process's ID in ``<name>.done``."""
    _note(directory, name, "done")
    return os.getpid()


def sleep_first_time(directory: str, name: str, seconds: float) -> int:
    """Note the start; the first run then sleeps (time for the test to kill its process),
    a run after that finishes at once."""
    first = not pids(directory, name, "started")
    _note(directory, name, "started")
    if first:
        time.sleep(seconds)
    return record(directory, name)


def sleep_then_record(directory: str, name: str, seconds: float) -> int:
    """Note the start, sleep, note the end."""
    _note(directory, name, "started")
    time.sleep(seconds)
    return record(directory, name)


def kill_own_process(directory: str, name: str) -> None:
    """Note the run, then SIGKILL the process running it, every time (as the OOM killer or a
    segfault in a C library would)."""
    _note(directory, name, "started")
    os.kill(os.getpid(), signal.SIGKILL)


def record_classifier_state(directory: str, name: str) -> int:
    """Like ``record``, noting in ``<name>.classifier`` whether this process holds the
    classifier ("loaded") or never loaded it ("absent")."""
    import sys

    classifier = sys.modules.get("mail.classifier")
    loaded = classifier is not None and classifier._model is not None
    Path(directory, f"{name}.classifier").write_text("loaded" if loaded else "absent")
    return record(directory, name)
