"""The streaming multipart/related reader of STOW-RS: parts to files whatever the chunking."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from server.services.dicomweb_multipart import (
    ABANDONED_AFTER_S,
    MultipartError,
    PartWriter,
    UnsupportedMediaType,
    related_boundary,
    remove_abandoned_parts,
)

BOUNDARY = "b0undary-42"


def body(*parts: tuple[str | None, bytes], preamble: bytes = b"", leading_crlf: bool = False) -> bytes:
    """A multipart body as clients write it; ``leading_crlf`` as dicomweb-client does."""
    out = preamble + (b"\r\n" if leading_crlf else b"")
    for index, (content_type, content) in enumerate(parts):
        out += (b"\r\n" if index or leading_crlf or preamble else b"") + f"--{BOUNDARY}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + content
    return out + f"\r\n--{BOUNDARY}--\r\n".encode()


def read_all(data: bytes, folder: Path, chunk: int) -> list[tuple[int, str | None, bytes]]:
    writer = PartWriter(BOUNDARY, folder)
    parts = []
    for start in range(0, len(data), chunk):
        parts += writer.feed(data[start : start + chunk])
    writer.close()
    return [(p.number, p.content_type, p.path.read_bytes()) for p in parts]


# Content that holds most of a delimiter, CRLFs and dashes, to catch a reader that cuts too early.
TRICKY = b"\r\n--b0undary-4\r\n--b0undary-4X\r\n\r\n--" + bytes(range(256)) * 40


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096, 10**7])
def test_parts_arrive_whole_whatever_the_chunk_size(tmp_path: Path, chunk: int) -> None:
    data = body(("application/dicom", TRICKY), ("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", b"two"))
    assert read_all(data, tmp_path / str(chunk), chunk) == [
        (1, "application/dicom", TRICKY),
        (2, "application/dicom", b"two"),
    ]


def test_preamble_leading_line_break_padding_and_a_part_without_headers(tmp_path: Path) -> None:
    data = body((None, b"bare"), ("Text/Plain", b""), preamble=b"ignored preamble", leading_crlf=True)
    data = data.replace(f"--{BOUNDARY}\r\n".encode(), f"--{BOUNDARY}  \t\r\n".encode(), 1)
    assert read_all(data + b"epilogue, ignored", tmp_path, 5) == [(1, None, b"bare"), (2, "text/plain", b"")]


def test_a_truncated_body_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    data = body(("application/dicom", b"x" * 1000))
    writer = PartWriter(BOUNDARY, tmp_path)
    assert writer.feed(data[:500]) == []
    with pytest.raises(MultipartError, match="before its closing boundary"):
        writer.close()
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_garbage_after_a_delimiter_and_endless_headers_are_errors(tmp_path: Path) -> None:
    with pytest.raises(MultipartError, match="followed by text"):
        PartWriter(BOUNDARY, tmp_path).feed(f"--{BOUNDARY}garbage\r\n\r\nx".encode())
    with pytest.raises(MultipartError, match="header block longer"):
        PartWriter(BOUNDARY, tmp_path).feed(f"--{BOUNDARY}\r\nX-A: ".encode() + b"a" * 20_000)


def test_parts_completed_before_an_error_in_the_same_chunk_are_removed(tmp_path: Path) -> None:
    data = f"--{BOUNDARY}\r\n\r\none\r\n--{BOUNDARY}nonsense\r\n".encode()
    with pytest.raises(MultipartError):
        PartWriter(BOUNDARY, tmp_path).feed(data)
    assert list(tmp_path.iterdir()) == []


def test_the_content_type_of_a_stow_rs_request() -> None:
    assert related_boundary(f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"') == BOUNDARY
    assert related_boundary(f"Multipart/Related; boundary={BOUNDARY}") == BOUNDARY  # no type: the parts say
    orthanc = "f4f5e5ef-c355-45be-8a16-6276fb332a6a-f4f5e5ef-c355-45be-8a16-6276fb332a6a"  # 73 > RFC 2046's 70
    assert related_boundary(f'multipart/related; type="application/dicom"; boundary={orthanc}') == orthanc
    for refused in (None, "application/json", "multipart/form-data; boundary=x", "application/dicom"):
        with pytest.raises(UnsupportedMediaType):
            related_boundary(refused)
    with pytest.raises(UnsupportedMediaType, match="application/dicom\\+json"):
        related_boundary('multipart/related; type="application/dicom+json"; boundary=x')
    for bad in ("multipart/related; type=application/dicom", f"multipart/related; boundary={'x' * 257}"):
        with pytest.raises(MultipartError, match="boundary"):
            related_boundary(bad)


def test_part_files_left_by_an_ended_process_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    writer = PartWriter(BOUNDARY, tmp_path)
    writer.feed(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nhalf a part".encode())
    (in_progress,) = tmp_path.glob(".stow-*.part")
    abandoned = tmp_path / ".stow-crashed.part"
    abandoned.write_bytes(b"left behind")
    hour_ago = time.time() - 2 * ABANDONED_AFTER_S
    os.utime(abandoned, (hour_ago, hour_ago))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not a part")
    os.utime(unrelated, (hour_ago, hour_ago))

    assert remove_abandoned_parts(tmp_path) == 1

    assert not abandoned.exists() and in_progress.exists() and unrelated.exists()
    writer.discard()
