"""The Zendesk app zip: the files Zendesk needs, pointing at our sidebar."""

from __future__ import annotations

import json
import struct
import zipfile

import pytest
from click.testing import CliRunner

from core.errors import InvalidInput
from helpdesk_app.cli import cli, main
from helpdesk_app.zendesk_package import build_zendesk_app

URL = "https://billing.example.com"


@pytest.fixture
def package(tmp_path):
    path = build_zendesk_app(URL + "/", tmp_path / "app.zip")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_zip_holds_exactly_the_app_files(package):
    assert sorted(package.namelist()) == [
        "assets/logo-small.png",
        "assets/logo.png",
        "manifest.json",
        "translations/en.json",
    ]


def test_manifest_points_the_signed_ticket_sidebar_at_us(package):
    manifest = json.loads(package.read("manifest.json"))
    assert manifest["name"] == "Billing Desk"
    assert manifest["author"] == {
        "name": "Billing Desk",
        "email": "support@billing-desk.example",
        "url": URL,
    }
    assert manifest["location"] == {
        "support": {"ticket_sidebar": {"url": f"{URL}/zendesk/sidebar", "flexible": True}}
    }
    assert manifest["signedUrls"] is True
    assert manifest["private"] is True
    assert (manifest["defaultLocale"], manifest["version"], manifest["frameworkVersion"]) == (
        "en",
        "1.0",
        "2.0",
    )


def test_translations_explain_installation(package):
    app = json.loads(package.read("translations/en.json"))["app"]
    assert set(app) == {
        "name",
        "short_description",
        "long_description",
        "installation_instructions",
    }
    for needed in ("ZENDESK_SUBDOMAIN", "ZENDESK_APP_PUBLIC_KEY", "public_key.pem", "agents link"):
        assert needed in app["installation_instructions"]


@pytest.mark.parametrize(
    ("name", "size"), [("assets/logo.png", 320), ("assets/logo-small.png", 128)]
)
def test_logos_are_pngs_of_the_required_size(package, name, size):
    png = package.read(name)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (size, size)


@pytest.mark.parametrize(
    "url", ["http://example.com", "ftp://example.com", "example.com", "https://", f"{URL}/?x=1"]
)
def test_urls_zendesk_cannot_load_are_refused(tmp_path, url):
    with pytest.raises(InvalidInput):
        build_zendesk_app(url, tmp_path / "app.zip")
    assert not (tmp_path / "app.zip").exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:4567"])
def test_local_http_is_allowed_for_testing(tmp_path, url):
    assert build_zendesk_app(url, tmp_path / "app.zip").exists()


def test_cli_writes_the_zip_for_billing_desk_url(tmp_path):
    out = tmp_path / "zendesk.zip"
    result = CliRunner().invoke(
        cli, ["zendesk-app", "--out", str(out)], env={"BILLING_DESK_URL": URL}
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("manifest.json"))["author"]["url"] == URL


def test_cli_reports_a_bad_url_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["zendesk-app", "--url", "http://example.com", "--out", str(tmp_path / "a.zip")])
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("billing-desk: ") and error.count("\n") == 1
