"""DICOM networking for lungcds: Storage SCP, SCU, spool and series completeness.

A library: it imports nothing else of the project, no database, queue or
settings. The server wires it up:

* :class:`StorageSCP` answers C-ECHO and C-STORE (PS3.4 Annexes A and B),
  writes each instance durably with :class:`Spool` and tells an
  :class:`InstanceSink`; with a :class:`StorageCommitment` it is also the
  Storage Commitment Push Model SCP (PS3.4 Annex J);
* :func:`send_files`, :func:`send_datasets` and :func:`echo` talk to PACS
  destinations (PS3.4 Annex B, PS3.7 9.1);
* :func:`assess_series` decides from headers whether a series is complete;
* :func:`receive_instance` is the one path of a received instance (C-STORE, and
  the server's STOW-RS route): spool, then sink, every failure a status;
* :func:`parse_instance` and :func:`validate_dataset` are the acceptance rules
  shared by network reception and folder import.
"""

from dicom_node.commitment_journal import CommitmentJournal
from dicom_node.commitment_scp import StorageCommitment
from dicom_node.completeness import SeriesGeometry, assess_series
from dicom_node.header import InstanceHeader, summarize
from dicom_node.reception import Receipt, receive_instance
from dicom_node.scp import AssociationInfo, InstanceSink, StorageSCP
from dicom_node.scu import (
    AssociationFailed,
    ContextsRefused,
    Destination,
    SendResult,
    echo,
    parse_destination,
    send_datasets,
    send_files,
)
from dicom_node.spool import OutOfResources, Spool, StoredInstance
from dicom_node.validation import InvalidInstance, parse_instance, validate_dataset

__all__ = [
    "AssociationFailed",
    "ContextsRefused",
    "AssociationInfo",
    "CommitmentJournal",
    "Destination",
    "InstanceHeader",
    "InstanceSink",
    "InvalidInstance",
    "OutOfResources",
    "Receipt",
    "SendResult",
    "SeriesGeometry",
    "Spool",
    "StorageCommitment",
    "StorageSCP",
    "StoredInstance",
    "assess_series",
    "echo",
    "parse_destination",
    "parse_instance",
    "receive_instance",
    "send_datasets",
    "send_files",
    "summarize",
    "validate_dataset",
]
