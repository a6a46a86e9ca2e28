"""Key Object Selection flagging the key-image picture and the slices it shows (issue 17, part 4).

A Key Object Selection document (PS3.3 A.35.4, TID 2010, built with highdicom's
:class:`highdicom.ko.KeyObjectSelectionDocument`) is how PACS viewers learn which images of a
study matter: most mark flagged images in the study browser or open them first.  Ours flags the
key-image Secondary Capture (:mod:`reports.key_image_sc`) and the source CT slices of its axial
key images, under the title "Of Interest" (DCM 113000, CID 7010), with the lungcds device as
observer (TID 1002/1004) and a description that says it is decision support and, when it
applies, that outputs are UNVALIDATED.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from reports.identity import OUTPUT_CHARACTER_SET, ReportContext, copy_patient_study, evidence_headers
from reports.sr_content import device_observer

__all__ = ["KOS_SERIES_DESCRIPTION", "build_key_object_selection"]

#: Series Description (0008,103E) of the Key Object Selection series.
KOS_SERIES_DESCRIPTION = "lungcds key objects (decision support)"
#: Key Object Description (DCM 113012), at most 1024 characters (TEXT of TID 2010).
_DESCRIPTION = "lungcds key images and the CT slices they show: decision support, not a diagnosis."


def build_key_object_selection(
    sc: Dataset,
    sources: Sequence[Dataset],
    identity: Dataset,
    context: ReportContext,
    content_digest: str,
    banner: str | None,
) -> hd.ko.KeyObjectSelectionDocument:
    """The Key Object Selection of one analysis, in its own series of the source study.

    Parameters
    ----------
    sc : pydicom.Dataset
        The key-image Secondary Capture (:func:`reports.key_image_sc.build_key_image_sc`).
    sources : sequence of pydicom.Dataset
        Headers of the source slices its axial key images show (may be empty).
    identity : pydicom.Dataset
        The header every report object takes patient and study data from.
    context : ReportContext
        Device identity and output numbering.
    content_digest : str
        :func:`reports.identity.analysis_digest` of the analysis: fixes the UIDs.
    banner : str or None
        The UNVALIDATED banner (:func:`reports.identity.banner_text`), added to the description.
    """
    description = _DESCRIPTION if banner is None else f"{_DESCRIPTION} {banner}"
    referenced = [sc, *evidence_headers(sources)]
    content = hd.ko.KeyObjectSelection(
        document_title=dcm_codes.DCM.OfInterest,
        referenced_objects=referenced,
        observer_device_context=device_observer(context),
        description=description,
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=referenced,
        content=content,
        series_instance_uid=context.output_uid(content_digest, "kos", "series"),
        series_number=context.kos_series_number,
        sop_instance_uid=context.output_uid(content_digest, "kos", "instance"),
        instance_number=1,
        manufacturer=context.manufacturer,
        institution_name=context.institution_name,
        series_description=KOS_SERIES_DESCRIPTION,
        manufacturer_model_name=context.manufacturer_model_name,
        software_versions=context.software_version,
        device_serial_number=context.device_serial_number,
        specific_character_set=OUTPUT_CHARACTER_SET,
    )
    copy_patient_study(identity, kos)
    kos.StationName = context.station_name
    return kos
