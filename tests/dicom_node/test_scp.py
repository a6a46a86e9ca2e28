"""The Storage SCP on a real loopback port, driven by DCMTK and pynetdicom requestors."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config, build_context
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.scp import STORAGE_TRANSFER_SYNTAXES, StorageSCP, error_comment
from dicom_node.scu import Destination, echo
from dicom_node.spool import Spool
from dicom_node.statuses import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
)
from tests.dicom_node.helpers import (
    CT_DIR,
    ECHOSCU,
    SCP_AET,
    SERIES_J2K,
    SERIES_S2,
    STORESCU,
    RecordingSink,
    RunningSCP,
    dataset_bytes,
    dcmtk_env,
    make_basic_text_sr,
    make_ct,
    make_encapsulated_pdf,
    require,
    run_storescu,
    series_files,
)


def associate(port: int, contexts: list[tuple[str, str]], aet: str = "TESTSCU") -> Association:
    """A pynetdicom association to our SCP proposing exactly ``contexts`` (SOP class, transfer syntax)."""
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    requested = [build_context(sop_class, syntax) for sop_class, syntax in contexts]
    return ae.associate("127.0.0.1", port, contexts=requested, ae_title=SCP_AET)


@pytest.fixture
def store_assoc(running_scp: RunningSCP) -> Iterator[Association]:
    """An association proposing CT Image Storage in explicit VR little endian."""
    assoc = associate(running_scp.port, [(CTImageStorage, ExplicitVRLittleEndian)])
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()


def test_echo_with_dcmtk_echoscu(running_scp: RunningSCP) -> None:
    require(ECHOSCU)
    result = subprocess.run(
        [str(ECHOSCU), "-aec", SCP_AET, "127.0.0.1", str(running_scp.port)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    running_scp.sink.wait_for_ended(1)
    info, series, released = running_scp.sink.ended[0]
    assert (info.calling_aet, info.called_aet, info.peer_host) == ("ECHOSCU", SCP_AET, "127.0.0.1")
    assert series == frozenset() and released is True


def test_real_series_via_storescu_is_spooled_byte_identical(running_scp: RunningSCP) -> None:
    files = series_files(SERIES_S2)
    result = run_storescu(running_scp.port, files)
    assert result.returncode == 0, result.stderr

    spooled = running_scp.spooled_files()
    assert len(spooled) == 64 == len(files)
    sources = {dcmread(path, stop_before_pixels=True).SOPInstanceUID: path for path in files}
    series_uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    for path in spooled:
        stored = dcmread(path)
        source = dcmread(sources[stored.SOPInstanceUID])
        # Element by element (storescu re-encodes undefined-length sequences with explicit
        # lengths, so the byte streams differ while every element is the same).
        tags = list(source.keys())
        assert list(stored.keys()) == tags
        for tag in tags:
            assert stored[tag] == source[tag], tag
        assert stored.PixelData == source.PixelData
        assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        assert stored.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert running_scp.leftovers() == []

    sink = running_scp.sink
    sink.wait_for_ended(1)
    assert len(sink.stored) == 64 and not any(s.duplicate for s, _ in sink.stored)
    assert {s.header.sop_instance_uid for s, _ in sink.stored} == set(sources)
    info, series, released = sink.ended[0]
    assert series == frozenset({series_uid}) and released is True
    assert info.calling_aet == "STORESCU"

    again = run_storescu(running_scp.port, files)
    assert again.returncode == 0, again.stderr
    sink.wait_for_ended(2)
    assert len(running_scp.spooled_files()) == 64
    assert len(sink.stored) == 128 and all(s.duplicate for s, _ in sink.stored[64:])
    assert sink.ended[1][1] == frozenset({series_uid}) and sink.ended[1][2] is True


def test_two_series_in_parallel_associations(running_scp: RunningSCP) -> None:
    s2 = series_files(SERIES_S2)
    s3 = series_files(CT_DIR / "lung-dx-a0001-chest-5mm-s3")
    require(STORESCU)
    processes = [
        subprocess.Popen(
            [str(STORESCU), "-aec", SCP_AET, "127.0.0.1", str(running_scp.port), *map(str, files)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for files in (s2, s3)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]

    running_scp.sink.wait_for_ended(2)
    assert len(running_scp.spooled_files()) == len(s2) + len(s3)
    reported = [series for _, series, _ in running_scp.sink.ended]
    expected = {frozenset({str(dcmread(f[0], stop_before_pixels=True).SeriesInstanceUID)}) for f in (s2, s3)}
    assert len(reported) == 2 and set(reported) == expected
    assert all(released for _, _, released in running_scp.sink.ended)


def test_jpeg2000_series_with_empty_uids_is_refused(running_scp: RunningSCP, monkeypatch: pytest.MonkeyPatch) -> None:
    files = series_files(SERIES_J2K)
    # Send the data sets as they are, with the SOP class and instance from the file meta:
    # pynetdicom refuses to build a request from the empty SOP Class UID of the data set.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assoc = associate(running_scp.port, [(CTImageStorage, JPEG2000Lossless)])
    assert assoc.is_established
    try:
        responses = [assoc.send_c_store(path) for path in files]
    finally:
        assoc.release()

    for response in responses:
        assert response.Status == DATASET_DOES_NOT_MATCH_SOP_CLASS
        assert response.ErrorComment == "SOP Class UID (0008,0016) is empty"
    assert running_scp.spooled_files() == []
    assert running_scp.leftovers() == []
    assert running_scp.sink.stored == []
    assert echo(Destination(SCP_AET, "127.0.0.1", running_scp.port), "TESTSCU")


def test_every_transfer_syntax_is_negotiated(running_scp: RunningSCP) -> None:
    private = "1.2.826.0.1.3680043.8.498.1"
    contexts = [(sop, ts) for sop in (CTImageStorage, EnhancedCTImageStorage) for ts in STORAGE_TRANSFER_SYNTAXES]
    assoc = associate(running_scp.port, [*contexts, (CTImageStorage, private)])
    try:
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        rejected = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.rejected_contexts}
    finally:
        assoc.release()

    assert accepted == set(contexts)
    assert rejected == {(CTImageStorage, private)}


def _reencode(source: Path, syntax: str, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Re-encode a slice with pydicom's encoders; return the file and the original pixels."""
    ds = dcmread(source)
    pixels = ds.pixel_array.copy()
    ds.SOPInstanceUID = generate_uid()
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif syntax == JPEGLSNearLossless:
        ds.compress(syntax, jls_error=2)
    elif syntax == JPEG2000:
        ds.compress(syntax, j2k_cr=[20])
    else:
        ds.compress(syntax)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / f"{syntax}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, pixels


