"""The worker's warm-up: one weight-free analysis of a phantom before the first job, leaving nothing behind."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import signals

import server.services.warmup as warmup_service
import server.tasks.warmup  # noqa: F401 - connects the worker_init handler
from server.services.warmup import warm_up


class _Worker:
    """What a worker_init receiver sees of Celery's WorkController: its app and the app's settings (hashable)."""

    def __init__(self, **settings: object) -> None:
        self.app = SimpleNamespace(settings=SimpleNamespace(**settings))


def _leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("lungcds-warm-up-*")}


def test_the_warm_up_runs_a_whole_analysis_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[set[str]] = []
    real = warmup_service.run_analysis

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        output = real(**kwargs)
        written.append({p.name for p in output.out_dir.iterdir()})
        return output

    monkeypatch.setattr(warmup_service, "run_analysis", spy)
    before = _leftovers()
    seconds = warm_up("LUNGCDS")
    assert seconds is not None and seconds > 0
    assert {"result.json", "sr.dcm", "report.pdf"} <= written[0], "the reports were built as a job builds them"
    assert _leftovers() == before, "its temporary folder is gone"


def test_a_failing_warm_up_is_logged_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(warmup_service, "run_analysis", broken)
    with caplog.at_level(logging.WARNING):
        assert warm_up("LUNGCDS") is None
    assert "warm-up failed" in caplog.text and "disk full" in caplog.text


@pytest.mark.parametrize("enabled", [True, False])
def test_a_worker_warms_up_at_start_unless_told_not_to(monkeypatch: pytest.MonkeyPatch, enabled: bool) -> None:
    calls: list[str] = []
    monkeypatch.setattr(server.tasks.warmup, "warm_up", calls.append)
    signals.worker_init.send(sender=_Worker(warm_up=enabled, ae_title="NODE"))
    assert calls == (["NODE"] if enabled else [])
