"""The free-disk reserve every writer of the installation keeps (``LUNGCDS_MIN_FREE_DISK_MB``).

The SCP refuses instances below it (``0xA700``, :class:`dicom_node.spool.Spool`); the analysis
holds its job instead of writing results into the reserve, and resumes when space returns.
One check, so that every writer means the same thing by "full".
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from server.core.config import Settings

__all__ = ["DISK_FULL_ERRNOS", "disk_shortage", "free_bytes", "is_disk_full", "reserve_bytes"]

#: OSError numbers that mean "no space" rather than a fault of the data or the code.
DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def free_bytes(settings: Settings, path: Path | None = None) -> tuple[Path, int]:
    """The folder measured and its file system's free bytes, for ``path`` (default: the data dir).

    A folder that does not exist yet is measured at its nearest existing parent.
    """
    target = Path(path or settings.data_dir)
    while not target.exists() and target != target.parent:
        target = target.parent
    return target, shutil.disk_usage(target).free


def reserve_bytes(settings: Settings) -> int:
    """The reserve in bytes (``LUNGCDS_MIN_FREE_DISK_MB``)."""
    return settings.min_free_disk_mb * 2**20


def disk_shortage(settings: Settings, path: Path | None = None, *, share: float = 1.0) -> str | None:
    """Why ``path`` (default: the data dir) has less free space than ``share`` of the reserve, or None.

    ``share`` below 1 lets a writer of small records (the audit trail of reads) use part of the reserve.
    """
    target, free = free_bytes(settings, path)
    reserve = reserve_bytes(settings) * share
    if free >= reserve:
        return None
    part = "" if share == 1.0 else f"{share:.0%} of "
    return (
        f"free disk space {free / 2**20:.0f} MB on {target} is below {part}the reserve of "
        f"{settings.min_free_disk_mb} MB (LUNGCDS_MIN_FREE_DISK_MB)"
    )


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError (anywhere in its cause chain) that says the disk or quota is full."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False