@pytest.mark.parametrize(
    ("syntax", "lossless"),
    [
        (RLELossless, True),
        (DeflatedExplicitVRLittleEndian, True),
        (JPEGLSLossless, True),
        (JPEGLSNearLossless, False),
        (JPEG2000Lossless, True),
        (JPEG2000, False),
    ],
)
def test_reencoded_slice_is_received_in_its_transfer_syntax(
    running_scp: RunningSCP, tmp_path: Path, syntax: str, lossless: bool
) -> None:
    source = series_files(SERIES_S2)[0]
    path, pixels = _reencode(source, syntax, tmp_path)
    assoc = associate(running_scp.port, [(CTImageStorage, syntax)])
    assert assoc.is_established
    try:
        response = assoc.send_c_store(path)
    finally:
        assoc.release()

    assert response.Status == SUCCESS
    (stored_path,) = running_scp.spooled_files()
    stored = dcmread(stored_path)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert running_scp.sink.stored[0][0].header.transfer_syntax_uid == syntax
    received = stored.pixel_array
    if lossless:
        assert np.array_equal(received, pixels)
    else:
        assert np.abs(received.astype(np.int32) - pixels.astype(np.int32)).mean() < 50


DCMTK_CASES = [
    # (storescu option, DCMTK encoder and its options, expected transfer syntax)
    ("-xs", ["dcmcjpeg"], "1.2.840.10008.1.2.4.70"),
    ("-xy", ["dcmcjpeg", "+eb"], "1.2.840.10008.1.2.4.50"),
    ("-xx", ["dcmcjpeg", "+ee"], "1.2.840.10008.1.2.4.51"),
    ("-xt", ["dcmcjpls"], "1.2.840.10008.1.2.4.80"),
    ("-xr", ["dcmcrle"], "1.2.840.10008.1.2.5"),
]


