"""SCU: destinations, C-ECHO, C-STORE to DCMTK storescp and to our SCP, association failures, and the
Explicit VR Little Endian fallback for peers that do not take a compressed object's transfer syntax."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SegmentationStorage
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

from dicom_node.scp import StorageSCP
from dicom_node.scu import (
    MAX_PRESENTATION_CONTEXTS,
    AssociationFailed,
    ContextsRefused,
    Destination,
    echo,
    parse_destination,
    send_datasets,
    send_files,
)
from dicom_node.spool import Spool
from dicom_node.statuses import NOT_SENT, OUT_OF_RESOURCES, SUCCESS
from reports.identity import ReportContext
from reports.seg import build_segs
from tests.dicom_node.helpers import (
    SCP_AET,
    SERIES_J2K,
    SERIES_S2,
    RecordingSink,
    RunningSCP,
    free_port,
    make_basic_text_sr,
    make_ct,
    series_files,
)
from tests.reports.helpers import ct_headers, run_node_script, synthetic_findings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PACS@pacs.example.org:104", Destination("PACS", "pacs.example.org", 104)),
        (" ORTHANC@127.0.0.1:4242 ", Destination("ORTHANC", "127.0.0.1", 4242)),
        ("AE@[::1]:11112", Destination("AE", "::1", 11112)),
        ("MY@AE@host:1", Destination("MY@AE", "host", 1)),
    ],
)
def test_parse_destination(text: str, expected: Destination) -> None:
    parsed = parse_destination(text)
    assert parsed == expected
    assert parse_destination(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pacs.example.org:104", "no '@'"),
        ("PACS@pacs.example.org", "no ':port'"),
        ("PACS@host:abc", "not a number"),
        ("PACS@host:0", "outside 1..65535"),
        ("PACS@host:70000", "outside 1..65535"),
        ("PACS@:104", "empty host"),
        ("@host:104", "invalid AE title"),
        ("SEVENTEEN_CHARS_X@host:104", "longer than 16"),
        ("BAD\\AE@host:104", "backslash"),
        ("AE@::1:104", "IPv6"),
    ],
)
def test_parse_destination_rejects_malformed_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_destination(text)


def test_echo(running_scp: RunningSCP) -> None:
    assert echo(Destination(SCP_AET, "127.0.0.1", running_scp.port), "TESTSCU")
    assert not echo(Destination(SCP_AET, "127.0.0.1", free_port()), "TESTSCU", timeout=2)


def test_send_files_round_trip_to_dcmtk_storescp(dcmtk_storescp: tuple[int, Path], tmp_path: Path) -> None:
    """storescp accepts only uncompressed transfer syntaxes by default: a JPEG 2000 CT arrives decoded."""
    port, out = dcmtk_storescp
    files = series_files(SERIES_S2)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not dicom")
    compressed = dcmread(files[1])
    compressed.compress(JPEG2000Lossless, generate_instance_uid=False)
    j2k = tmp_path / "j2k.dcm"
    compressed.save_as(j2k, enforce_file_format=True)
    broken = series_files(SERIES_J2K)[0]  # JPEG 2000 too, but its data set has an empty SOP Class UID

    results = send_files(Destination("STORESCP", "127.0.0.1", port), [*files[2:], garbage, j2k, broken], "TESTSCU")

    assert [r.path for r in results] == [*files[2:], garbage, j2k, broken]
    assert all(r.ok and r.status == SUCCESS and r.error == "" for r in results[: len(files) - 2])
    own = [str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files[2:]]
    assert [r.transfer_syntax_uid for r in results[: len(files) - 2]] == own, "sent as they are"
    bad_file, decoded, unsendable = results[-3:]
    assert bad_file.status == NOT_SENT and not bad_file.ok and bad_file.error and bad_file.transfer_syntax_uid is None
    assert decoded.ok and decoded.transfer_syntax_uid == ExplicitVRLittleEndian
    assert unsendable.status == NOT_SENT and not unsendable.ok
    received = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in out.iterdir()}
    sent_uids = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files[1:]}
    assert set(received) == sent_uids, "every readable CT, the JPEG 2000 one under its own SOP Instance UID"
    original = dcmread(files[1])
    arrived = dcmread(received[original.SOPInstanceUID])
    assert arrived.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert arrived.PixelData == original.PixelData and arrived.PatientID == original.PatientID


@pytest.fixture
def seg_j2k(tmp_path: Path) -> Path:
    """A lungcds SEG (the lobes layer of synthetic findings) in JPEG 2000 Lossless, as a Part 10 file."""
    headers = ct_headers()
    segs = build_segs(synthetic_findings(headers), headers, ReportContext(software_version="0.1.0"))
    path = tmp_path / "seg_lobes.dcm"
    segs["lobes"].save_as(path, enforce_file_format=True)
    return path


class _Peer:
    """A pynetdicom storage SCP that takes SEGs in the given transfer syntaxes and keeps what it got."""

    def __init__(self, syntaxes: list[str]) -> None:
        self.received: list[tuple[str, Dataset]] = []
        ae = AE("SEGPEER")
        ae.add_supported_context(SegmentationStorage, syntaxes)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.destination = Destination("SEGPEER", "127.0.0.1", int(self.server.server_address[1]))

    def _store(self, event: Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append((str(event.context.transfer_syntax), ds))
        return SUCCESS


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[_Peer]:
    running = _Peer(request.param)
    yield running
    running.server.shutdown()


@pytest.mark.parametrize("peer", [[ExplicitVRLittleEndian]], indirect=True)
def test_a_peer_without_jpeg_2000_gets_the_seg_decoded_under_the_same_uid(peer: _Peer, seg_j2k: Path) -> None:
    original = dcmread(seg_j2k)
    assert original.file_meta.TransferSyntaxUID == JPEG2000Lossless

    (from_file,) = send_files(peer.destination, [seg_j2k], "TESTSCU")
    (from_memory,) = send_datasets(peer.destination, [original], "TESTSCU")

    assert from_file.ok and from_memory.ok
    assert from_file.transfer_syntax_uid == from_memory.transfer_syntax_uid == ExplicitVRLittleEndian
    assert original.file_meta.TransferSyntaxUID == JPEG2000Lossless, "the caller's data set is left as it was"
    frames, rows, columns = int(original.NumberOfFrames), int(original.Rows), int(original.Columns)
    packed = (frames * rows * columns + 7) // 8
    for syntax, ds in peer.received:
        assert syntax == ExplicitVRLittleEndian and ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPInstanceUID == original.SOPInstanceUID
        assert (ds.BitsAllocated, ds.BitsStored) == (1, 1)
        assert len(ds.PixelData) == packed + packed % 2, "Bits Allocated 1: eight pixels a byte, even length"
        assert np.array_equal(ds.pixel_array, original.pixel_array)
    assert len(peer.received) == 2


@pytest.mark.parametrize("peer", [[JPEG2000Lossless, ExplicitVRLittleEndian]], indirect=True)
def test_a_peer_taking_jpeg_2000_gets_the_seg_as_it_is(peer: _Peer, seg_j2k: Path) -> None:
    (result,) = send_files(peer.destination, [seg_j2k], "TESTSCU")

    assert result.ok and result.transfer_syntax_uid == JPEG2000Lossless
    ((syntax, ds),) = peer.received
    assert syntax == JPEG2000Lossless
    assert ds.PixelData == dcmread(seg_j2k).PixelData


@pytest.mark.parametrize("peer", [[JPEG2000Lossless, ExplicitVRLittleEndian]], indirect=True)
def test_an_uncompressed_destination_gets_the_seg_decoded_although_it_takes_jpeg_2000(
    peer: _Peer, seg_j2k: Path
) -> None:
    """For archives whose viewers cannot decode JPEG 2000 (OHIF's SEG loader): same UID, same masks."""
    original = dcmread(seg_j2k)

    (result,) = send_files(peer.destination, [seg_j2k], "TESTSCU", uncompressed=True)

    assert result.ok and result.transfer_syntax_uid == ExplicitVRLittleEndian
    ((syntax, ds),) = peer.received
    assert syntax == ExplicitVRLittleEndian and ds.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(ds.pixel_array, original.pixel_array)


def _ohif_labelmap_counts(seg_path: Path, headers: list[Dataset], tmp_path: Path) -> dict[str, Any]:
    """Voxels per segment number of the label map OHIF's Cornerstone SEG adapter (dcmjs) makes of the SEG."""
    slices = [
        {
            "sopInstanceUID": str(ds.SOPInstanceUID),
            "seriesInstanceUID": str(ds.SeriesInstanceUID),
            "frameOfReferenceUID": str(ds.FrameOfReferenceUID),
            "imagePositionPatient": [float(v) for v in ds.ImagePositionPatient],
            "rowCosines": [float(v) for v in ds.ImageOrientationPatient[:3]],
            "columnCosines": [float(v) for v in ds.ImageOrientationPatient[3:]],
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
        }
        for ds in headers
    ]
    slices_path = tmp_path / "slices.json"
    slices_path.write_text(json.dumps(slices))
    return run_node_script("seg_labelmap.js", seg_path, slices_path)


@pytest.mark.parametrize("peer", [[JPEG2000Lossless, ExplicitVRLittleEndian]], indirect=True)
def test_ohifs_seg_loader_paints_the_lungs_only_from_the_uncompressed_seg(peer: _Peer, tmp_path: Path) -> None:
    """Why ``uncompressed`` exists: dcmjs' Cornerstone SEG adapter, which OHIF loads SEGs with, reads
    Pixel Data as bit-packed frames; given the JPEG 2000 SEG it paints garbage or nothing, given what
    our SCU sends an ``uncompressed`` destination it paints every lung voxel with its own segment.
    (dcmjs 0.38.3 here: the JPEG 2000 SEG raises "RangeError: Invalid typed array length".)"""
    headers = ct_headers()
    findings = synthetic_findings(headers)
    lungs = build_segs(findings, headers, ReportContext(software_version="0.1.0"))["lungs"]
    compressed = tmp_path / "seg.dcm"
    lungs.save_as(compressed, enforce_file_format=True)
    (result,) = send_files(peer.destination, [compressed], "TESTSCU", uncompressed=True)
    assert result.ok
    ((_, arrived),) = peer.received
    decoded = tmp_path / "seg_decoded.dcm"
    arrived.save_as(decoded, enforce_file_format=True)
    expected = {
        str(segment.SegmentNumber): int(findings.masks[str(segment.TrackingID)].sum())
        for segment in lungs.SegmentSequence
    }
    assert len(expected) == 2 and all(expected.values())

    painted = _ohif_labelmap_counts(decoded, headers, tmp_path)
    from_jpeg_2000 = _ohif_labelmap_counts(compressed, headers, tmp_path)

    assert painted.get("error") is None and painted["counts"] == expected, painted
    assert from_jpeg_2000.get("counts") != expected, from_jpeg_2000


@pytest.mark.parametrize("peer", [[JPEG2000Lossless]], indirect=True)
def test_an_uncompressed_destination_that_takes_only_jpeg_2000_refuses_clearly(peer: _Peer, seg_j2k: Path) -> None:
    with pytest.raises(ContextsRefused, match="refused every proposed presentation context"):
        send_files(peer.destination, [seg_j2k], "TESTSCU", uncompressed=True)
    assert peer.received == []


def test_closed_port_raises_association_failed() -> None:
    ds = make_ct()
    with pytest.raises(AssociationFailed) as caught:
        send_datasets(Destination("NOBODY", "127.0.0.1", free_port()), [ds], "TESTSCU", timeout=2)
    assert "could not connect" in caught.value.reason
    assert caught.value.results == []


def test_rejected_association_raises_association_failed(tmp_path: Path, sink: RecordingSink) -> None:
    with StorageSCP(SCP_AET, Spool(tmp_path / "spool"), sink, allowed_calling_aets=["FRIEND"]) as scp:
        port = scp.start("127.0.0.1", 0)
        with pytest.raises(AssociationFailed) as caught:
            send_datasets(Destination(SCP_AET, "127.0.0.1", port), [make_ct()], "STRANGER")
    assert "rejected" in caught.value.reason
    assert "Calling AE Title Not Recognised" in caught.value.reason or "calling" in caught.value.reason.lower()


def test_a_peer_refusing_the_sop_class_raises_contexts_refused() -> None:
    ae = AE("CTONLY")
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0)])
    try:
        sr = make_basic_text_sr()
        with pytest.raises(ContextsRefused) as caught:
            send_datasets(Destination("CTONLY", "127.0.0.1", server.server_address[1]), [sr], "TESTSCU")
    finally:
        server.shutdown()
    assert caught.value.sop_classes == [str(sr.SOPClassUID)]
    assert "refused every proposed presentation context" in caught.value.reason


