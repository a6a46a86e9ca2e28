"""Which rejected series get a not-analysed notice in PACS (issue 17): chest CT image series only.

A chest CT that failed the eligibility rules (too thick, too short, slices missing, a child)
leaves no trace in PACS unless it is said: the reader cannot tell "the software found nothing"
from "the software did not run".  The notice (a short SR and PDF: not analysed, and why) is sent
for those series only, never for a series of another body part, a scout, or a non-CT object,
where it would be noise on every study, and never for a series whose instances disagree on whose
images they are (no report may name a patient then).

What counts as chest: Body Part Examined (0018,0015) when present (PS3.16 CID 4031 values and the
spellings scanners use), else the words of the Study and Series Descriptions; a series that says
neither is not called chest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dicom_node.header import InstanceHeader

__all__ = ["CHEST_BODY_PARTS", "is_chest_ct_image_series"]

#: Body Part Examined values that include the lungs.
CHEST_BODY_PARTS: frozenset[str] = frozenset(
    {"CHEST", "THORAX", "LUNG", "LUNGS", "CHESTABDOMEN", "CHEST_ABDOMEN", "CHESTABDPELVIS", "CHEST_TO_PELVIS", "TORSO"}
)
#: Words of a description that name the chest (few and specific: a wrong match sends a notice
#: into a study it does not belong to).
_CHEST_WORDS = re.compile(r"\b(chest|thorax|thorac\w*|thx|lungs?|pulmonary)\b", re.IGNORECASE)


def _body_part(header: InstanceHeader) -> str | None:
    value = (header.body_part_examined or "").strip().upper().replace(" ", "")
    return value or None


def _described_as_chest(header: InstanceHeader) -> bool:
    return any(_CHEST_WORDS.search(text or "") for text in (header.study_description, header.series_description))


def is_chest_ct_image_series(headers: Sequence[InstanceHeader]) -> bool:
    """True when every instance is a CT image, none a localizer, and the series is of the chest."""
    if not headers or any((h.modality or "").upper() != "CT" for h in headers):
        return False
    if any("LOCALIZER" in (value.upper() for value in h.image_type) for h in headers):
        return False
    parts = {part for part in (_body_part(h) for h in headers) if part is not None}
    if parts:
        return parts <= CHEST_BODY_PARTS
    return all(_described_as_chest(h) for h in headers)
