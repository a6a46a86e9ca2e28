"""Report writers: ``Findings`` + source DICOM headers -> SR, SEG, PDF, encapsulated PDF.

Pure functions (architecture spec, "Rooms"); this package imports only ``models.findings``
from the project.  The objects follow DICOM PS3.3 (IODs) and PS3.16 (TID 1500 templates),
built with highdicom where it has the IOD and with pydicom for Encapsulated PDF.
"""

from reports.bundle import (
    PDF_DICOM_FILE,
    PDF_FILE,
    SEG_FILE,
    SR_FILE,
    ReportSet,
    build_not_analysable,
    build_reports,
)
from reports.charts import lung_function_chart
from reports.encapsulated_pdf import build_encapsulated_pdf
from reports.identity import ReportContext
from reports.keyimages import KeyImage, render_key_images
from reports.pdf import build_not_analysable_pdf, build_pdf
from reports.seg import build_segs
from reports.severity import ctss_for_involvement, severity_category
from reports.sr import build_not_analysable_sr, build_sr

__all__ = [
    "PDF_DICOM_FILE",
    "PDF_FILE",
    "SEG_FILE",
    "SR_FILE",
    "KeyImage",
    "ReportContext",
    "ReportSet",
    "build_encapsulated_pdf",
    "build_not_analysable",
    "build_not_analysable_pdf",
    "build_not_analysable_sr",
    "build_pdf",
    "build_reports",
    "build_segs",
    "build_sr",
    "ctss_for_involvement",
    "lung_function_chart",
    "render_key_images",
    "severity_category",
]