def test_send_datasets_to_our_scp(running_scp: RunningSCP) -> None:
    sr = make_basic_text_sr()
    del sr.file_meta
    ct = make_ct()

    results = send_datasets(Destination(SCP_AET, "127.0.0.1", running_scp.port), [sr, ct], "TESTSCU")

    assert [r.ok for r in results] == [True, True]
    assert [r.sop_instance_uid for r in results] == [sr.SOPInstanceUID, ct.SOPInstanceUID]
    assert not hasattr(sr, "file_meta") or "TransferSyntaxUID" not in sr.file_meta
    stored = {s.header.sop_instance_uid: s for s, _ in running_scp.sink.stored}
    assert stored[sr.SOPInstanceUID].header.transfer_syntax_uid == ExplicitVRLittleEndian


def test_failure_status_is_reported_per_object(running_scp: RunningSCP) -> None:
    running_scp.sink.fail_with = RuntimeError("database is down")
    dest = Destination(SCP_AET, "127.0.0.1", running_scp.port)

    (result,) = send_datasets(dest, [make_ct()], "TESTSCU")

    assert result.status == OUT_OF_RESOURCES and not result.ok
    assert "out of resources: could not index" in result.error


def test_empty_uid_file_is_not_sent_but_others_are(running_scp: RunningSCP) -> None:
    j2k = series_files(SERIES_J2K)[0]
    ct = running_scp.spool.root.parent / "ct.dcm"
    make_ct().save_as(ct, enforce_file_format=True)

    results = send_files(Destination(SCP_AET, "127.0.0.1", running_scp.port), [j2k, ct], "TESTSCU")

    assert results[0].status == NOT_SENT and not results[0].ok
    assert results[1].ok


def test_too_many_presentation_contexts_is_a_value_error() -> None:
    datasets = []
    for k in range(MAX_PRESENTATION_CONTEXTS + 1):
        ds = make_ct()
        ds.SOPClassUID = f"1.2.826.0.1.3680043.8.498.{k + 1}"
        datasets.append(ds)
    with pytest.raises(ValueError, match="presentation contexts"):
        send_datasets(Destination("ANY", "127.0.0.1", free_port()), datasets, "TESTSCU")


def test_association_aborted_mid_send_keeps_earlier_results() -> None:
    calls = {"n": 0}

    def abort_on_second(event: Event) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            event.assoc.abort()
        return SUCCESS

    ae = AE("ABORTER")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, abort_on_second)])
    assert server is not None
    try:
        port = int(server.server_address[1])
        with pytest.raises(AssociationFailed) as caught:
            send_datasets(Destination("ABORTER", "127.0.0.1", port), [make_ct() for _ in range(3)], "TESTSCU")
    finally:
        ae.shutdown()

    assert caught.value.results[0].ok
    assert len(caught.value.results) == 2 and not caught.value.results[1].ok
