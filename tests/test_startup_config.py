"""Bad configuration stops a process at start-up with one clear line naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.errors import ConfigError
from core.settings import Settings
from helpdesk_app.demo.servers import free_port


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "REDIS_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "helpdesk_app", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def good_env(tmp_path, redis_url) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": redis_url,
        "STRIPE_API_KEY": "sk_test_x",
        "SMTP_HOST": "127.0.0.1",
        "IMAP_HOST": "127.0.0.1",
        "IMAP_USER": "u",
        "IMAP_PASSWORD": "p",
        "SECRET_KEY": "startup-test-secret-0123456789",
    }


@pytest.mark.parametrize(
    ("command", "override", "setting"),
    [
        ("worker", {"STRIPE_API_KEY": ""}, "STRIPE_API_KEY"),
        ("web", {"STRIPE_API_KEY": ""}, "STRIPE_API_KEY"),
        ("web", {"SECRET_KEY": ""}, "SECRET_KEY"),
        ("web", {"SECRET_KEY": "short"}, "SECRET_KEY"),
        ("worker", {"STRIPE_API_KEY": "pk_test_publishable"}, "STRIPE_API_KEY"),
        ("worker", {"REDIS_URL": "redis://127.0.0.1:{free}/0"}, "REDIS_URL"),
        ("poll-mail", {"REDIS_URL": "redis://127.0.0.1:{free}/0"}, "REDIS_URL"),
        ("worker", {"REDIS_URL": "http://example.invalid"}, "REDIS_URL"),
        ("worker", {"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ("worker", {"DATABASE_URL": "mysql://root@127.0.0.1/x"}, "DATABASE_URL"),
        ("web", {"DATABASE_URL": "postgresql://nobody@127.0.0.1:{free}/x"}, "DATABASE_URL"),
        ("db", {"DATABASE_URL": "postgresql://nobody@127.0.0.1:{free}/x"}, "DATABASE_URL"),
        ("poll-mail", {"IMAP_HOST": ""}, "IMAP_HOST"),
        ("worker", {"SMTP_PORT": "twenty-five"}, "SMTP_PORT"),
    ],
)
def test_bad_setting_fails_with_one_line_naming_it(good_env, command, override, setting):
    env = {**good_env, **{k: v.format(free=free_port()) for k, v in override.items()}}
    args = ["db", "upgrade"] if command == "db" else [command]
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert setting in lines[0]
    assert "Traceback" not in result.stderr


def test_demo_mode_needs_no_stripe_key_or_redis_url():
    settings = Settings.from_env({"BILLING_DESK_DEMO": "true"})
    assert settings.redis_url is None  # embedded
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        Settings.from_env({}).require_stripe()


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"IMAP_PORT": "0"}, "IMAP_PORT"),
        ({"SMTP_STARTTLS": "maybe"}, "SMTP_STARTTLS"),
        ({"IMAP_POLL_INTERVAL": "-5"}, "IMAP_POLL_INTERVAL"),
        ({"SIGN_IN_ACCOUNT_FAILURES": "0"}, "SIGN_IN_ACCOUNT_FAILURES"),
        ({"SIGN_IN_ADDRESS_FAILURES": "many"}, "SIGN_IN_ADDRESS_FAILURES"),
        ({"SIGN_IN_WINDOW_MINUTES": "0"}, "SIGN_IN_WINDOW_MINUTES"),
        ({"SIGN_IN_LOCKOUT_MINUTES": "1.5"}, "SIGN_IN_LOCKOUT_MINUTES"),
        ({"HELPDESK": "freshdesk"}, "HELPDESK"),
        ({"HELPDESK": "zendesk", "ZENDESK_SUBDOMAIN": "acme"}, "ZENDESK_EMAIL"),
        (
            {"HELPDESK": "zendesk", "ZENDESK_SUBDOMAIN": "acme", "ZENDESK_EMAIL": "a@acme.test"},
            "ZENDESK_API_TOKEN",
        ),
        ({"HELPDESK": "helpscout"}, "HELPSCOUT_CLIENT_ID"),
        ({"ZENDESK_GROUPS": "finance"}, "ZENDESK_GROUPS"),
        ({"HELPSCOUT_TEAMS": "marketing=12"}, "HELPSCOUT_TEAMS"),
        ({"HELPSCOUT_REQUESTS_PER_MINUTE": "0"}, "HELPSCOUT_REQUESTS_PER_MINUTE"),
    ],
)
def test_settings_name_the_bad_variable(env, setting):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert raised.value.setting == setting


def test_helpdesk_settings_round_trip_through_the_environment():
    env = {
        "HELPDESK": "ZenDesk",
        "ZENDESK_SUBDOMAIN": "acme",
        "ZENDESK_EMAIL": "bot@acme.test",
        "ZENDESK_API_TOKEN": "t",
        "ZENDESK_WEBHOOK_SECRET": " one , two ",
        "ZENDESK_GROUPS": "finance=1, security=2",
        "HELPDESK_TRUST_SENDERS": "false",
    }
    settings = Settings.from_env(env)
    assert settings.helpdesk == "zendesk"
    assert settings.zendesk_webhook_secrets == ("one", "two")
    assert settings.zendesk_groups == ("finance=1", "security=2")
    assert settings.helpdesk_trust_senders is False
    assert Settings.from_env(settings.to_env()) == settings