@pytest.mark.parametrize(("option", "encoder", "syntax"), DCMTK_CASES)
def test_storescu_compressed_proposals_are_accepted(
    running_scp: RunningSCP, tmp_path: Path, option: str, encoder: list[str], syntax: str
) -> None:
    source = series_files(SERIES_S2)[0]
    tool = require(Path("/usr/bin") / encoder[0])
    encoded = tmp_path / "encoded.dcm"
    subprocess.run([str(tool), *encoder[1:], str(source), str(encoded)], check=True, timeout=60)

    result = run_storescu(running_scp.port, [encoded], option)

    assert result.returncode == 0, result.stderr
    (stored,) = running_scp.spooled_files()
    assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    assert dataset_bytes(stored.read_bytes()) == dataset_bytes(encoded.read_bytes())


def test_storescu_jpeg2000_proposal_with_real_jpeg2000_files(running_scp: RunningSCP, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    fixed = []
    for path in series_files(SERIES_J2K):
        ds = dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        target = tmp_path / path.name
        ds.save_as(target)
        fixed.append(target)

    result = run_storescu(running_scp.port, fixed, "-xv")

    assert result.returncode == 0, result.stderr
    assert len(running_scp.spooled_files()) == len(fixed)
    running_scp.sink.wait_for_ended(1)
    assert running_scp.sink.ended[0][1] == frozenset({series})
    assert {s.header.transfer_syntax_uid for s, _ in running_scp.sink.stored} == {JPEG2000Lossless}


def test_storescu_required_contexts_for_sr_and_pdf(running_scp: RunningSCP, tmp_path: Path) -> None:
    sr, pdf = make_basic_text_sr(), make_encapsulated_pdf()
    paths = [tmp_path / "sr.dcm", tmp_path / "pdf.dcm"]
    sr.save_as(paths[0], enforce_file_format=True)
    pdf.save_as(paths[1], enforce_file_format=True)

    result = run_storescu(running_scp.port, paths, "-R")

    assert result.returncode == 0, result.stderr
    classes = {s.header.sop_class_uid for s, _ in running_scp.sink.stored}
    assert classes == {sr.SOPClassUID, pdf.SOPClassUID}
    assert len(running_scp.spooled_files()) == 2


def test_calling_ae_allow_list(tmp_path: Path, sink: RecordingSink) -> None:
    rejected: list[tuple[str, str]] = []
    scp = StorageSCP(
        SCP_AET,
        Spool(tmp_path / "spool"),
        sink,
        allowed_calling_aets=["MODALITY1"],
        on_rejected=lambda info, reason: rejected.append((info.calling_aet, reason)),
    )
    port = scp.start("127.0.0.1", 0)
    try:
        intruder = associate(port, [(Verification, ExplicitVRLittleEndian)], aet="INTRUDER")
        assert intruder.is_rejected
        primitive = intruder.acceptor.primitive
        assert primitive is not None
        # A-ASSOCIATE-RJ: rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized.
        assert (primitive.result, primitive.result_source, primitive.diagnostic) == (0x01, 0x01, 0x03)
        assert not echo(Destination(SCP_AET, "127.0.0.1", port), "INTRUDER")
        assert echo(Destination(SCP_AET, "127.0.0.1", port), "MODALITY1")
    finally:
        scp.stop()
    sink.wait_for_ended(1)
    assert [info.calling_aet for info, _, _ in sink.ended] == ["MODALITY1"]
    assert [aet for aet, _ in rejected] == ["INTRUDER", "INTRUDER"]
    assert "Calling AE title not recognised" in rejected[0][1] or "calling" in rejected[0][1].lower()


def test_abort_mid_association_is_reported_not_released(running_scp: RunningSCP) -> None:
    ds = make_ct()
    assoc = associate(running_scp.port, [(CTImageStorage, ExplicitVRLittleEndian)])
    assert assoc.send_c_store(ds).Status == SUCCESS

    assoc.abort()

    running_scp.sink.wait_for_ended(1)
    time.sleep(0.2)
    assert running_scp.sink.ended[0][1:] == (frozenset({ds.SeriesInstanceUID}), False)
    assert len(running_scp.sink.ended) == 1
    assert len(running_scp.spooled_files()) == 1


def test_dropped_connection_is_reported_not_released(running_scp: RunningSCP, tmp_path: Path) -> None:
    require(STORESCU)
    ds = make_ct()
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    process = subprocess.Popen(
        [str(STORESCU), "-aec", SCP_AET, "--repeat", "100000", "127.0.0.1", str(running_scp.port), str(path)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        running_scp.sink.wait_for_stored(1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    running_scp.sink.wait_for_ended(1)
    time.sleep(0.2)
    assert len(running_scp.sink.ended) == 1
    assert running_scp.sink.ended[0][1:] == (frozenset({ds.SeriesInstanceUID}), False)


def test_sink_failure_answers_out_of_resources_and_keeps_the_file(
    running_scp: RunningSCP, store_assoc: Association, caplog: pytest.LogCaptureFixture
) -> None:
    ds = make_ct()
    running_scp.sink.fail_with = RuntimeError("database is down")

    with caplog.at_level(logging.ERROR, logger="dicom_node.scp"):
        response = store_assoc.send_c_store(ds)

    assert response.Status == OUT_OF_RESOURCES
    assert response.ErrorComment == "out of resources: could not index"
    assert len(running_scp.spooled_files()) == 1
    assert "could not be indexed" in caplog.text

    running_scp.sink.fail_with = None
    again = store_assoc.send_c_store(ds)

    assert again.Status == SUCCESS
    assert [s.duplicate for s, _ in running_scp.sink.stored] == [True]


def test_invalid_uid_is_refused_with_reason_and_logged(
    running_scp: RunningSCP, store_assoc: Association, caplog: pytest.LogCaptureFixture
) -> None:
    ds = make_ct()
    ds.StudyInstanceUID = "1.2.03." + "4" * 70

    with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
        response = store_assoc.send_c_store(ds)

    assert response.Status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    comment = str(response.ErrorComment)
    assert comment.startswith("Study Instance UID (0020,000D) is not a valid UID") and len(comment) <= 64
    assert "4" * 70 in caplog.text
    assert "Test^Patient" not in caplog.text and "TEST-0001" not in caplog.text
    assert running_scp.spooled_files() == []
    [(sop_uid, status, reason)] = running_scp.sink.refused
    assert (sop_uid, status) == (ds.SOPInstanceUID, DATASET_DOES_NOT_MATCH_SOP_CLASS)
    assert reason.startswith("Study Instance UID (0020,000D) is not a valid UID") and "4" * 70 in reason


def test_data_set_of_another_sop_class_than_the_request_is_refused(
    running_scp: RunningSCP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_ct()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.preamble = b"\x00" * 128
    path = tmp_path / "mismatch.dcm"
    ds.save_as(path, enforce_file_format=False)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assoc = associate(running_scp.port, [(MRImageStorage, ExplicitVRLittleEndian)])
    try:
        response = assoc.send_c_store(path)
    finally:
        assoc.release()

    assert response.Status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert str(response.ErrorComment).startswith("SOP Class UID (0008,0016)")
    assert running_scp.spooled_files() == []


def test_full_spool_answers_out_of_resources(tmp_path: Path, sink: RecordingSink) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=2**62)
    with StorageSCP(SCP_AET, spool, sink) as scp:
        port = scp.start("127.0.0.1", 0)
        assoc = associate(port, [(CTImageStorage, ExplicitVRLittleEndian)])
        response = assoc.send_c_store(make_ct())
        assoc.release()

    assert response.Status == OUT_OF_RESOURCES
    assert str(response.ErrorComment).startswith("out of resources")
    assert [p for p in (tmp_path / "spool").rglob("*") if p.is_file()] == []
    assert sink.stored == []


def test_start_stop_and_context_manager(tmp_path: Path, sink: RecordingSink) -> None:
    with StorageSCP(SCP_AET, Spool(tmp_path / "spool"), sink) as scp:
        port = scp.start("127.0.0.1", 0)
        assert scp.port == port > 0
        with pytest.raises(RuntimeError):
            scp.start("127.0.0.1", 0)
        assert echo(Destination(SCP_AET, "127.0.0.1", port), "TESTSCU")
    assert scp.port is None
    assert not echo(Destination(SCP_AET, "127.0.0.1", port), "TESTSCU", timeout=2)


def test_open_association_at_stop_is_reported_not_released(tmp_path: Path, sink: RecordingSink) -> None:
    scp = StorageSCP(SCP_AET, Spool(tmp_path / "spool"), sink)
    port = scp.start("127.0.0.1", 0)
    assoc = associate(port, [(CTImageStorage, ExplicitVRLittleEndian)])
    ds: Dataset = make_ct()
    assert assoc.send_c_store(ds).Status == SUCCESS

    scp.stop()

    sink.wait_for_ended(1)
    assert sink.ended[0][1:] == (frozenset({ds.SeriesInstanceUID}), False)


def test_failing_association_ended_does_not_break_the_server(tmp_path: Path) -> None:
    class BrokenEnd(RecordingSink):
        def association_ended(self, assoc: object, series_uids: frozenset[str], released: bool) -> None:
            raise RuntimeError("queue is down")

    with StorageSCP(SCP_AET, Spool(tmp_path / "spool"), BrokenEnd()) as scp:
        port = scp.start("127.0.0.1", 0)
        dest = Destination(SCP_AET, "127.0.0.1", port)
        assert echo(dest, "TESTSCU")
        assert echo(dest, "TESTSCU")


def test_unexpected_spool_error_is_a_processing_failure(
    running_scp: RunningSCP, store_assoc: Association, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(encoded: bytes) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(running_scp.spool, "store", broken)

    response = store_assoc.send_c_store(make_ct())

    assert response.Status == PROCESSING_FAILURE
    assert running_scp.sink.stored == []


def test_a_pinned_calling_ae_is_accepted_only_from_its_host(tmp_path: Path, sink: RecordingSink) -> None:
    rejected: list[tuple[str, str]] = []
    scp = StorageSCP(
        SCP_AET,
        Spool(tmp_path / "spool"),
        sink,
        allowed_calling_aets=["CT01@127.0.0.1", "CT02@192.0.2.10", "ANYWHERE"],
        on_rejected=lambda info, reason: rejected.append((info.calling_aet, reason)),
    )
    port = scp.start("127.0.0.1", 0)
    try:
        assert echo(Destination(SCP_AET, "127.0.0.1", port), "CT01")
        assert echo(Destination(SCP_AET, "127.0.0.1", port), "ANYWHERE")
        spoofed = associate(port, [(CTImageStorage, ExplicitVRLittleEndian)], aet="CT02")
        deadline = time.monotonic() + 5
        while not spoofed.is_aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spoofed.is_aborted, "the same title from another host is cut off"
    finally:
        scp.stop()
    assert rejected == [("CT02", "calling AE title CT02 is not allowed from 127.0.0.1")]
    spool = tmp_path / "spool"
    assert not spool.exists() or not [p for p in spool.rglob("*") if p.is_file()]


def test_error_comment_names_the_attribute_and_the_audit_gets_the_whole_reason(
    running_scp: RunningSCP, store_assoc: Association
) -> None:
    no_rows = make_ct()
    no_rows.Rows = 0
    eight_bits = make_ct()
    eight_bits.BitsAllocated, eight_bits.BitsStored, eight_bits.HighBit = 8, 8, 7

    responses = [store_assoc.send_c_store(ds) for ds in (no_rows, eight_bits)]

    assert [r.Status for r in responses] == [DATASET_DOES_NOT_MATCH_SOP_CLASS, CANNOT_UNDERSTAND]
    comments = [str(r.ErrorComment) for r in responses]
    assert comments[0] == "Rows (0028,0010) is 0; must be at least 1 (PS3.3 C.7.6.3)"
    assert comments[1] == "Pixel Data (7FE0,0010) is too long: 512 bytes, 256 expected..."
    reasons = [reason for _, _, reason in running_scp.sink.refused]
    assert [error_comment(reason) for reason in reasons] == comments
    assert "Rows 16 x Columns 16 x Samples per Pixel 1 x Number of Frames 1 x Bits Allocated 8 / 8" in reasons[1]
    assert running_scp.spooled_files() == []


@pytest.mark.parametrize(
    ("reason", "comment"),
    [
        ("SOP Class UID (0008,0016) is empty", "SOP Class UID (0008,0016) is empty"),
        (
            "Pixel Data (7FE0,0010) is truncated: 412 of 512 bytes; Rows 16 x Columns 16 (PS3.5 8.1.1)",
            "Pixel Data (7FE0,0010) is truncated: 412 of 512 bytes; Rows...",
        ),
        (
            "Study Instance UID (0020,000D) is not a valid UID: '1.2.03.444444444444444444' has a leading zero",
            "Study Instance UID (0020,000D) is not a valid UID...",
        ),
        ("Patient\\Name caf\u00e9 " + "x" * 80, "Patient?Name caf?..."),
        ("x" * 80, "x" * 61 + "..."),
    ],
)
def test_error_comment_cuts_after_a_whole_word(reason: str, comment: str) -> None:
    assert error_comment(reason) == comment
    assert len(comment) <= 64


def test_series_in_open_associations(running_scp: RunningSCP) -> None:
    first, second = make_ct(), make_ct()
    assoc_a = associate(running_scp.port, [(CTImageStorage, ExplicitVRLittleEndian)])
    assoc_b = associate(running_scp.port, [(CTImageStorage, ExplicitVRLittleEndian)])
    try:
        assert running_scp.scp.series_in_open_associations() == frozenset()
        assert assoc_a.send_c_store(first).Status == SUCCESS
        assert assoc_b.send_c_store(second).Status == SUCCESS
        assert running_scp.scp.series_in_open_associations() == {first.SeriesInstanceUID, second.SeriesInstanceUID}

        assoc_a.release()
        running_scp.sink.wait_for_ended(1)
        assert running_scp.scp.series_in_open_associations() == {second.SeriesInstanceUID}
    finally:
        for assoc in (assoc_a, assoc_b):
            if assoc.is_established:
                assoc.release()
    running_scp.sink.wait_for_ended(2)
    assert running_scp.scp.series_in_open_associations() == frozenset()


def test_an_idle_association_is_still_aborted_after_the_network_timeout(tmp_path: Path, sink: RecordingSink) -> None:
    with StorageSCP(SCP_AET, Spool(tmp_path / "spool"), sink, network_timeout=1.0) as scp:
        port = scp.start("127.0.0.1", 0)
        assoc = associate(port, [(CTImageStorage, ExplicitVRLittleEndian)])
        assert assoc.is_established
        assert assoc.send_c_store(make_ct()).Status == SUCCESS

        sink.wait_for_ended(1, timeout=10)

        assert sink.ended[0][2] is False
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted


def test_association_admission_arguments_are_checked(tmp_path: Path, sink: RecordingSink) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(ValueError, match="association_request_timeout"):
        StorageSCP(SCP_AET, spool, sink, association_request_timeout=0)
    with pytest.raises(ValueError, match="maximum_pending_per_peer"):
        StorageSCP(SCP_AET, spool, sink, maximum_pending_per_peer=0)
