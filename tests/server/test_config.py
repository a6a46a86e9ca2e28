"""Settings: environment, TOML file, embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.core.config import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LUNGCDS_"):
            monkeypatch.delenv(name)


def test_embedded_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'lungcds.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert settings.embedded
    assert settings.max_slice_thickness_mm == 3.0
    assert settings.rules_file == tmp_path / "rules.toml"


def test_environment_comma_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUNGCDS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LUNGCDS_DESTINATIONS", "PACS@10.0.0.1:104, ARCHIVE@pacs.example:11112")
    monkeypatch.setenv("LUNGCDS_ALLOWED_CALLING_AETS", "CT1,CT2")
    monkeypatch.setenv("LUNGCDS_DATABASE_URL", "postgresql+psycopg://u@db/lungcds")
    monkeypatch.setenv("LUNGCDS_BROKER_URL", "redis://cache:6379/0")
    settings = load_settings()
    assert settings.destinations == ["PACS@10.0.0.1:104", "ARCHIVE@pacs.example:11112"]
    assert settings.allowed_calling_aets == ["CT1", "CT2"]
    assert not settings.embedded


def test_toml_file_with_environment_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "lungcds.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\nae_title = "FROMFILE"\ndicom_port = 4242\n'
        'destinations = ["PACS@127.0.0.1:4242"]\nmax_slice_thickness_mm = 1.5\n'
    )
    monkeypatch.setenv("LUNGCDS_DICOM_PORT", "5555")
    settings = load_settings(config)
    assert settings.ae_title == "FROMFILE"
    assert settings.dicom_port == 5555
    assert settings.destinations == ["PACS@127.0.0.1:4242"]
    assert settings.max_slice_thickness_mm == 1.5


def test_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AE title"):
        Settings(data_dir=tmp_path, ae_title="BAD\\AE")
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, ae_title="A" * 17)
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, max_slice_thickness_mm=0)
    config = tmp_path / "typo.toml"
    config.write_text('ae_titel = "X"\n')
    with pytest.raises(ValueError, match="ae_titel"):
        load_settings(config)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_the_example_settings_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "lungcds.example.toml"
    settings = load_settings(example)
    assert settings.destinations == ["PACS@pacs.hospital.local:104"]
    assert settings.data_dir == Path("/var/lib/lungcds")


def test_outputs_per_destination(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, destinations=["PACS@h:104", "VNA@h:105"], destination_outputs={"PACS": ["sr", "pdf"]}
    )
    assert settings.outputs_for("PACS@h:104") == ("sr", "pdf")
    assert settings.outputs_for("VNA@h:105") == ("sr", "seg", "pdf", "sc", "kos")
    with pytest.raises(ValueError, match="not in destinations"):
        Settings(data_dir=tmp_path, destinations=["PACS@h:104"], destination_outputs={"OTHER": ["sr"]})
    with pytest.raises(ValueError, match="unknown outputs"):
        Settings(data_dir=tmp_path, destinations=["PACS@h:104"], destination_outputs={"PACS": ["xml"]})


def test_outputs_per_destination_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUNGCDS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LUNGCDS_DESTINATIONS", "PACS@h:104")
    monkeypatch.setenv("LUNGCDS_DESTINATION_OUTPUTS", '{"PACS": ["sr"]}')
    settings = load_settings()
    assert settings.outputs_for("PACS@h:104") == ("sr",)
    for name, value in settings.as_environment().items():  # what a child process would inherit
        monkeypatch.setenv(name, value)
    assert load_settings() == settings


def test_tls_settings_come_in_complete_sets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be given together"):
        Settings(data_dir=tmp_path, dicom_tls_certificate=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="need dicom_tls_ca"):
        Settings(data_dir=tmp_path, dicom_tls_destinations=["PACS"])
    settings = Settings(data_dir=tmp_path, dicom_tls_destinations="PACS, VNA", dicom_tls_ca=tmp_path / "ca.pem")
    assert settings.dicom_tls_destinations == ["PACS", "VNA"]


def test_destinations_listed_for_tls_get_a_verifying_context(tmp_path: Path) -> None:
    from server.core.tls import with_tls
    from server.routing.destinations import load_destinations
    from tests.dicom_node.certificates import ThrowawayCA

    ca = ThrowawayCA(tmp_path / "pki", "Hospital CA")
    settings = Settings(
        data_dir=tmp_path,
        destinations=["PACS@127.0.0.1:2762", "VNA@127.0.0.1:104"],
        dicom_tls_destinations=["PACS"],
        dicom_tls_ca=ca.files.certificate,
    )
    entries = {e.ae_title: e for e in load_destinations(settings).destinations}
    assert entries["PACS"].tls and not entries["VNA"].tls
    secure = with_tls(settings, entries["PACS"].destination())
    assert secure.tls is not None and secure.tls.verify_mode.name == "CERT_REQUIRED"
