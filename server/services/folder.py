"""Folder input: the same validation as the SCP, for ``lungcds analyze`` and ``lungcds import``."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dicom_node.header import InstanceHeader
from dicom_node.validation import InvalidInstance, parse_instance, validate_dataset

__all__ = ["FolderScan", "scan_folder", "candidate_files"]

logger = logging.getLogger(__name__)


@dataclass
class FolderScan:
    """Valid instances grouped by series, and every refused file with its reason."""

    series: dict[str, list[tuple[Path, InstanceHeader]]] = field(default_factory=lambda: defaultdict(list))
    refused: list[tuple[Path, str]] = field(default_factory=list)


def candidate_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file under ``folder``, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def scan_folder(folder: Path) -> FolderScan:
    """Parse and validate every file under ``folder`` (recursively), as the SCP would."""
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    scan = FolderScan()
    for path in candidate_files(folder):
        try:
            dataset, header = parse_instance(path)
            validate_dataset(dataset)
        except InvalidInstance as exc:
            scan.refused.append((path, exc.reason))
            continue
        scan.series[str(header.series_instance_uid)].append((path, header))
    return scan
