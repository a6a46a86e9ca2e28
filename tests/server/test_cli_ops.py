"""Operations on the command line: --version, config show (secrets hidden), serve's start-up
warnings, and logs that are JSON lines for machines and readable lines on a terminal."""

from __future__ import annotations

import io
import json
import logging
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.text import Text
from typer.testing import CliRunner

from models import PIPELINE_VERSION
from server.cli.main import HIDDEN, app, setting_rows
from server.core.config import Settings, load_settings
from server.core.db import make_engine, upgrade
from server.core.logging import configure_logging

runner = CliRunner()

DB_PASSWORD = "Db-pa55-in-env"
BROKER_PASSWORD = "Br0ker-pa55-in-env"


def test_version_prints_the_package_and_pipeline_versions() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"lungcds {version('lungcds')} (pipeline {PIPELINE_VERSION})"


def test_config_show_lists_every_setting_and_where_it_comes_from(env: Path, tmp_path: Path) -> None:
    config = tmp_path / "lungcds.toml"
    config.write_text('ae_title = "FROMFILE"\nmin_free_disk_mb = 64\n')
    result = runner.invoke(app, ["config", "show", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert list(rows) == list(Settings.model_fields)
    assert rows["data_dir"] == {"value": str(env.resolve()), "source": "environment LUNGCDS_DATA_DIR"}
    assert rows["ae_title"] == {"value": "FROMFILE", "source": f"file {config}"}
    assert rows["min_free_disk_mb"] == {"value": 64, "source": f"file {config}"}
    assert rows["dicom_port"] == {"value": 11112, "source": "default"}
    assert rows["log_json"] == {"value": None, "source": "default"}
    # URLs without a secret are shown exactly as in force (sqlite's empty host keeps its slashes)
    assert rows["broker_url"]["value"] == f"sqla+sqlite:///{env.resolve() / 'broker.db'}"

    table = runner.invoke(app, ["config", "show", "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert "FROMFILE" in table.stdout and "environment LUNGCDS_DATA_DIR" in table.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_config_show_never_prints_a_secret_from_the_environment(
    env: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    monkeypatch.setenv("LUNGCDS_DATABASE_URL", f"postgresql+psycopg://lungcds:{DB_PASSWORD}@db:5432/lungcds")
    monkeypatch.setenv("LUNGCDS_BROKER_URL", f"redis://:{BROKER_PASSWORD}@broker:6379/0")
    monkeypatch.setenv("LUNGCDS_AUDIT_REPOSITORY", f"tls://atna.hospital:6514?token={DB_PASSWORD}")
    result = runner.invoke(app, ["config", "show", *(["--json"] if as_json else [])])
    assert result.exit_code == 0, result.output
    for secret in (DB_PASSWORD, BROKER_PASSWORD):
        assert secret not in result.output
    assert f"postgresql+psycopg://lungcds:{HIDDEN}@db:5432/lungcds" in result.output
    assert f"redis://:{HIDDEN}@broker:6379/0" in result.output
    assert f"token={HIDDEN}" in result.output


def test_config_show_does_not_echo_a_rejected_value(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUNGCDS_DICOM_PORT", f"not-a-port-{DB_PASSWORD}")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "dicom_port" in result.output and DB_PASSWORD not in result.output


def test_setting_rows_hide_secret_fields_whatever_their_type() -> None:
    class _Sample(BaseModel):
        hmac_secret: SecretStr
        api_key: str
        broker_url: str
        destinations: list[str]

    rows = setting_rows(
        _Sample(
            hmac_secret=SecretStr("k1"),
            api_key="lcds_k2",
            broker_url="amqp://guest:k3@rabbit:5672//",
            destinations=["PACS@pacs:104"],
        )
    )
    assert {name: row["value"] for name, row in rows.items()} == {
        "hmac_secret": HIDDEN,
        "api_key": HIDDEN,
        "broker_url": f"amqp://guest:{HIDDEN}@rabbit:5672//",
        "destinations": ["PACS@pacs:104"],
    }


class _Runtime:
    """Stands in for ServerRuntime: migrates the database, serves nothing, returns at once."""

    def __init__(self, settings: Settings, *, with_worker: bool) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.dicom_port, self.api_port = 11112, 8080

    def start(self) -> None:
        upgrade(self.settings.database_url)

    def run_forever(self) -> None:
        """Returns: the test only looks at what serve says at start."""


NO_DESTINATION = "no report destination is configured"
NO_KEY = "no API key exists and OIDC is not configured"


def _serve(monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[dict[str, object]]]:
    """``lungcds serve`` on the stand-in runtime: its output and the JSON log records in it."""
    monkeypatch.setattr("server.runtime.ServerRuntime", _Runtime)
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result.output, records


def test_serve_warns_without_destination_and_without_any_way_to_authenticate(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, records = _serve(monkeypatch)
    warned = [str(r["event"]) for r in records if r["level"] == "warning" and r["logger"] == "server.cli.main"]
    assert [w.split(":")[0] for w in warned] == [NO_DESTINATION, NO_KEY]
    assert f"warning: {NO_DESTINATION}" in output and f"warning: {NO_KEY}" in output
    assert "lungcds apikey create --role admin" in output


def test_serve_is_quiet_with_a_destination_and_an_api_key(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUNGCDS_DESTINATIONS", "PACS@127.0.0.1:104")
    assert runner.invoke(app, ["apikey", "create", "--role", "admin"]).exit_code == 0
    output, _ = _serve(monkeypatch)
    assert "warning" not in output.lower()


def test_serve_counts_oidc_as_a_way_in_and_ignores_revoked_keys(
    env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert runner.invoke(app, ["apikey", "create", "--role", "viewer"]).exit_code == 0
    assert runner.invoke(app, ["apikey", "revoke", "1"]).exit_code == 0
    output, _ = _serve(monkeypatch)
    assert NO_KEY in output
    monkeypatch.setenv("LUNGCDS_OIDC_ISSUER", "https://idp.hospital")
    monkeypatch.setenv("LUNGCDS_OIDC_AUDIENCE", "lungcds")
    monkeypatch.setenv("LUNGCDS_OIDC_JWKS_FILE", str(tmp_path / "jwks.json"))
    output, _ = _serve(monkeypatch)
    assert NO_KEY not in output and NO_DESTINATION in output


def test_log_json_keeps_its_meaning_and_unset_means_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LUNGCDS_LOG_JSON", raising=False)
    assert load_settings(data_dir=tmp_path).log_json is None
    for text, expected in (("true", True), ("false", False)):
        monkeypatch.setenv("LUNGCDS_LOG_JSON", text)
        assert load_settings(data_dir=tmp_path).log_json is expected


def test_logs_are_json_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    pipe = Console(file=io.StringIO(), force_terminal=False)
    configure_logging("INFO", json=None, console=pipe)
    logging.getLogger("server.test").info("series finalised", extra={"series": "1.2.3"})
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["event"] == "series finalised" and record["series"] == "1.2.3"


def test_logs_are_readable_lines_through_the_console_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=200)
    configure_logging("INFO", json=None, console=terminal)
    with Progress(console=terminal, auto_refresh=False) as bar:
        bar.add_task("series analysing", total=4)
        logging.getLogger("server.test").warning("delivery failed", extra={"destination": "PACS"})
    raw = screen.getvalue()
    text = Text.from_ansi(raw).plain
    assert "delivery failed" in text and "destination=PACS" in text and "warning" in text
    assert not text.lstrip().startswith("{"), "not JSON"
    # The bar's line is erased (CR, erase line) before the log line, and the bar is drawn again after it.
    assert re.search(r"\r\x1b\[2K[^\r\n]*delivery failed[^\n]*\nseries analysing", raw), repr(raw)
    assert capsys.readouterr().err == "", "printed by the progress bar's console, not written past it"


def test_readable_tracebacks_show_no_local_variables() -> None:
    screen = io.StringIO()
    configure_logging("INFO", json=False, console=Console(file=screen, force_terminal=False, width=200))
    patient_name = "Doe^Jane"
    try:
        raise ValueError("pixel data truncated")
    except ValueError:
        logging.getLogger("server.test").exception("series not analysable", extra={"series": "1.2.3"})
    assert "ValueError: pixel data truncated" in screen.getvalue()
    assert patient_name not in screen.getvalue()
