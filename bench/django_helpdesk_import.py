"""django-helpdesk's own IMAP importer over a mailbox, timed: the peer reference of bench/ingest.py.

    bench/.peers/django-helpdesk/bin/python bench/django_helpdesk_import.py \\
        --port PORT --user USER --password PASSWORD --scratch DIR

Runs in django-helpdesk's scratch venv (bench/ingest.py makes it), never in ours: it imports
only Django and django-helpdesk. It writes a minimal settings module into ``--scratch`` (SQLite
there, mail kept in memory by Django's locmem backend), migrates, adds one queue that reads
the IMAP mailbox on loopback, and times ``helpdesk.email.process_email`` (what its
``get_email`` management command runs) until the mailbox is read. Prints one JSON line:
``{"seconds": ..., "tickets": ..., "version": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SETTINGS = """
SECRET_KEY = "bench-only-not-a-secret"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.sites",
    "django.contrib.humanize",
    "django.contrib.messages",
    "rest_framework",
    "helpdesk",
]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
SITE_ID = 1
USE_TZ = True
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
HELPDESK_TEAMS_MODE_ENABLED = False
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING_CONFIG = None
TEMPLATES = [
    {{
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {{"context_processors": []}},
    }}
]
"""


def main() -> None:
    """Migrate, add the queue, time one import, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    database = args.scratch / "django-helpdesk.sqlite3"
    if database.exists():
        database.unlink()
    (args.scratch / "bench_helpdesk_settings.py").write_text(
        SETTINGS.format(database=str(database))
    )
    sys.path.insert(0, str(args.scratch))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_helpdesk_settings"

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("loaddata", "emailtemplate.json", verbosity=0)  # its new-ticket emails

    from importlib.metadata import version

    from helpdesk.email import process_email
    from helpdesk.models import Queue, Ticket

    Queue.objects.create(
        title="Billing",
        slug="billing",
        email_address=args.user,
        allow_email_submission=True,
        email_box_type="imap",
        email_box_host="127.0.0.1",
        email_box_port=args.port,
        email_box_ssl=False,
        email_box_user=args.user,
        email_box_pass=args.password,
        email_box_imap_folder="INBOX",
        email_box_interval=0,
        logging_type="none",
    )
    started = time.perf_counter()
    process_email(quiet=True, debug_to_stdout=os.environ.get("BENCH_DEBUG") == "1")
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "tickets": Ticket.objects.count(),
                "version": version("django-helpdesk"),
            }
        )
    )


if __name__ == "__main__":
    main()
