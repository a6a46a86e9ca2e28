"""Logs are JSON lines and carry no patient identifiers."""

from __future__ import annotations

import json
import logging
import warnings

import pytest

from server.core.logging import configure_logging


def test_records_are_json_with_their_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    logging.getLogger("server.test").info("series finalised", extra={"series": "1.2.3", "queued": True})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "series finalised" and record["series"] == "1.2.3" and record["queued"] is True
    assert record["level"] == "info" and record["logger"] == "server.test"


def test_highdicom_person_name_warnings_are_silenced_but_others_are_kept() -> None:
    configure_logging("INFO", json=True)
    with warnings.catch_warnings(record=True) as caught:  # keeps the filters configure_logging set
        warnings.warn(
            'The string "Doe_John" is unlikely to represent the intended person name since it contains only '
            "a single component.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["an unrelated warning"]
