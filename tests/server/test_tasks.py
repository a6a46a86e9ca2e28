"""Celery tasks run in-process (``Task.apply``): analysis, failure recording, the outbox."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SegmentationStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import AssociationInfo, StorageSCP
from dicom_node.spool import Spool, StoredInstance
from server import crud
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import Delivery, Instance, Job, JobEvent, Series, utcnow
from server.tasks.analysis import lease_kept
from server.tasks.app import (
    ANALYSIS_TASK,
    DELIVERY_TASK,
    GPU_QUEUE,
    HARD_LIMIT_GRACE_S,
    LungcdsCelery,
    create_celery,
)
from server.tasks.base import thread_budget
from server.tasks.delivery import is_final_refusal, pump_outbox
from server.tasks.embedded_broker import EMBEDDED_POLLING_INTERVAL_S, EmbeddedTransport
from server.tasks.lost_jobs import resend_lost_jobs
from server.tasks.outbox import LEASE, retry_delay
from server.tasks.queue import CeleryQueue
from tests.peers import free_port
from tests.small_models import small_provider


class _Keep:
    def __init__(self) -> None:
        self.stored: list[StoredInstance] = []

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        self.stored.append(stored)

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        return None

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        return None


@pytest.fixture
def pacs_port() -> int:
    return free_port()


@pytest.fixture
def app(settings: Settings, pacs_port: int) -> LungcdsCelery:
    settings.destinations = [f"PACS@127.0.0.1:{pacs_port}"]
    return create_celery(settings)


def _job(engine: Engine, job_id: int) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_analysis_then_delivery_with_retry_until_the_pacs_accepts(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], pacs_port: int
) -> None:
    job_id, revision, uid = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    job = _job(engine, job_id)
    assert job.state == "done", job.error
    assert job.attempts == 1 and job.result_dir is not None
    assert {p.name for p in Path(job.result_dir).iterdir()} >= {"result.json", "sr.dcm", "report_pdf.dcm"}
    with Session(engine) as session:
        assert session.get(Series, uid).state == "done"  # type: ignore[union-attr]
        deliveries = session.exec(select(Delivery)).all()
    assert {d.kind for d in deliveries} == {"sr", "seg", "pdf", "sc", "kos"}

    sr = next(d for d in deliveries if d.kind == "sr")
    app.tasks[DELIVERY_TASK].apply(args=[sr.id])
    with Session(engine) as session:
        failed = session.get(Delivery, sr.id)
    assert failed is not None and failed.state == "pending" and failed.attempts == 1
    assert failed.last_error and "association failed" in failed.last_error
    assert failed.next_attempt_at is not None and failed.next_attempt_at > utcnow()

    keep = _Keep()
    with StorageSCP("PACS", Spool(Path(job.result_dir).parent / "pacs", min_free_bytes=0), keep) as pacs:
        pacs.start("127.0.0.1", pacs_port)
        app.tasks[DELIVERY_TASK].apply(args=[sr.id])
    with Session(engine) as session:
        sent = session.get(Delivery, sr.id)
    assert sent is not None and sent.state == "sent" and sent.attempts == 2 and sent.last_error is None
    assert [s.header.sop_instance_uid for s in keep.stored] == [sr.sop_instance_uid]
    app.tasks[DELIVERY_TASK].apply(args=[sr.id])
    assert len(keep.stored) == 1, "a sent object is not sent again"


def test_a_superseded_revision_is_skipped(app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str]) -> None:
    job_id, revision, _ = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision - 1])
    job = _job(engine, job_id)
    assert job.state == "queued" and job.attempts == 0


def test_unreadable_pixels_give_a_not_analysable_report_not_silence(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], settings: Settings
) -> None:
    job_id, revision, uid = queued
    victim = next(settings.spool_dir.rglob("*.dcm"))
    ds = pydicom.dcmread(victim)
    ds.Rows = 64  # the pixel data no longer matches the other slices
    ds.save_as(victim)
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    job = _job(engine, job_id)
    assert job.state == "done" and job.result_dir is not None
    with Session(engine) as session:
        series = session.get(Series, uid)
        kinds = {d.kind for d in session.exec(select(Delivery)).all()}
    assert series is not None and series.state == "not_analysable"
    assert series.reasons and "differing matrix size" in series.reasons[0]
    assert kinds == {"sr", "pdf", "sc"}, "the radiologist gets an SR, a PDF and a picture saying why, no SEG or KOS"
    result = json.loads((Path(job.result_dir) / "result.json").read_text())
    assert result["analysable"] is False and result["reasons"] == series.reasons
    assert all(run["status"] == "skipped" for run in result["models"].values())


def test_an_unexpected_error_fails_the_job_with_its_message(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], settings: Settings
) -> None:
    job_id, revision, uid = queued
    next(settings.spool_dir.rglob("*.dcm")).unlink()
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    job = _job(engine, job_id)
    assert job.state == "failed"
    assert job.error and "FileNotFoundError" in job.error
    with Session(engine) as session:
        series = session.get(Series, uid)
    assert series is not None and series.state == "failed" and series.reasons == [job.error]


def test_an_analysis_over_its_time_limit_fails_with_that_reason(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, revision, _ = queued

    def too_slow(**_: object) -> None:
        raise SoftTimeLimitExceeded()  # what Celery's prefork pool raises in the task at the soft limit

    monkeypatch.setattr("server.tasks.analysis.run_analysis", too_slow)
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    job = _job(engine, job_id)
    assert job.state == "failed"
    assert job.error == "stopped at the analysis time limit of 14400 s (LUNGCDS_ANALYSIS_TIME_LIMIT_S)"


def test_queue_semantics_of_the_app(settings: Settings) -> None:
    settings.broker_url = "redis://127.0.0.1:6379/15"
    settings.analysis_time_limit_s = 600
    settings.worker_max_memory_mb = 6000
    conf = create_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit == 600 and conf.task_time_limit == 600 + HARD_LIMIT_GRACE_S
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.worker_max_memory_per_child == 6000 * 1024


def test_the_embedded_broker_is_polled_ten_times_a_second_and_works(settings: Settings) -> None:
    """kombu polls its SQLAlchemy transport once a second unless told otherwise (issue 19, part 3)."""
    app = create_celery(settings)
    assert settings.broker_url.startswith("sqla+sqlite:///")
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, EmbeddedTransport)
        assert connection.transport.polling_interval == EMBEDDED_POLLING_INTERVAL_S == 0.1
        with connection.SimpleQueue("lungcds-poll-check") as queue:
            queue.put({"n": 1})
            assert queue.get(timeout=5).payload == {"n": 1}


def test_each_concurrent_analysis_gets_its_share_of_the_cores(settings: Settings) -> None:
    settings.worker_concurrency = 2
    assert thread_budget(settings, cores=8) == 4
    assert thread_budget(settings, cores=1) == 1
    settings.torch_threads = 3
    assert thread_budget(settings, cores=8) == 3


def test_a_worker_process_sets_its_thread_budget_before_the_first_analysis(app: LungcdsCelery) -> None:
    import SimpleITK as sitk
    import torch

    before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(2)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    app.settings.torch_threads = 1
    task = app.tasks[ANALYSIS_TASK]
    try:
        task.__dict__.pop("models", None)
        assert task.models is not None
        assert (torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()) == (1, 1)
    finally:
        torch.set_num_threads(before[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before[1])
        task.__dict__.pop("models", None)


def test_the_pump_leases_each_due_delivery_once(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str]
) -> None:
    job_id, revision, _ = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    with Session(engine) as session:
        session.execute(update(Delivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert pump_outbox(app, engine) == 5, "sr, seg, pdf, sc and kos"
    assert pump_outbox(app, engine) == 0, "leased rows wait for their lease to expire"
    with Session(engine) as session:
        rows = session.exec(select(Delivery)).all()
    assert all(r.next_attempt_at is not None and r.next_attempt_at > utcnow() + LEASE / 2 for r in rows)


def test_retry_delay_backs_off_and_is_capped() -> None:
    assert retry_delay(1, 600).total_seconds() == 5
    assert retry_delay(3, 600).total_seconds() == 20
    assert retry_delay(20, 600).total_seconds() == 600


def test_outputs_per_destination_and_a_refused_type_does_not_block_the_others(
    settings: Settings, engine: Engine, queued: tuple[int, int, str], tmp_path: Path
) -> None:
    pacs_port, ct_only_port = free_port(), free_port()
    settings.destinations = [f"PACS@127.0.0.1:{pacs_port}", f"CTONLY@127.0.0.1:{ct_only_port}"]
    settings.destination_outputs = {"PACS": ["sr", "pdf"]}
    app = create_celery(settings)
    job_id, revision, _ = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    with Session(engine) as session:
        rows = session.exec(select(Delivery)).all()
    by_destination = {(r.destination.split("@")[0], r.kind): r for r in rows}
    assert set(by_destination) == {
        ("PACS", "sr"),
        ("PACS", "pdf"),
        ("CTONLY", "sr"),
        ("CTONLY", "seg"),
        ("CTONLY", "pdf"),
        ("CTONLY", "sc"),
        ("CTONLY", "kos"),
    }

    ct_only = AE("CTONLY")
    ct_only.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = ct_only.start_server(
        ("127.0.0.1", ct_only_port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0)]
    )
    keep = _Keep()
    try:
        with StorageSCP("PACS", Spool(tmp_path / "pacs", min_free_bytes=0), keep) as pacs:
            pacs.start("127.0.0.1", pacs_port)
            for row in rows:
                app.tasks[DELIVERY_TASK].apply(args=[row.id])
    finally:
        server.shutdown()
    with Session(engine) as session:
        states = {
            (r.destination.split("@")[0], r.kind): (r.state, r.last_error) for r in session.exec(select(Delivery))
        }
    assert states[("PACS", "sr")][0] == "sent" and states[("PACS", "pdf")][0] == "sent"
    for kind in ("sr", "seg", "pdf", "sc", "kos"):
        state, error = states[("CTONLY", kind)]
        assert state == "refused" and error and "refused every proposed presentation context" in error
    assert len(keep.stored) == 2
    with Session(engine) as session:
        session.execute(update(Delivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert pump_outbox(app, engine) == 0, "refused objects are not retried"


def test_final_refusal_statuses() -> None:
    assert is_final_refusal(0xA900) and is_final_refusal(0xC000) and is_final_refusal(0x0122)
    assert not is_final_refusal(0xA700) and not is_final_refusal(0x0110) and not is_final_refusal(-1)


def test_a_destination_can_require_its_own_calling_ae_title(
    settings: Settings, engine: Engine, queued: tuple[int, int, str], tmp_path: Path
) -> None:
    from server.routing.destinations import DestinationEntry, DestinationList, save_destinations

    port = free_port()
    save_destinations(
        settings,
        DestinationList(
            destinations=[
                DestinationEntry(address=f"PICKY@127.0.0.1:{port}", outputs=["sr"], calling_aet="LUNGCDS_ICU")
            ]
        ),
    )
    app = create_celery(settings)
    job_id, revision, _ = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    keep = _Keep()
    picky = StorageSCP("PICKY", Spool(tmp_path / "picky", min_free_bytes=0), keep, allowed_calling_aets=["LUNGCDS_ICU"])
    with picky:
        picky.start("127.0.0.1", port)
        with Session(engine) as session:
            row = session.exec(select(Delivery)).one()
        app.tasks[DELIVERY_TASK].apply(args=[row.id])
    with Session(engine) as session:
        assert session.exec(select(Delivery.state)).one() == "sent"
    assert len(keep.stored) == 1


def test_metrics_change_as_the_series_is_processed(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], settings: Settings
) -> None:
    from fastapi.testclient import TestClient

    from server.api.main import create_app

    client = TestClient(create_app(settings, engine))
    before = client.get("/metrics").text
    assert 'lungcds_jobs{state="queued"} 1.0' in before and 'lungcds_jobs{state="done"}' not in before
    assert 'lungcds_stage_duration_seconds_count{stage="lung_mask"}' not in before
    job_id, revision, _ = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    after = client.get("/metrics").text
    assert 'lungcds_jobs{state="done"} 1.0' in after and 'lungcds_series{state="done"} 1.0' in after
    assert 'lungcds_stage_duration_seconds_count{stage="lung_mask"} 1.0' in after
    assert 'lungcds_stage_duration_seconds_bucket{le="+Inf",stage="lung_mask"} 1.0' in after
    assert 'lungcds_stage_duration_seconds_bucket{le="1800",stage="lung_mask"} 1.0' in after
    assert 'lungcds_deliveries{state="pending"} 5.0' in after

    # issue 19, part 2: every stage with wall time, CPU time and peak memory, in result.json and the timeline
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.result_dir is not None
    result = json.loads((Path(job.result_dir) / "result.json").read_text())
    names = [stage["name"] for stage in result["stages"]]
    assert names[0] == "loading" and "lung_mask" in names and names[-1] == "reports"
    assert all(stage["seconds"] >= 0 and stage["cpu_seconds"] >= 0 for stage in result["stages"]), result["stages"]
    lung_mask = next(stage for stage in result["stages"] if stage["name"] == "lung_mask")
    assert lung_mask["seconds"] > 0 and lung_mask["cpu_seconds"] > 0
    assert all(stage["peak_rss_mb"] is None or stage["peak_rss_mb"] > 10 for stage in result["stages"]), result[
        "stages"
    ]
    with session_scope(engine) as session:
        viewer = create_api_key(session, "viewer").secret
    timeline = client.get(f"/api/v1/jobs/{job_id}/timeline", headers={"Authorization": f"Bearer {viewer}"}).json()
    stage_events = {event["name"]: event for event in timeline if event["kind"] == "stage"}
    assert list(stage_events) == names
    assert set(stage_events["lung_mask"]["detail"]) >= {"cpu_seconds", "peak_rss_bytes"}


def test_a_running_job_is_held_by_its_lease_and_taken_over_when_it_runs_out(
    engine: Engine, queued: tuple[int, int, str]
) -> None:
    job_id, revision, _ = queued
    lease = timedelta(seconds=60)
    with Session(engine) as session:
        assert crud.start_job(session, job_id, revision, lease) == crud.Claim(started=True)
        session.commit()
        busy = crud.start_job(session, job_id, revision, lease)
        assert not busy.started and busy.retry_in_s is not None and 55 < busy.retry_in_s <= 60
        assert crud.start_job(session, job_id, revision + 1, lease) == crud.Claim(started=False)
        session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))  # its worker died
        assert crud.start_job(session, job_id, revision, lease).started
        session.commit()
        events = session.exec(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "started")).all()
    assert [e.detail.get("taken_over") is not None for e in events] == [False, True]
    assert _job(engine, job_id).attempts == 2


def test_a_redelivered_message_waits_for_a_live_lease(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, revision, _ = queued
    with Session(engine) as session:
        assert crud.start_job(session, job_id, revision, timedelta(seconds=30)).started
        session.commit()
    later: list[tuple[int, int, float | None]] = []
    monkeypatch.setattr(
        "server.tasks.analysis.enqueue_analysis",
        lambda _app, job, rev, countdown=None: later.append((job, rev, countdown)),
    )
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    assert len(later) == 1 and later[0][:2] == (job_id, revision) and 25 < (later[0][2] or 0) <= 30
    job = _job(engine, job_id)
    assert job.state == "running" and job.attempts == 1, "the holder's attempt is left alone"


def test_the_lease_is_renewed_while_the_analysis_runs(engine: Engine, queued: tuple[int, int, str]) -> None:
    job_id, revision, _ = queued
    lease = timedelta(seconds=0.6)
    with Session(engine) as session:
        assert crud.start_job(session, job_id, revision, lease).started
        session.commit()
    first = _job(engine, job_id).lease_until
    with lease_kept(engine, job_id, revision, lease):
        time.sleep(1.0)
    renewed = _job(engine, job_id).lease_until
    assert first is not None and renewed is not None and renewed > first


def test_a_queued_job_whose_message_was_lost_is_sent_again(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], settings: Settings
) -> None:
    job_id, _, _ = queued  # the fixture's intake queued the job without a broker message: it is "lost"
    settings.lost_job_after_s = 30
    assert resend_lost_jobs(app, engine, settings) == 0, "too recent to call lost"
    with Session(engine) as session:
        session.execute(update(Job).values(queued_at=utcnow() - timedelta(seconds=60)))
        session.commit()
    assert resend_lost_jobs(app, engine, settings) == 1
    assert CeleryQueue(app).depths()[GPU_QUEUE] == 1
    assert _job(engine, job_id).sent_at is not None
    assert resend_lost_jobs(app, engine, settings) == 0, "its message is in the queue now"
    with Session(engine) as session:
        resent = session.exec(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "resent")).all()
    assert len(resent) == 1


def test_a_second_patient_stored_after_finalisation_is_caught_by_the_worker_before_any_analysis(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str]
) -> None:
    """Issue 14: the worker checks identity again on what is stored when it starts, and refuses to analyse."""
    job_id, revision, uid = queued
    with Session(engine) as session:
        row = session.exec(select(Instance).where(Instance.series_instance_uid == uid)).first()
        assert row is not None
        row.header = {**row.header, "patient_id": "OTHER-PATIENT"}
        session.add(row)
        session.commit()
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    job = _job(engine, job_id)
    assert job.state == "failed" and job.result_dir is None
    assert job.error is not None and "disagree on whose images" in job.error
    with Session(engine) as session:
        series = session.get(Series, uid)
        deliveries = session.exec(select(Delivery)).all()
    assert series is not None and series.state == "rejected"
    assert any("2 patients" in reason and "OTHER-PATIENT" in reason for reason in series.reasons), series.reasons
    assert deliveries == [], "nothing is reported"


def test_every_seg_instance_is_delivered_where_seg_goes_decoded_if_the_pacs_needs(
    settings: Settings, engine: Engine, queued: tuple[int, int, str]
) -> None:
    """Issue 17 part 3: with learned lobes and lesions there are three SEG instances, each its own
    delivery of kind "seg"; a PACS that takes SEGs only in Explicit VR Little Endian still gets all three,
    and so does one that takes JPEG 2000 but is listed in ``uncompressed_destinations`` (its viewers
    cannot decode JPEG 2000), while SRONLY gets none."""
    pacs_port, viewer_port, sr_only_port = free_port(), free_port(), free_port()
    settings.destinations = [
        f"SEGPACS@127.0.0.1:{pacs_port}",
        f"OHIFPACS@127.0.0.1:{viewer_port}",
        f"SRONLY@127.0.0.1:{sr_only_port}",
    ]
    settings.destination_outputs = {"SEGPACS": ["seg"], "OHIFPACS": ["seg"], "SRONLY": ["sr"]}
    settings.uncompressed_destinations = ["OHIFPACS"]
    app = create_celery(settings)
    task = app.tasks[ANALYSIS_TASK]
    task.__dict__["models"] = small_provider()
    job_id, revision, _ = queued
    try:
        task.apply(args=[job_id, revision])
    finally:
        task.__dict__.pop("models", None)
    with Session(engine) as session:
        rows = session.exec(select(Delivery)).all()
    counts = Counter((r.destination.split("@")[0], r.kind) for r in rows)
    assert counts == {("SEGPACS", "seg"): 3, ("OHIFPACS", "seg"): 3, ("SRONLY", "sr"): 1}
    segs = [r for r in rows if r.kind == "seg"]
    assert sorted(Path(r.path).name for r in segs if r.destination.startswith("SEGPACS")) == [
        "seg.dcm",
        "seg_lesions.dcm",
        "seg_lobes.dcm",
    ]
    result = json.loads((Path(segs[0].path).parent / "result.json").read_text())
    assert {r.sop_instance_uid for r in segs} == {
        result["outputs"][key]["sop_instance_uid"] for key in ("seg", "seg_lobes", "seg_lesions")
    }
    # issue 19, part 2: loading weights is its own stage; the networks' forward passes are timed in theirs
    stages = {stage["name"]: stage for stage in result["stages"]}
    assert {"lobes weights", "lesions weights", "corads weights"} <= set(stages), list(stages)
    for model in ("lobes", "lesions", "corads"):
        assert stages[model]["forward_calls"] > 0 and 0 < stages[model]["forward_seconds"] <= stages[model]["seconds"]
    assert stages["reports"]["forward_calls"] == 0

    received: list[tuple[str, str, str]] = []

    def store(event: evt.Event) -> int:
        title = event.assoc.ae.ae_title
        received.append((title, str(event.request.AffectedSOPInstanceUID), str(event.context.transfer_syntax)))
        return 0

    pacs = AE("SEGPACS")
    pacs.add_supported_context(SegmentationStorage, ExplicitVRLittleEndian)
    viewer_pacs = AE("OHIFPACS")
    viewer_pacs.add_supported_context(SegmentationStorage, [JPEG2000Lossless, ExplicitVRLittleEndian])
    servers = [
        ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
        for ae, port in ((pacs, pacs_port), (viewer_pacs, viewer_port))
    ]
    try:
        for row in segs:
            app.tasks[DELIVERY_TASK].apply(args=[row.id])
    finally:
        for server in servers:
            server.shutdown()
    with Session(engine) as session:
        states = {
            (r.destination, r.sop_instance_uid): r.state for r in session.exec(select(Delivery)) if r.kind == "seg"
        }
    assert set(states.values()) == {"sent"}
    assert sorted(received) == sorted(
        (r.destination.split("@")[0], r.sop_instance_uid, ExplicitVRLittleEndian) for r in segs
    )
