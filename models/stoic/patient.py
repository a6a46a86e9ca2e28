"""Age and sex for the STOIC members from a DICOM header, never failing on a malformed one.

STOIC2021 gave the members Patient's Age and Patient's Sex from the image header (thesis 4.2:
"age in 10-year bins, and sex"); each member maps them onto its own scale and decides what an
unknown value becomes (:mod:`models.stoic.member`).  Here the header is read once:

* age from Patient's Age (0010,1010), an Age String ``nnnD|W|M|Y`` (DICOM PS3.5 table 6.2-1,
  e.g. ``058Y``, ``006M``), or else from Patient's Birth Date (0010,0030) and the first of
  Study, Series, Acquisition or Content Date (:func:`models.volume.patient_context`);
* sex from Patient's Sex (0010,0040): ``M`` or ``F``, anything else (``O``, empty) unknown.

A value that is missing, malformed or implausible becomes None; reading a header never raises,
because a missing age must cost a member its input, not the whole analysis its result.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydicom.dataset import Dataset

from models.volume import patient_context

__all__ = ["patient_inputs"]

logger = logging.getLogger(__name__)

_AGE_KEYWORDS = ("PatientAge", "PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_SEX_KEYWORDS = ("PatientSex",)
#: What pydicom may raise while converting a malformed stored value.
_CONVERSION_ERRORS = (ValueError, TypeError, AttributeError, KeyError, OverflowError, UnicodeError)


def _subset(dataset: Dataset, keywords: tuple[str, ...]) -> Dataset:
    """A dataset with only the readable elements among ``keywords`` (each converted on its own)."""
    subset = Dataset()
    for keyword in keywords:
        if keyword not in dataset:
            continue
        try:
            element = dataset.data_element(keyword)
            if element is not None:
                subset.add(element)
        except _CONVERSION_ERRORS as error:
            logger.warning("ignoring unreadable %s (%s: %s)", keyword, type(error).__name__, error)
    return subset


def patient_inputs(dataset: Dataset) -> tuple[float | None, Literal["M", "F"] | None]:
    """``(age_years, sex)`` for :class:`~models.stoic.member.MemberInputs` from one instance's header.

    Age and sex are read independently, so a malformed age does not cost the sex.

    Parameters
    ----------
    dataset : pydicom.dataset.Dataset
        Any instance of the series (pixel data not needed).

    Returns
    -------
    tuple
        Age in (fractional) years at the study, or None; ``"M"``, ``"F"`` or None.
    """
    age: float | None = None
    sex: Literal["M", "F"] | None = None
    try:
        age = patient_context(_subset(dataset, _AGE_KEYWORDS)).age_years
    except _CONVERSION_ERRORS as error:
        logger.warning("patient age not readable from the header (%s: %s)", type(error).__name__, error)
    try:
        sex = patient_context(_subset(dataset, _SEX_KEYWORDS)).sex
    except _CONVERSION_ERRORS as error:
        logger.warning("patient sex not readable from the header (%s: %s)", type(error).__name__, error)
    return age, sex
